"""Shared pieces of the benchmark scripts: timing, FLOP counts, markdown tables."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import jax

from rospr_jax.model import T5Config


def median_time(fn: Callable[[], object], *, warmup: int = 2, reps: int = 5) -> float:
  """Median wall time of `fn()` in seconds; `fn` must block until its work is done."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def encoder_flops(config: T5Config, batch: int, input_length: int) -> float:
  """Matmul and attention FLOPs of the encoder stack alone over [batch, input_length] tokens."""
  d, inner, mlp, s = config.emb_dim, config.joined_kv, config.mlp_dim, input_length
  return config.num_encoder_layers * (batch * s * 2 * (4 * d * inner + 3 * d * mlp) + 4 * batch * s * s * inner)


def forward_flops(config: T5Config, batch: int, input_length: int, target_length: int,
                  cross_length: int | None = None, encoder_batch: int | None = None) -> float:
  """Matmul and attention FLOPs of one forward pass (the peer script's count).

  `encoder_batch` lets the encode-once scorer count its encoder once per example while the decoder
  runs once per (example, choice); `cross_length` defaults to `input_length`.
  """
  d, inner, mlp, vocab = config.emb_dim, config.joined_kv, config.mlp_dim, config.vocab_size
  s, t = input_length, target_length
  eb = batch if encoder_batch is None else encoder_batch
  cross = s if cross_length is None else cross_length
  encoder = encoder_flops(config, eb, s)
  decoder = config.num_decoder_layers * (batch * t * 2 * (4 * d * inner + 3 * d * mlp)
                                         + eb * cross * 2 * 2 * d * inner  # cross-attention K and V
                                         + batch * t * 2 * 2 * d * inner   # cross-attention Q and out
                                         + 4 * batch * t * t * inner + 4 * batch * t * cross * inner)
  return encoder + decoder + batch * t * 2 * d * vocab


def count_primitive(jaxpr, name: str) -> int:
  """Equations of primitive `name` in a (closed) jaxpr, counting those of the jaxprs nested in it."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == name
    for value in eqn.params.values():
      for inner in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(inner, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
          count += count_primitive(inner, name)
  return count


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)

"""Rank-classification throughput of the encode-once scorer (and of the naive every-pair scorer).

Usage: python bench/scoring.py [--size xl] [--examples 64] [--choices 3 2] [--inputs 256] [--targets 8]
                               [--attention cudnn einsum] [--breakdown] [--json FILE]
On an accelerator use --size xl --dtype bfloat16 (the T0_3B shape); on this CPU the default is small.
Random weights: throughput does not depend on the checkpoint. Several attention implementations run
in one process over the same weights. `--breakdown` also times the encoder alone and a bare matrix
product at the encoder's feed-forward shape (the ceiling the model's own matmuls can reach).
Prints a markdown table; JSON rows are rewritten after every measurement (partial runs keep them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import numpy as np

from common import encoder_flops, forward_flops, markdown_table, median_time
from rospr_jax.model import T5, get_config, init_params, model_for
from rospr_jax.eval.scoring import score_choices, score_choices_naive

HEADERS = ["scorer", "attention", "examples x choices", "first call s", "median s", "examples/s", "TFLOP/s done",
           "TFLOP/s peer-equivalent"]


def matmul_ceiling(m: int, k: int, n: int, dtype, reps: int) -> float:
  """TFLOP/s of a bare [m, k] x [k, n] product in `dtype` through XLA (the matmul ceiling)."""
  keys = jax.random.split(jax.random.PRNGKey(7), 2)
  a = jax.random.normal(keys[0], (m, k), dtype)
  b = jax.random.normal(keys[1], (k, n), dtype)
  product = jax.jit(jnp.dot)
  seconds = median_time(lambda: product(a, b).block_until_ready(), reps=reps)
  return 2 * m * k * n / seconds / 1e12


def report_agreement(first_scores: dict, choices: int, attention: str, scores: np.ndarray) -> None:
  """Prints how far `scores` [B, C] lie from the first implementation's on the same inputs."""
  if choices not in first_scores:
    first_scores[choices] = (attention, scores)
    return
  reference_name, reference = first_scores[choices]
  relative = np.abs(scores - reference).max() / np.abs(reference).max()
  same = np.mean(scores.argmax(-1) == reference.argmax(-1))
  print(f"{attention} vs {reference_name} ({choices} choices): max |score diff| / max |score| = "
        f"{relative:.2e}, same prediction for {same:.1%} of examples", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--examples", type=int, default=64)
  parser.add_argument("--choices", type=int, nargs="+", default=[3, 2])
  parser.add_argument("--inputs", type=int, default=256)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--attention", nargs="+", default=["einsum"], choices=["einsum", "xla", "cudnn"],
                      help="attention implementations to time (the first one also runs --choices beyond "
                           "the first)")
  parser.add_argument("--fused_padding", default="bias", choices=["bias", "lengths"],
                      help="T5Config.fused_padding: how fused attention takes the key padding")
  parser.add_argument("--skip-naive", action="store_true")
  parser.add_argument("--breakdown", action="store_true")
  parser.add_argument("--json", help="Also write the results to this JSON file.")
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  base = get_config(args.size, dtype=dtype, param_dtype=dtype, fused_padding=args.fused_padding)
  start = time.perf_counter()
  params = jax.block_until_ready(init_params(base, jax.random.PRNGKey(0)))
  init_s = time.perf_counter() - start
  device = jax.devices()[0]
  print(f"Rank classification, size={args.size} ({base.num_parameters() / 1e9:.2f}B params), "
        f"dtype={args.dtype}, inputs={args.inputs}, targets={args.targets}, fused padding as "
        f"{args.fused_padding}, device={device.device_kind}, "
        f"jax {jax.__version__}; random weights in {init_s:.1f} s", flush=True)
  rng = np.random.default_rng(0)
  rows, records = [], []
  result = {"device": device.device_kind, "jax": jax.__version__, "size": args.size, "dtype": args.dtype,
            "results": records}

  def record(row: list, **fields) -> None:
    rows.append(row)
    records.append(fields)
    print(row, flush=True)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f, indent=1)

  b = args.examples
  targets_by_choices = {c: jnp.asarray(rng.integers(3, min(32000, base.vocab_size), (b, c, args.targets)),
                                       jnp.int32) for c in args.choices}
  first_scores = {}  # choices -> (attention, [B, C] scores) of the first implementation, to compare
  inputs = jnp.asarray(rng.integers(3, min(32000, base.vocab_size), (b, args.inputs)), jnp.int32)
  for index, attention in enumerate(args.attention):
    config = base.replace(attention_impl=attention)
    model = model_for(config)
    for c in args.choices if index == 0 else args.choices[:1]:
      targets = targets_by_choices[c]
      scorers = [("encode-once", score_choices)]
      if not args.skip_naive and index == 0:
        scorers.append(("every pair", score_choices_naive))
      for name, scorer in scorers:
        run = lambda: scorer(params, inputs, targets, model=model).block_until_ready()
        start = time.perf_counter()
        try:
          run()
        except Exception as error:  # one implementation failing on a card must not cost the others
          print(f"{name} with {attention} attention, {b} x {c}: failed: {type(error).__name__}: "
                f"{str(error)[:800]}", flush=True)
          continue
        compile_s = time.perf_counter() - start
        seconds = median_time(run, reps=args.reps)
        if name == "encode-once":
          report_agreement(first_scores, c, attention, np.asarray(run(), np.float64))
        encoder_batch = b if name == "encode-once" else b * c
        flops = forward_flops(config, b * c, args.inputs, args.targets, encoder_batch=encoder_batch)
        peer_flops = forward_flops(config, b * c, args.inputs, args.targets)  # the work the peer does
        record([name, attention, f"{b} x {c}", compile_s, seconds, b / seconds, flops / seconds / 1e12,
                peer_flops / seconds / 1e12],
               scorer=name, attention=attention, examples=b, choices=c, inputs=args.inputs,
               targets=args.targets, compile_s=compile_s, median_s=seconds, examples_per_s=b / seconds,
               tflops=flops / seconds / 1e12, peer_equivalent_tflops=peer_flops / seconds / 1e12)
    if args.breakdown:
      encode = jax.jit(lambda p, x: T5(config).apply({"params": p}, x, method=T5.encode))
      seconds = median_time(lambda: encode(params, inputs).block_until_ready(), reps=args.reps)
      flops = encoder_flops(config, b, args.inputs)
      record(["encoder alone", attention, f"{b} x -", "", seconds, b / seconds, flops / seconds / 1e12, ""],
             scorer="encoder alone", attention=attention, examples=b, inputs=args.inputs,
             median_s=seconds, tflops=flops / seconds / 1e12)
  if args.breakdown:
    for m, k, n in [(b * args.inputs, base.emb_dim, base.mlp_dim), (b * args.inputs, base.emb_dim, base.emb_dim)]:
      tflops = matmul_ceiling(m, k, n, dtype, args.reps)
      record([f"bare matmul {m}x{k}x{n}", "", "", "", "", "", tflops, ""], scorer="bare matmul", m=m, k=k, n=n,
             tflops=tflops)
  print(markdown_table(HEADERS, rows))
  print(json.dumps(result))


if __name__ == "__main__":
  main()

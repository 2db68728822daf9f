"""What the benchmarks time, checked on the CPU: bench/common.py's FLOP counts against XLA's cost
analysis of the compiled programs, and the dtypes of their matmuls in bfloat16.

The counts turn measured seconds into TFLOP/s, and the match says more: the compiled scorer does the
encode-once work (not every (example, choice) pair through the encoder), and the prompt-tuning step
does two forward passes' worth (input gradients only: no weight gradients of the frozen backbone).
A float32 matmul where bfloat16 was meant runs several times slower on an accelerator.
"""

from __future__ import annotations

import collections
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import pytest

from rospr_jax.eval.scoring import score_choices, score_choices_naive
from rospr_jax.model import T5Config, init_params, model_for
from rospr_jax.prompt.train_step import _jitted_train_step, default_optimizer, dropout_key, init_state

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
from common import count_primitive, forward_flops  # noqa: E402

# Matmuls dominate (as at T0_3B), so element-wise work stays within a few percent of the count.
CONFIG = T5Config(vocab_size=512, emb_dim=256, num_heads=4, head_dim=64, mlp_dim=1024, num_encoder_layers=2,
                  num_decoder_layers=2, dropout_rate=0.1)
B, C, T, L, P = 4, 3, 64, 8, 16


def _compiled_flops(lowered) -> float:
  analysis = lowered.compile().cost_analysis()
  return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]


@pytest.fixture(scope="module")
def param_shapes():
  return jax.eval_shape(lambda: init_params(CONFIG, jax.random.PRNGKey(0)))


def test_scorers_compile_to_the_counted_work(param_shapes):
  inputs = jax.ShapeDtypeStruct((B, T), jnp.int32)
  targets = jax.ShapeDtypeStruct((B, C, L), jnp.int32)
  encode_once = forward_flops(CONFIG, B * C, T, L, encoder_batch=B)
  every_pair = forward_flops(CONFIG, B * C, T, L)
  for scorer, counted in [(score_choices, encode_once), (score_choices_naive, every_pair)]:
    compiled = _compiled_flops(jax.jit(lambda p, i, t: scorer(p, i, t, model=model_for(CONFIG))).lower(
        param_shapes, inputs, targets))
    assert 1.0 <= compiled / counted < 1.03, scorer.__name__


@pytest.mark.parametrize("remat,low,high", [("none", 2.0, 2.1), ("minimal", 2.0, 2.15), ("full", 2.6, 2.9)])
def test_prompt_step_computes_input_gradients_only(param_shapes, remat, low, high):
  """Two forward passes (forward, and the backward to the prompt), plus what remat recomputes;
  weight gradients would add a third."""
  optimizer = default_optimizer()
  state = jax.eval_shape(lambda: init_state(jnp.zeros((2, P, CONFIG.emb_dim)), optimizer))
  batch = {"inputs": jax.ShapeDtypeStruct((B, T), jnp.int32), "targets": jax.ShapeDtypeStruct((B, L), jnp.int32),
           "source_ids": jax.ShapeDtypeStruct((B,), jnp.int32)}
  compiled = _compiled_flops(_jitted_train_step.lower(state, param_shapes, batch, dropout_key(0),
                                                      model=model_for(CONFIG.replace(remat_policy=remat)),
                                                      optimizer=optimizer))
  assert low <= compiled / forward_flops(CONFIG, B, P + T, L) < high


def test_count_primitive_counts_nested_draws():
  """What `bench/prompt_tuning.py --compile_only` reports as random draws: every `random_bits`,
  including those inside jit and remat (hand-counted: 1 + 2 in a checkpoint + 1 in a jit)."""
  def draws(key):
    inner = jax.checkpoint(lambda k: jax.random.bernoulli(k, 0.5, (3,)) & jax.random.bernoulli(k, 0.5, (3,)))
    nested = jax.jit(lambda k: jax.random.uniform(k, (2,)))
    return jax.random.normal(key, (4,)).sum() + inner(key).sum() + nested(key).sum()

  assert count_primitive(jax.make_jaxpr(draws)(jax.random.key(0)), "random_bits") == 4
  assert count_primitive(jax.make_jaxpr(draws)(jax.random.key(0)), "random_split") == 0


def _dot_operand_dtypes(stablehlo: str) -> collections.Counter:
  """(lhs, rhs) operand types of every dot_general, e.g. ("tensor<4x16x64xbf16>", ...)."""
  pattern = r"stablehlo\.dot_general [^\n]*: \((tensor<[^>]*>), (tensor<[^>]*>)\)"
  return collections.Counter(re.findall(pattern, stablehlo))


def test_bfloat16_programs_multiply_in_bfloat16():
  """Every projection multiplies bfloat16 operands; float32 operands appear only in the backward pass
  of the attention logits (computed with float32 accumulation), as [B, N, Tq, Tk] x [B, N, T, D]."""
  config = CONFIG.replace(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, remat_policy="minimal")
  params = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
  inputs, targets = jax.ShapeDtypeStruct((B, T), jnp.int32), jax.ShapeDtypeStruct((B, C, L), jnp.int32)
  scorer = jax.jit(lambda p, i, t: score_choices(p, i, t, model=model_for(config))).lower(
      params, inputs, targets)
  dots = _dot_operand_dtypes(scorer.as_text())
  assert dots and all(a.endswith("xbf16>") and b.endswith("xbf16>") for a, b in dots)
  optimizer = default_optimizer()
  state = jax.eval_shape(lambda: init_state(jnp.zeros((2, P, CONFIG.emb_dim)), optimizer))
  batch = {"inputs": inputs, "targets": jax.ShapeDtypeStruct((B, L), jnp.int32),
           "source_ids": jax.ShapeDtypeStruct((B,), jnp.int32)}
  step = _jitted_train_step.lower(state, params, batch, dropout_key(0), model=model_for(config),
                                  optimizer=optimizer)
  dots = _dot_operand_dtypes(step.as_text())
  float32 = [(a, b) for a, b in dots if "f32" in a + b]
  assert len(dots) > len(float32) > 0
  attention_shaped = re.compile(rf"tensor<{B}x{CONFIG.num_heads}x\d+x\d+xf32>")
  assert all(attention_shaped.fullmatch(a) and attention_shaped.fullmatch(b) for a, b in float32), float32

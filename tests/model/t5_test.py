"""Model invariants that need no reference implementation: prompts, padding, parameter names, attention
paths, remat and dropout through the whole model (the layers alone: t5_layers_test.py)."""

from __future__ import annotations

import contextlib
import functools
import io
import re

import jax
import jax.ad_checkpoint
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from rospr_jax.model import T5, T5Config, init_params, shift_right, token_log_likelihoods

CONFIG = T5Config(vocab_size=64, emb_dim=24, num_heads=3, head_dim=8, mlp_dim=40, num_encoder_layers=2,
                  num_decoder_layers=2, relative_attention_max_distance=16)


@pytest.fixture(scope="module")
def params():
  return init_params(CONFIG, jax.random.PRNGKey(0))


@jax.jit
def _logits(params, enc, dec, prompt=None):
  return T5(CONFIG).apply({"params": params}, enc, dec, prompt=prompt)


def _tokens(rng, shape, low=3):
  return jnp.asarray(rng.integers(low, CONFIG.vocab_size, shape), jnp.int32)


def test_zero_length_prompt_equals_no_prompt(params):
  rng = np.random.default_rng(1)
  enc, dec = _tokens(rng, (2, 9)), shift_right(_tokens(rng, (2, 5)))
  plain = _logits(params, enc, dec)
  empty = _logits(params, enc, dec, jnp.zeros((0, CONFIG.emb_dim)))
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(empty))


def test_prompt_is_prepended_to_the_embedded_input(params):
  """A prompt made of token embeddings equals those tokens written before the input."""
  rng = np.random.default_rng(2)
  enc, dec = _tokens(rng, (2, 7)), shift_right(_tokens(rng, (2, 4)))
  prefix = _tokens(rng, (3,))
  prompt = params["token_embedder"]["embedding"][prefix]  # [P, H]
  with_prompt = _logits(params, enc, dec, prompt)
  batched_prompt = _logits(params, enc, dec, jnp.stack([prompt, prompt]))
  written = _logits(params, jnp.concatenate([jnp.tile(prefix, (2, 1)), enc], 1), dec)
  np.testing.assert_allclose(np.asarray(with_prompt), np.asarray(written), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(with_prompt), np.asarray(batched_prompt))


def test_padding_does_not_change_real_positions(params):
  rng = np.random.default_rng(3)
  enc, targets = _tokens(rng, (1, 8)), _tokens(rng, (1, 5))
  prompt = jax.random.normal(jax.random.PRNGKey(4), (2, CONFIG.emb_dim))
  short = _logits(params, enc, shift_right(targets), prompt)
  padded_enc = jnp.pad(enc, ((0, 0), (0, 13)))
  padded_targets = jnp.pad(targets, ((0, 0), (0, 6)))
  long = _logits(params, padded_enc, shift_right(padded_targets), prompt)
  np.testing.assert_allclose(np.asarray(long[:, :5]), np.asarray(short), atol=1e-5)


def test_prompt_shape_mismatch_is_refused(params):
  enc = jnp.ones((2, 4), jnp.int32)
  with pytest.raises(ValueError, match=r"Prompt of shape \(3, 5, 24\) does not fit inputs \(2, 4\)"):
    T5(CONFIG).apply({"params": params}, enc, enc, prompt=jnp.zeros((3, 5, 24)))


def test_parameter_names_and_count_are_t5x():
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  flat = {"/".join(k.key for k in path): v.shape for path, v in jax.tree_util.tree_leaves_with_path(params)}
  assert flat["token_embedder/embedding"] == (64, 24)
  assert flat["encoder/layers_1/attention/query/kernel"] == (24, 24)
  assert flat["encoder/layers_0/mlp/wo/kernel"] == (40, 24)
  assert flat["encoder/relpos_bias/rel_embedding"] == (3, 32)
  assert flat["decoder/layers_1/encoder_decoder_attention/out/kernel"] == (24, 24)
  assert flat["decoder/layers_0/pre_cross_attention_layer_norm/scale"] == (24,)
  assert flat["decoder/logits_dense/kernel"] == (24, 64)
  assert sum(int(np.prod(s)) for s in flat.values()) == CONFIG.num_parameters()


def test_logical_axes_are_recorded():
  from flax import linen as nn
  boxed = init_params(CONFIG, jax.random.PRNGKey(0), boxed=True)
  specs = nn.get_partition_spec(boxed)
  assert tuple(specs["encoder"]["layers_0"]["attention"]["query"]["kernel"]) == ("embed", "joined_kv")
  assert tuple(specs["decoder"]["logits_dense"]["kernel"]) == ("embed", "vocab")
  assert tuple(specs["token_embedder"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["encoder"]["relpos_bias"]["rel_embedding"]) == ("heads", "relpos_buckets")


def test_fused_attention_path_equals_einsum(params):
  """`jax.nn.dot_product_attention` (the path the cuDNN kernel takes on GPUs) equals the einsums."""
  rng = np.random.default_rng(5)
  enc, dec = _tokens(rng, (2, 9)), shift_right(_tokens(rng, (2, 5)))
  enc = enc.at[1, 6:].set(0)
  prompt = jax.random.normal(jax.random.PRNGKey(6), (2, CONFIG.emb_dim))
  fused = T5(CONFIG.replace(attention_impl="xla")).apply({"params": params}, enc, dec, prompt=prompt)
  np.testing.assert_allclose(np.asarray(fused), np.asarray(_logits(params, enc, dec, prompt)), atol=1e-5)


@pytest.mark.parametrize("fused_padding", ["bias", "lengths"])
def test_fused_attention_takes_padding_as_configured(params, monkeypatch, fused_padding):
  """"bias": one [B, N, Tq, Tk] bias per layer (positions plus padding: the form run on an H100);
  "lengths": batch-free positions [1, N, Tq, Tk] and key lengths [B], so no [B, N, T, T] bias is built
  (cuDNN reads it, and writes its gradient, in every layer). Same logits either way. Odd lengths
  (9 and 5 here) reach the kernel padded to even ones wherever a bias goes with them (cuDNN trains
  with a bias only at even lengths); the added key is masked out (lengths 9 and 6 stay 9 and 6)."""
  calls = []
  fused = jax.nn.dot_product_attention

  def recording(query, key, value, bias=None, **kwargs):
    lengths = kwargs.get("key_value_seq_lengths")
    calls.append((None if bias is None else bias.shape, None if lengths is None else lengths.tolist()))
    return fused(query, key, value, bias=bias, **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
  rng = np.random.default_rng(15)
  enc, dec = _tokens(rng, (2, 9)).at[1, 6:].set(0), shift_right(_tokens(rng, (2, 5)))
  config = CONFIG.replace(attention_impl="xla", fused_padding=fused_padding)
  logits = T5(config).apply({"params": params}, enc, dec)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(_logits(params, enc, dec, None)), atol=1e-5)
  n, layers = CONFIG.num_heads, CONFIG.num_encoder_layers
  encoder, decoder = calls[:layers], calls[layers:]
  assert len(decoder) == 2 * CONFIG.num_decoder_layers
  if fused_padding == "lengths":
    assert encoder == [((1, n, 10, 10), [9, 6])] * layers
    assert decoder[:2] == [((1, n, 6, 6), [5, 5]), (None, [9, 6])]  # self: positions, causal; cross: padding
  else:
    assert encoder == [((2, n, 10, 10), None)] * layers
    assert decoder[:2] == [((2, n, 6, 6), None), ((2, n, 6, 10), None)]


def test_unknown_attention_implementation_is_refused():
  with pytest.raises(ValueError, match="Unknown attention_impl 'flash'; choose one of"):
    CONFIG.replace(attention_impl="flash")


def _dropout_loss(config, params, prompt, enc, targets, rng):
  logits = T5(config).apply({"params": params}, enc, shift_right(targets), prompt=prompt, enable_dropout=True,
                            rngs={"dropout": rng})
  return -jnp.mean(token_log_likelihoods(logits, targets))


def _prompt_case(seed):
  rng = np.random.default_rng(seed)
  enc, targets = _tokens(rng, (2, 9)), _tokens(rng, (2, 5))
  prompt = jax.random.normal(jax.random.PRNGKey(seed), (2, 2, CONFIG.emb_dim))  # [B, P, H]
  return prompt, enc.at[1, 7:].set(0), targets


@pytest.mark.parametrize("policy", ["minimal", "full"])
def test_remat_keeps_parameters_loss_and_prompt_gradient(params, policy):
  """Recomputed layers redraw the same dropout masks: same loss and prompt gradient as keeping all."""
  config = CONFIG.replace(dropout_rate=0.2)
  remat = config.replace(remat_policy=policy)
  assert jax.tree.map(jnp.shape, init_params(remat, jax.random.PRNGKey(0))) == jax.tree.map(jnp.shape, params)
  prompt, enc, targets = _prompt_case(8)
  rng = jax.random.PRNGKey(9)
  grad = lambda cfg: jax.jit(jax.value_and_grad(functools.partial(_dropout_loss, cfg, params)))(
      prompt, enc, targets, rng)
  (loss, gradient), (remat_loss, remat_gradient) = grad(config), grad(remat)
  assert float(jnp.abs(gradient).max()) > 0
  np.testing.assert_allclose(float(remat_loss), float(loss), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(remat_gradient), np.asarray(gradient), rtol=1e-5, atol=1e-7)


def _saved_shapes(config, params) -> list[str]:
  """Shapes of the activations the backward pass keeps, as `print_saved_residuals` names them."""
  prompt, enc, targets = _prompt_case(10)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    jax.ad_checkpoint.print_saved_residuals(
        lambda p: _dropout_loss(config, params, p, enc, targets, jax.random.PRNGKey(0)), prompt)
  return re.findall(r"^\w+(\[[\d,]*\])", out.getvalue(), flags=re.M)


def test_minimal_remat_keeps_no_attention_weights(params):
  """T0_3B's batch-32 step saves 69 GiB without remat, mostly [B, N, T, T] attention weights and
  dropout masks of every layer; "minimal" keeps projections, and nothing of that size (the encoder's
  position and padding biases stay apart: [1, N, T, T] and [B, 1, 1, T])."""
  config = CONFIG.replace(dropout_rate=0.2)
  attention_sized = f"[2,{CONFIG.num_heads},11,11]"  # [B, N, P + T, P + T]
  kept = _saved_shapes(config, params)
  assert kept.count(attention_sized) >= 2 * CONFIG.num_encoder_layers
  minimal = _saved_shapes(config.replace(remat_policy="minimal"), params)
  assert attention_sized not in minimal
  assert f"[2,11,{CONFIG.mlp_dim}]" in minimal  # the feed-forward projections stay saved
  assert len(minimal) < len(kept)


def _random_draw_shapes(jaxpr) -> list[tuple[int, ...]]:
  """Shapes of every `random_bits` draw in a jaxpr and the jaxprs nested in its equations."""
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "random_bits":
      shapes.append(tuple(eqn.params["shape"]))
    for value in eqn.params.values():
      for inner in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(inner, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
          shapes += _random_draw_shapes(getattr(inner, "jaxpr", inner))
  return shapes


@pytest.mark.parametrize("policy", ["none", "minimal"])
def test_dropout_masks_are_shared_along_length_as_in_t5x(params, policy):
  """T5X (and Mesh TensorFlow T5) draw one dropout mask per sequence, shared along its length, and one
  per key column of the attention weights, shared by all queries. The layers' masks come from one draw
  per stack, so the number of random-number generators in the compiled step does not grow with depth
  (nor with remat); () draws per element at every site (HF's T5)."""
  prompt, enc, targets = _prompt_case(11)
  draws = lambda config, params=params: _random_draw_shapes(jax.make_jaxpr(
      lambda p: _dropout_loss(config, params, p, enc, targets, jax.random.PRNGKey(0)))(prompt).jaxpr)
  config = CONFIG.replace(dropout_rate=0.2, remat_policy=policy)
  assert config.dropout_broadcast_dims == (-2,)
  n, h, f = CONFIG.num_heads, CONFIG.emb_dim, CONFIG.mlp_dim
  encoder_layer = 11 * n + h + f + h  # values [Tk, N, 1]; states [1, H]; hidden [1, F]; states [1, H]
  decoder_layer = 5 * n + h + 11 * n + h + f + h  # self-attention, cross-attention, feed-forward
  stack_sites = [(2, 1, h)] * 4  # embeddings and final norms of both stacks, [B, 1, H]
  expected = sorted(stack_sites + [(CONFIG.num_encoder_layers, 2, encoder_layer),
                                   (CONFIG.num_decoder_layers, 2, decoder_layer)])
  assert sorted(draws(config)) == expected
  deeper = config.replace(num_encoder_layers=5, num_decoder_layers=3)
  assert sorted(draws(deeper, init_params(deeper, jax.random.PRNGKey(0)))) == sorted(stack_sites + [(5, 2, encoder_layer), (3, 2, decoder_layer)])
  per_element = draws(config.replace(dropout_broadcast_dims=()))
  assert len(per_element) == 1 + 4 * CONFIG.num_encoder_layers + 1 + 1 + 6 * CONFIG.num_decoder_layers + 1
  assert (2, n, 11, 11) in per_element and (2, 11, f) in per_element


def test_fused_attention_trains_with_the_same_dropout(params):
  """With T5X's masks the fused path (`jax.nn.dot_product_attention`, cuDNN's on GPUs) trains with
  dropout on: same loss and prompt gradient as the einsum path under the same dropout key."""
  config = CONFIG.replace(dropout_rate=0.2)
  prompt, enc, targets = _prompt_case(13)
  grad = lambda cfg: jax.jit(jax.value_and_grad(functools.partial(_dropout_loss, cfg, params)))(
      prompt, enc, targets, jax.random.PRNGKey(14))
  loss, gradient = grad(config)
  for fused_padding in ("bias", "lengths"):
    fused_loss, fused_gradient = grad(config.replace(attention_impl="xla", fused_padding=fused_padding))
    np.testing.assert_allclose(float(fused_loss), float(loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(fused_gradient), np.asarray(gradient), rtol=1e-4, atol=1e-6)
  assert float(loss) != pytest.approx(float(_dropout_loss(config.replace(dropout_rate=0.0), params, prompt, enc,
                                                              targets, jax.random.PRNGKey(14))))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the cuDNN kernel needs an NVIDIA GPU "
                    "(bench/gpu.sh runs this test on the card)")
@pytest.mark.parametrize("fused_padding,prompt_length", [("bias", 4), ("lengths", 4), ("bias", 3)])
def test_cudnn_training_is_as_close_to_float32_as_the_einsum_one(fused_padding, prompt_length):
  """On the card, with dropout on: the bfloat16 loss and prompt gradient through cuDNN's fused attention
  lie no farther from the float32 einsum reference than bfloat16 einsums do (same dropout masks). With
  a 3-token prompt the encoder length is odd (63), which cuDNN trains with only once padded to 64."""
  config = T5Config(vocab_size=512, emb_dim=256, num_heads=4, head_dim=64, mlp_dim=512, num_encoder_layers=2,
                    num_decoder_layers=2, dropout_rate=0.1, remat_policy="minimal")
  params32 = init_params(config, jax.random.PRNGKey(3))
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params32)
  rng = np.random.default_rng(16)
  enc, targets = _tokens(rng, (8, 60)).at[1, 40:].set(0).at[5, 9:].set(0), _tokens(rng, (8, 8))
  prompt = jax.random.uniform(jax.random.PRNGKey(17), (8, prompt_length, 256), minval=-0.5, maxval=0.5)

  def loss_and_grad(params, **changes):
    cfg = config.replace(**changes)
    value, grad = jax.jit(jax.value_and_grad(functools.partial(_dropout_loss, cfg, params)))(
        prompt, enc, targets, jax.random.PRNGKey(18))
    return float(value), np.asarray(grad, np.float64)

  reference = loss_and_grad(params32)
  bf16 = dict(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  einsum = loss_and_grad(params16, **bf16)
  cudnn = loss_and_grad(params16, attention_impl="cudnn", fused_padding=fused_padding, **bf16)
  einsum_error, cudnn_error = (np.linalg.norm(g - reference[1]) / np.linalg.norm(reference[1])
                               for _, g in (einsum, cudnn))
  assert abs(einsum[0] - reference[0]) < 5e-2 * abs(reference[0]) and einsum_error < 0.5
  assert abs(cudnn[0] - reference[0]) <= 2 * abs(einsum[0] - reference[0]) + 1e-2 * abs(reference[0])
  assert cudnn_error <= 2 * einsum_error + 1e-2, (cudnn_error, einsum_error)


def test_dropout_broadcast_dims_are_t5x_or_per_element():
  with pytest.raises(ValueError, match=r"dropout_broadcast_dims must be \(-2,\)"):
    CONFIG.replace(dropout_broadcast_dims=(-1,))


def test_unknown_remat_policy_is_refused():
  with pytest.raises(ValueError, match="Unknown remat_policy 'all'; choose one of"):
    CONFIG.replace(remat_policy="all")

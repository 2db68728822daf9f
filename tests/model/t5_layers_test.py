"""The T5 layers alone: relative position buckets against Hugging Face's, T5X's dropout masks (drawn
per stack, shared along length, dropping attention key columns)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rospr_jax.model import T5Config, relative_position_buckets
from rospr_jax.model.t5_layers import MultiHeadAttention, draw_layer_masks, dropout

CONFIG = T5Config(vocab_size=64, emb_dim=24, num_heads=3, head_dim=8, mlp_dim=40, num_encoder_layers=2,
                  num_decoder_layers=2, relative_attention_max_distance=16)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 20), (32, 64)])
def test_buckets_equal_hugging_face(bidirectional, num_buckets, max_distance):
  torch = pytest.importorskip("torch")
  from transformers.models.t5.modeling_t5 import T5Attention
  length = 1100
  ours = relative_position_buckets(length, length, bidirectional, num_buckets, max_distance)
  positions = torch.arange(length)
  relative = positions[None, :] - positions[:, None]
  theirs = T5Attention._relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
  np.testing.assert_array_equal(ours, theirs.numpy())


def test_layer_masks_are_independent_draws_of_the_keep_rate():
  """`draw_layer_masks`: every site's mask has its per-example shape, about 1 - rate of it kept, and
  no two layers or sites share a mask."""
  class Draw(nn.Module):
    @nn.compact
    def __call__(self):
      return draw_layer_masks(self, CONFIG.replace(dropout_rate=0.3), True, 3, 64,
                              {"values": (40, 4, 1), "states": (1, 200)})

  keeps = Draw().apply({}, rngs={"dropout": jax.random.PRNGKey(5)})
  assert [jax.tree.map(jnp.shape, k) for k in keeps] == [{"values": (64, 40, 4, 1), "states": (64, 1, 200)}] * 3
  flat = np.stack([np.concatenate([np.ravel(k["values"]), np.ravel(k["states"])]) for k in keeps])
  np.testing.assert_allclose(flat.mean(), 0.7, atol=0.01)  # 3 x 64 x 360 draws
  agreement = (flat[:, None] == flat[None]).mean(-1)  # [layer, layer]: 0.7^2 + 0.3^2 = 0.58 if independent
  np.testing.assert_allclose(agreement[~np.eye(3, dtype=bool)], 0.58, atol=0.02)
  values, states = np.ravel(keeps[0]["values"][:, :36]), np.ravel(keeps[0]["states"][:, :, :144])
  np.testing.assert_allclose((values == states).mean(), 0.58, atol=0.02)  # sites differ too
  assert draw_layer_masks(None, CONFIG.replace(dropout_rate=0.3), False, 2, 4, {"s": (1, 2)}) == [None] * 2
  assert draw_layer_masks(None, CONFIG.replace(dropout_rate=0.3, dropout_broadcast_dims=()), True, 2, 4,
                          {"s": (1, 2)}) == [None] * 2


@pytest.mark.parametrize("mask_source", ["drawn_here", "drawn_by_the_stack"])
def test_attention_dropout_drops_key_columns_of_the_weights(mask_source):
  """The values' dropout is T5X's attention dropout: softmax weights times a mask [B, N, 1, Tk] that all
  queries share, then times the values (reference computed here from the mask, whether the attention
  drew it or was given it as the layers are)."""
  config = CONFIG.replace(dropout_rate=0.4)
  attention = MultiHeadAttention(config)
  rng = np.random.default_rng(12)
  x = jnp.asarray(rng.normal(size=(2, 7, CONFIG.emb_dim)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(1, CONFIG.num_heads, 7, 7)), jnp.float32)
  variables = nn.unbox(attention.init(jax.random.PRNGKey(0), x, x, bias, None, enable_dropout=False))
  masks = []

  def keep_dropout_masks(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, nn.Dropout):
      masks.append(np.asarray(out) != 0)  # the values are dense random normals: zero only where dropped
    return out

  given = rng.random((2, 7, CONFIG.num_heads, 1)) < 0.6 if mask_source == "drawn_by_the_stack" else None
  with nn.intercept_methods(keep_dropout_masks):
    out = attention.apply(variables, x, x, bias, None, enable_dropout=True, value_keep=given,
                          rngs={"dropout": jax.random.PRNGKey(1)})
  if given is None:
    (kept,) = masks  # [B, Tk, N, D], one draw per (batch, key, head)
    assert (kept == kept[..., :1]).all() and 0.3 < kept.mean() < 0.9
  else:
    assert not masks
    kept = given
  column_mask = np.moveaxis(kept[..., 0], 1, 2)[:, :, None, :]  # [B, N, 1, Tk]
  p = variables["params"]
  heads = lambda y: y.reshape(2, 7, CONFIG.num_heads, CONFIG.head_dim).transpose(0, 2, 1, 3)  # [B, N, T, D]
  q, k, v = (heads(x @ p[name]["kernel"]) for name in ("query", "key", "value"))
  weights = jax.nn.softmax(jnp.einsum("bnqd,bnkd->bnqk", q, k) + bias, axis=-1)
  context = jnp.einsum("bnqk,bnkd->bnqd", weights * column_mask / 0.6, v).transpose(0, 2, 1, 3).reshape(2, 7, -1)
  np.testing.assert_allclose(np.asarray(out), np.asarray(context @ p["out"]["kernel"]), rtol=1e-5, atol=1e-5)


def test_dropout_zeroes_whole_columns_along_length():
  """What a shared mask means for the values: along T, a unit is dropped everywhere or nowhere."""
  class Apply(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x):
      return dropout(self.config, x, True)

  x = jnp.ones((4, 50, 32))
  for dims, shared in [((-2,), True), ((), False)]:
    config = CONFIG.replace(dropout_rate=0.5, dropout_broadcast_dims=dims)
    y = np.asarray(Apply(config).apply({}, x, rngs={"dropout": jax.random.PRNGKey(3)}))
    assert set(np.unique(y)) == {0.0, 2.0}  # kept units scaled by 1 / (1 - rate)
    assert bool((y == y[:, :1]).all()) == shared

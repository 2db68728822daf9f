"""The building blocks of T5 v1.1 in Flax linen: norm, projection, relative position bias, attention,
feed-forward and T5X-style dropout.

Numerics follow T5 v1.1 exactly: float32 RMS norm (eps 1e-6), gated tanh-GELU feed-forward, no
1/sqrt(d) attention scaling, bucketed relative position biases. Parameter names and logical axes are
T5X's. `t5.py` assembles these into the encoder-decoder.

Vocabulary (docs/design.md): B batch, T encoder length, L decoder length, H model dim, A heads, Dh head
dim, F feed-forward dim.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rospr_jax.model.config import T5Config

Array = jax.Array
MASK_VALUE = -1e10  # Added to the logits of masked keys (finite, so a fully masked row stays finite).

_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


@functools.lru_cache(maxsize=64)
def relative_position_buckets(query_length: int, key_length: int, bidirectional: bool,
                              num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket ids of `key - query` positions, exactly as Mesh TensorFlow and Hugging Face T5 compute them.

  Computed on the host in float32 (shapes are static), so the traced program holds a constant.

  Returns:
    [query_length, key_length] int32 bucket ids in [0, num_buckets).
  """
  relative = (np.arange(key_length, dtype=np.int64)[None, :]
              - np.arange(query_length, dtype=np.int64)[:, None])  # [Tq, Tk]
  buckets = np.zeros_like(relative)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative > 0) * num_buckets
    distance = np.abs(relative)
  else:
    distance = -np.minimum(relative, 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):  # log(0) only where `distance < max_exact` picks the exact bucket.
    scaled = (np.log(distance.astype(np.float32) / np.float32(max_exact))
              / np.float32(math.log(max_distance / max_exact))
              * np.float32(num_buckets - max_exact))
  large = max_exact + np.where(distance < max_exact, 0, scaled).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  buckets += np.where(distance < max_exact, distance, large)
  return buckets.astype(np.int32)


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no mean subtraction, computed in float32."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., H] -> [..., H] in `dtype`."""
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), jnp.float32)
    y = x32 * jax.lax.rsqrt(variance + self.epsilon)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


class Dense(nn.Module):
  """A bias-free projection [..., in] -> [..., features] with a named 2-D kernel."""
  features: int
  axes: tuple[str, str]
  config: T5Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(_kernel_init, self.axes),
                        (x.shape[-1], self.features), self.config.param_dtype)
    return jnp.dot(x.astype(self.config.dtype), kernel.astype(self.config.dtype))


class RelativePositionBias(nn.Module):
  """Learned per-head bias for bucketed relative positions: one table per stack."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_length: int, key_length: int) -> Array:
    """Returns [1, A, Tq, Tk] float32."""
    cfg = self.config
    table = self.param("rel_embedding",
                       nn.with_logical_partitioning(nn.initializers.normal(1.0), ("heads", "relpos_buckets")),
                       (cfg.num_heads, cfg.relative_attention_num_buckets), jnp.float32)
    buckets = relative_position_buckets(query_length, key_length, self.bidirectional,
                                        cfg.relative_attention_num_buckets,
                                        cfg.relative_attention_max_distance)
    return jnp.asarray(table, jnp.float32)[:, buckets][None]  # [A, Tq, Tk] -> [1, A, Tq, Tk]


def dropout(cfg: T5Config, x: Array, enable_dropout: bool, keep: Array | None = None,
            broadcast_dims: tuple[int, ...] | None = None) -> Array:
  """`x` with dropout at `cfg.dropout_rate` when `enable_dropout` (call it inside a compact method).

  Args:
    keep: a bool mask drawn beforehand for this site (`draw_layer_masks`), broadcastable to `x`:
      `x / (1 - rate)` where True, 0 elsewhere. Without it, `nn.Dropout` draws one here, one mask per
      slice along `broadcast_dims` (default `cfg.dropout_broadcast_dims`; T5X's (-2,) shares it along
      the length of [B, T, H] states).
  """
  if not enable_dropout or cfg.dropout_rate == 0:
    return x
  if keep is not None:
    return jnp.where(keep, x / (1.0 - cfg.dropout_rate), 0).astype(x.dtype)
  dims = cfg.dropout_broadcast_dims if broadcast_dims is None else broadcast_dims
  return nn.Dropout(cfg.dropout_rate, broadcast_dims=dims)(x, deterministic=False)


def draw_layer_masks(module: nn.Module, cfg: T5Config, enable_dropout: bool, num_layers: int, batch: int,
                     sites: dict[str, tuple[int, ...]]) -> list[dict[str, Array] | None]:
  """The T5X dropout masks of every layer of a stack, drawn at once.

  A random draw per mask site costs compilation time: 483 draws in the T0_3B training step (240
  sites, redrawn by remat), which took XLA 18 s more to compile on 2 CPU cores with RngBitGenerator
  keys and 74 s more with threefry keys than the step without dropout (bench/RESULTS.md). Here each
  stack draws one [layers, B, sum of site sizes] Bernoulli array and slices it: the same distribution
  (independent keep-draws per example, site and unit), one draw per stack whatever the depth.

  Args:
    sites: per-example mask shape of each site of a layer, with 1 on the axes the mask is shared along.

  Returns:
    per layer, {site: [B, *shape] bool}; a list of None when dropout is off or drawn per element
    (`dropout_broadcast_dims=()`, whose masks are as large as the activations: drawn at each site).
  """
  if not (enable_dropout and cfg.dropout_rate > 0 and cfg.dropout_broadcast_dims):
    return [None] * num_layers
  sizes = [math.prod(shape) for shape in sites.values()]
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - cfg.dropout_rate,
                              (num_layers, batch, sum(sizes)))
  keep = nn.with_logical_constraint(keep, (None, "batch", None))  # split over the data axis, as the batch
  parts = jnp.split(keep, np.cumsum(sizes)[:-1].tolist(), axis=-1)
  return [{name: part[i].reshape(batch, *shape) for (name, shape), part in zip(sites.items(), parts)}
          for i in range(num_layers)]


class MultiHeadAttention(nn.Module):
  """Dot-product attention without logit scaling (T5 folds 1/sqrt(D) into the query init)."""
  config: T5Config

  @nn.compact
  def __call__(self, queries: Array, keys_values: Array, bias: Array | None, key_mask: Array | None, *,
               enable_dropout: bool, value_keep: Array | None = None) -> Array:
    """Attends [B, Tq, H] queries over [B, Tk, H] keys/values.

    Args:
      bias: additive float32 bias [1, A, Tq, Tk] (relative positions, causal layout) or None.
      key_mask: [B, Tk] bool, False at padded keys, or None. The einsum path adds it as a [B, 1, 1, Tk]
        bias; the fused paths add it to the position bias ([B, A, Tq, Tk]) or, with
        `config.fused_padding == "lengths"`, take it as key lengths.
      value_keep: [B, Tk, A, 1] bool T5X dropout mask of the values (see below), or None to draw it here.

    Returns:
      [B, Tq, H] in `config.dtype`.
    """
    cfg = self.config
    project = functools.partial(Dense, cfg.joined_kv, ("embed", "joined_kv"), cfg)
    heads = lambda x: x.reshape(*x.shape[:-1], cfg.num_heads, cfg.head_dim)  # [B, T, A*Dh] -> [B, T, A, Dh]
    query = heads(project(name="query")(queries))
    key = heads(project(name="key")(keys_values))
    value = heads(project(name="value")(keys_values))
    per_element_dropout = enable_dropout and cfg.dropout_rate > 0 and not cfg.dropout_broadcast_dims
    if not per_element_dropout:
      # T5X's attention dropout drops key columns of the weights (a mask m [B, A, 1, Tk] shared by all
      # queries), and sum_k w[q, k] m[k] v[k] = sum_k w[q, k] (m[k] v[k]): exactly dropout on the values,
      # one draw per key and head ([B, Tk, A, 1]), which also lets fused kernels train with dropout.
      value = dropout(cfg, value, enable_dropout, value_keep, broadcast_dims=(-1,))
    if cfg.attention_impl == "einsum" or per_element_dropout:
      # Heads first ([B, A, T, Dh]), so both products are plain batched matmuls over (B, A): on the CPU
      # this runs the attention about 4x faster than contracting the [B, T, A, Dh] layout directly.
      query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
      logits = jnp.einsum("bnqd,bnkd->bnqk", query, key, preferred_element_type=jnp.float32)
      full_bias = _bias_with_padding(bias, key_mask)
      if full_bias is not None:
        logits = logits + full_bias
      weights = jax.nn.softmax(logits, axis=-1).astype(cfg.dtype)  # [B, A, Tq, Tk]
      if per_element_dropout:
        weights = dropout(cfg, weights, enable_dropout)  # one draw per element, as Hugging Face's T5
      context = jnp.swapaxes(jnp.einsum("bnqk,bnkd->bnqd", weights, value), 1, 2)  # [B, Tq, A, Dh]
    else:
      context = _fused_attention(cfg, query, key, value, bias, key_mask)
    context = context.reshape(*context.shape[:2], cfg.joined_kv)
    return Dense(queries.shape[-1], ("joined_kv", "embed"), cfg, name="out")(context)


def _fused_attention(cfg: T5Config, query: Array, key: Array, value: Array, bias: Array | None,
                     key_mask: Array | None) -> Array:
  """`jax.nn.dot_product_attention` (`cfg.attention_impl`) of [B, Tq, A, Dh] queries over [B, Tk, A, Dh]
  keys and values; `bias` [1, A, Tq, Tk] and `key_mask` [B, Tk] as in `MultiHeadAttention`.

  When a bias goes to the kernel and Tq or Tk is odd, both are padded to even lengths (a key that is
  masked out, a query whose output is dropped): cuDNN's training kernels take a bias only with even
  lengths. Outputs and gradients are those of the unpadded attention.

  Returns:
    [B, Tq, A, Dh].
  """
  batch, query_length, key_length = query.shape[0], query.shape[1], key.shape[1]
  takes_bias = bias is not None or (key_mask is not None and cfg.fused_padding == "bias")
  pad_query, pad_key = (query_length % 2, key_length % 2) if takes_bias else (0, 0)
  if pad_query or pad_key:
    query = jnp.pad(query, ((0, 0), (0, pad_query), (0, 0), (0, 0)))
    key, value = (jnp.pad(x, ((0, 0), (0, pad_key), (0, 0), (0, 0))) for x in (key, value))
    if bias is not None:
      bias = jnp.pad(bias, ((0, 0), (0, 0), (0, pad_query), (0, pad_key)))
    if pad_key:  # the added key is padding: masked out (and after the real keys, as lengths require)
      key_mask = jnp.ones((batch, key_length), bool) if key_mask is None else key_mask
      key_mask = jnp.pad(key_mask, ((0, 0), (0, pad_key)))
  lengths = None  # [B] key lengths, or the padding folded into the bias
  if cfg.fused_padding == "lengths" and key_mask is not None:
    lengths = jnp.sum(key_mask, axis=-1, dtype=jnp.int32)
  elif cfg.fused_padding == "bias" and (bias is not None or key_mask is not None):
    # The form run on an H100: one [B, A, Tq, Tk] bias.
    bias = jnp.broadcast_to(_bias_with_padding(bias, key_mask),
                            (batch, cfg.num_heads, query.shape[1], key.shape[1]))
  context = jax.nn.dot_product_attention(
      query, key, value, bias=None if bias is None else bias.astype(query.dtype),
      key_value_seq_lengths=lengths, scale=1.0, implementation=cfg.attention_impl)
  return context[:, :query_length]


def _key_mask_bias(key_mask: Array) -> Array:
  """[B, Tk] bool -> [B, 1, 1, Tk] float32 additive bias (0 where attended, -1e10 where masked)."""
  return jnp.where(key_mask, 0.0, MASK_VALUE).astype(jnp.float32)[:, None, None, :]


def _bias_with_padding(bias: Array | None, key_mask: Array | None) -> Array | None:
  """Position bias [1, A, Tq, Tk] plus the padding bias of `key_mask` [B, Tk] (either may be None)."""
  if key_mask is None:
    return bias
  padding = _key_mask_bias(key_mask)
  return padding if bias is None else bias + padding


class GatedGeluMlp(nn.Module):
  """wo(gelu_tanh(wi_0 x) * wi_1 x)."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, *, enable_dropout: bool, keep: Array | None = None) -> Array:
    """[B, T, H] -> [B, T, H]; `keep`: [B, 1, F] dropout mask of the hidden units, or None."""
    cfg = self.config
    gate = nn.gelu(Dense(cfg.mlp_dim, ("embed", "mlp"), cfg, name="wi_0")(x), approximate=True)
    linear = Dense(cfg.mlp_dim, ("embed", "mlp"), cfg, name="wi_1")(x)
    hidden = dropout(cfg, gate * linear, enable_dropout, keep)
    return Dense(x.shape[-1], ("mlp", "embed"), cfg, name="wo")(hidden)

"""T5 v1.1 / T0 encoder-decoder in Flax linen, with a soft prompt prepended to the encoder input.

Parameter names and logical axes are T5X's, so T5X checkpoints map one to one and Hugging Face
checkpoints map by a fixed renaming (see `checkpoints.py`). Numerics follow T5 v1.1 exactly:
float32 RMS norm (eps 1e-6), gated tanh-GELU feed-forward, no 1/sqrt(d) attention scaling,
bucketed relative position biases (one table per stack, bidirectional in the encoder), untied
float32 logits. Activations use `config.dtype`.

Vocabulary (docs/design.md): B batch, T encoder length, L decoder length, P prompt length, H model dim,
A heads, Dh head dim, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rospr_jax.model.config import T5Config

Array = jax.Array
_MASK_VALUE = -1e10  # Added to the logits of masked keys (finite, so a fully masked row stays finite).

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


def _dropout(cfg: T5Config, x: Array, enable_dropout: bool, keep: Array | None = None,
             broadcast_dims: tuple[int, ...] | None = None) -> Array:
  """`x` with dropout at `cfg.dropout_rate` when `enable_dropout` (call it inside a compact method).

  Args:
    keep: a bool mask drawn beforehand for this site (`_draw_layer_masks`), broadcastable to `x`:
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


def _draw_layer_masks(module: nn.Module, cfg: T5Config, enable_dropout: bool, num_layers: int, batch: int,
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
      value = _dropout(cfg, value, enable_dropout, value_keep, broadcast_dims=(-1,))
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
        weights = _dropout(cfg, weights, enable_dropout)  # one draw per element, as Hugging Face's T5
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


class GatedGeluMlp(nn.Module):
  """wo(gelu_tanh(wi_0 x) * wi_1 x)."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, *, enable_dropout: bool, keep: Array | None = None) -> Array:
    """[B, T, H] -> [B, T, H]; `keep`: [B, 1, F] dropout mask of the hidden units, or None."""
    cfg = self.config
    gate = nn.gelu(Dense(cfg.mlp_dim, ("embed", "mlp"), cfg, name="wi_0")(x), approximate=True)
    linear = Dense(cfg.mlp_dim, ("embed", "mlp"), cfg, name="wi_1")(x)
    hidden = _dropout(cfg, gate * linear, enable_dropout, keep)
    return Dense(x.shape[-1], ("mlp", "embed"), cfg, name="wo")(hidden)


class EncoderLayer(nn.Module):
  config: T5Config

  @staticmethod
  def dropout_sites(cfg: T5Config, length: int) -> dict[str, tuple[int, ...]]:
    """Per-example shapes of the layer's T5X dropout masks (1: shared along that axis)."""
    return {"attention": (length, cfg.num_heads, 1), "attention_out": (1, cfg.emb_dim),
            "mlp": (1, cfg.mlp_dim), "mlp_out": (1, cfg.emb_dim)}

  @nn.compact
  def __call__(self, x: Array, bias: Array, mask: Array, keep: dict[str, Array] | None,
               enable_dropout: bool) -> Array:
    """[B, T, H] -> [B, T, H]; `bias`: positions [1, A, T, T]; `mask`: [B, T] bool, False at padding;
    `keep`: {site: [B, *shape] bool} dropout masks of `dropout_sites`, or None (drawn at each site)."""
    cfg = self.config
    keep = keep or {}
    norm = functools.partial(RMSNorm, cfg.layer_norm_epsilon, cfg.dtype)
    y = norm(name="pre_attention_layer_norm")(x)
    y = MultiHeadAttention(cfg, name="attention")(y, y, bias, mask, enable_dropout=enable_dropout,
                                                  value_keep=keep.get("attention"))
    x = x + _dropout(cfg, y, enable_dropout, keep.get("attention_out"))
    y = norm(name="pre_mlp_layer_norm")(x)
    y = GatedGeluMlp(cfg, name="mlp")(y, enable_dropout=enable_dropout, keep=keep.get("mlp"))
    return nn.with_logical_constraint(x + _dropout(cfg, y, enable_dropout, keep.get("mlp_out")),
                                      ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  config: T5Config

  @staticmethod
  def dropout_sites(cfg: T5Config, length: int, encoder_length: int) -> dict[str, tuple[int, ...]]:
    """Per-example shapes of the layer's T5X dropout masks (1: shared along that axis)."""
    return {"self_attention": (length, cfg.num_heads, 1), "self_attention_out": (1, cfg.emb_dim),
            "cross_attention": (encoder_length, cfg.num_heads, 1), "cross_attention_out": (1, cfg.emb_dim),
            "mlp": (1, cfg.mlp_dim), "mlp_out": (1, cfg.emb_dim)}

  @nn.compact
  def __call__(self, x: Array, encoded: Array, self_bias: Array, encoder_mask: Array,
               keep: dict[str, Array] | None, enable_dropout: bool) -> Array:
    """[B, L, H] decoder states, [B, T, H] encoder output -> [B, L, H]; `self_bias`: [1, A, L, L]
    positions and causal layout; `encoder_mask`: [B, T] bool, False at padding; `keep`: {site:
    [B, *shape] bool} dropout masks of `dropout_sites`, or None (drawn at each site)."""
    cfg = self.config
    keep = keep or {}
    norm = functools.partial(RMSNorm, cfg.layer_norm_epsilon, cfg.dtype)
    y = norm(name="pre_self_attention_layer_norm")(x)
    y = MultiHeadAttention(cfg, name="self_attention")(y, y, self_bias, None, enable_dropout=enable_dropout,
                                                       value_keep=keep.get("self_attention"))
    x = x + _dropout(cfg, y, enable_dropout, keep.get("self_attention_out"))
    y = norm(name="pre_cross_attention_layer_norm")(x)
    y = MultiHeadAttention(cfg, name="encoder_decoder_attention")(
        y, encoded, None, encoder_mask, enable_dropout=enable_dropout, value_keep=keep.get("cross_attention"))
    x = x + _dropout(cfg, y, enable_dropout, keep.get("cross_attention_out"))
    y = norm(name="pre_mlp_layer_norm")(x)
    y = GatedGeluMlp(cfg, name="mlp")(y, enable_dropout=enable_dropout, keep=keep.get("mlp"))
    return nn.with_logical_constraint(x + _dropout(cfg, y, enable_dropout, keep.get("mlp_out")),
                                      ("batch", "length", "embed"))


def _remat(layer: type[nn.Module], policy: str) -> type[nn.Module]:
  """`layer` rematerialized under `policy` (see `T5Config.remat_policy`); its last argument,
  `enable_dropout`, is static. Parameter names are unchanged."""
  if policy == "none":
    return layer
  saveable = {"minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
              "full": jax.checkpoint_policies.nothing_saveable}[policy]
  last_argument = len(inspect.signature(layer.__call__).parameters) - 1  # counting `self`
  return nn.remat(layer, policy=saveable, static_argnums=(last_argument,))


def _key_mask_bias(key_mask: Array) -> Array:
  """[B, Tk] bool -> [B, 1, 1, Tk] float32 additive bias (0 where attended, -1e10 where masked)."""
  return jnp.where(key_mask, 0.0, _MASK_VALUE).astype(jnp.float32)[:, None, None, :]


def _bias_with_padding(bias: Array | None, key_mask: Array | None) -> Array | None:
  """Position bias [1, A, Tq, Tk] plus the padding bias of `key_mask` [B, Tk] (either may be None)."""
  if key_mask is None:
    return bias
  padding = _key_mask_bias(key_mask)
  return padding if bias is None else bias + padding


class Encoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, *, enable_dropout: bool) -> Array:
    """[B, T, H] embedded inputs (prompt included), [B, T] bool mask -> [B, T, H]."""
    cfg = self.config
    length = embedded.shape[1]
    bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(length, length)  # [1, A, T, T]
    x = _dropout(cfg, embedded, enable_dropout)
    keeps = _draw_layer_masks(self, cfg, enable_dropout, cfg.num_encoder_layers, embedded.shape[0],
                              EncoderLayer.dropout_sites(cfg, length))
    layer = _remat(EncoderLayer, cfg.remat_policy)
    for i, keep in enumerate(keeps):
      x = layer(cfg, name=f"layers_{i}")(x, bias, mask, keep, enable_dropout)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name="encoder_norm")(x)
    return _dropout(cfg, x, enable_dropout)


@functools.lru_cache(maxsize=64)
def _choice_self_attention_layout(num_choices: int, length: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions and causal mask of C decoder sequences of length L laid side by side.

  Returns:
    positions [C * L] (position within its own sequence) and mask [C * L, C * L] bool: a query sees the
    keys of its own sequence up to itself, as if each sequence ran alone.
  """
  sequence = np.repeat(np.arange(num_choices), length)
  positions = np.tile(np.arange(length), num_choices)
  mask = (sequence[:, None] == sequence[None, :]) & (positions[None, :] <= positions[:, None])
  return positions, mask


class Decoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, encoded: Array, encoder_mask: Array, *, num_choices: int = 1,
               enable_dropout: bool) -> Array:
    """[B, C * L] embedded decoder inputs (C sequences side by side) -> [B, C * L, V] float32 logits.

    With C > 1 the sequences share the encoder output (and so its cross-attention keys and values) but
    never see each other: self-attention is block-diagonal and positions restart at each sequence.
    """
    cfg = self.config
    length = embedded.shape[1] // num_choices
    positions, causal = _choice_self_attention_layout(num_choices, length)
    table = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")(length, length)
    self_bias = table[:, :, positions[:, None], positions[None, :]]  # [1, A, C*L, C*L]
    self_bias = self_bias + jnp.where(causal, 0.0, _MASK_VALUE)[None, None]
    x = _dropout(cfg, embedded, enable_dropout)
    keeps = _draw_layer_masks(self, cfg, enable_dropout, cfg.num_decoder_layers, embedded.shape[0],
                              DecoderLayer.dropout_sites(cfg, embedded.shape[1], encoded.shape[1]))
    layer = _remat(DecoderLayer, cfg.remat_policy)
    for i, keep in enumerate(keeps):
      x = layer(cfg, name=f"layers_{i}")(x, encoded, self_bias, encoder_mask, keep, enable_dropout)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name="decoder_norm")(x)
    x = _dropout(cfg, x, enable_dropout)
    logits = Dense(cfg.vocab_size, ("embed", "vocab"), cfg, name="logits_dense")(x)
    return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class T5(nn.Module):
  """T5 v1.1 encoder-decoder with an optional soft prompt [P, H] (or [B, P, H]) before the input."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = nn.Embed(
        cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")))
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)

  def embed_inputs(self, tokens: Array, prompt: Array | None = None) -> tuple[Array, Array]:
    """Embeds [B, T] tokens and prepends the prompt.

    Returns:
      embedded [B, P + T, H] in `config.dtype` and its mask [B, P + T] (prompt positions are real).
    """
    embedded = self.token_embedder(tokens)
    mask = tokens > 0
    if prompt is None or prompt.shape[-2] == 0:
      return embedded, mask
    if prompt.ndim == 2:
      prompt = jnp.broadcast_to(prompt, (tokens.shape[0], *prompt.shape))
    if prompt.shape[0] != tokens.shape[0] or prompt.shape[-1] != embedded.shape[-1]:
      raise ValueError(f"Prompt of shape {prompt.shape} does not fit inputs {tokens.shape} with "
                       f"H={embedded.shape[-1]}: expected [P, H] or [B, P, H].")
    prompt = nn.with_logical_constraint(prompt.astype(embedded.dtype), ("batch", "prompt", "prompt_embed"))
    prompt_mask = jnp.ones(prompt.shape[:2], dtype=bool)
    return (jnp.concatenate([prompt, embedded], axis=1),    # [B, P + T, H]
            jnp.concatenate([prompt_mask, mask], axis=1))   # [B, P + T]

  def encode(self, encoder_input_tokens: Array, prompt: Array | None = None, *,
             enable_dropout: bool = False) -> Array:
    """[B, T] tokens (+ prompt [P, H] or [B, P, H]) -> encoder output [B, P + T, H]."""
    embedded, mask = self.embed_inputs(encoder_input_tokens, prompt)
    return self.encoder(embedded, mask, enable_dropout=enable_dropout)

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array, *,
             enable_dropout: bool = False) -> Array:
    """Teacher-forced decoder logits over a shared encoder output.

    Args:
      encoded: [B, P + T, H] encoder output; encoder_mask: [B, P + T] bool.
      decoder_input_tokens: [B, L] shifted targets, or [B, C, L] for C target sequences per example
        (answer choices), decoded side by side against one encoder output.

    Returns:
      [B, L, V] or [B, C, L, V] float32 logits.
    """
    num_choices = 1 if decoder_input_tokens.ndim == 2 else decoder_input_tokens.shape[1]
    flat = decoder_input_tokens.reshape(decoder_input_tokens.shape[0], -1)  # [B, C * L]
    logits = self.decoder(self.token_embedder(flat), encoded, encoder_mask, num_choices=num_choices,
                          enable_dropout=enable_dropout)
    return logits.reshape(*decoder_input_tokens.shape, logits.shape[-1])

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               prompt: Array | None = None, *, enable_dropout: bool = False) -> Array:
    """Teacher-forced logits [B, L, V] (float32) for [B, T] inputs and [B, L] shifted targets."""
    embedded, mask = self.embed_inputs(encoder_input_tokens, prompt)
    encoded = self.encoder(embedded, mask, enable_dropout=enable_dropout)
    return self.decode(encoded, mask, decoder_input_tokens, enable_dropout=enable_dropout)


def encoder_mask(encoder_input_tokens: Array, prompt_length: int = 0) -> Array:
  """[B, T] tokens -> [B, P + T] bool mask of the encoder output (prompt positions always real)."""
  mask = encoder_input_tokens > 0
  if prompt_length:
    mask = jnp.concatenate([jnp.ones((mask.shape[0], prompt_length), bool), mask], axis=1)
  return mask


def shift_right(targets: Array) -> Array:
  """[..., L] targets -> [..., L] decoder inputs (start token 0, last token dropped)."""
  return jnp.pad(targets, [(0, 0)] * (targets.ndim - 1) + [(1, 0)])[..., :-1]


def token_log_likelihoods(logits: Array, targets: Array) -> Array:
  """log p(target) per position: [B, L, V] float32 logits, [B, L] targets -> [B, L] float32."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def init_params(config: T5Config, rng: Array, *, boxed: bool = False):
  """Random parameters of `config`'s model (boxed with logical axes when `boxed`).

  Runs eagerly on purpose: under one `jit`, XLA compiles a separate threefry generator for every
  parameter (65 s on 2 CPU cores for the 430 tensors of T0_3B, and minutes on a GPU), while eager
  initialization compiles one generator per distinct shape and gives bit-identical values.
  """
  tokens = jnp.ones((1, 4), jnp.int32)
  variables = T5(config).init(rng, tokens, tokens)
  return variables["params"] if boxed else nn.unbox(variables["params"])


@dataclasses.dataclass(frozen=True)
class T5Backbone:
  """`interface.PromptedBackbone` for T5 v1.1 / T0: the functions the steps of RoSPr call.

  Holds only its config, so it is hashable and can be a static argument of `jax.jit`.
  """
  config: T5Config

  def token_log_likelihoods(self, params, inputs: Array, targets: Array, prompt: Array | None = None,
                            *, dropout_rng: Array | None = None) -> Array:
    """[B, T] inputs, [B, L] targets (+ prompt) -> [B, L] float32 teacher-forced log p per token."""
    logits = T5(self.config).apply(
        {"params": params}, inputs, shift_right(targets), prompt, enable_dropout=dropout_rng is not None,
        rngs=None if dropout_rng is None else {"dropout": dropout_rng})  # [B, L, V]
    return token_log_likelihoods(logits, targets)

  def choice_scores(self, params, inputs: Array, targets: Array, prompt: Array | None = None) -> Array:
    """[B, T] inputs, [B, C, L] choices -> [B, C] summed log p; each input is encoded once."""
    model = T5(self.config)
    encoded = model.apply({"params": params}, inputs, prompt, method=T5.encode)  # [B, P + T, H]
    prompt_length = 0 if prompt is None else prompt.shape[-2]
    logits = model.apply({"params": params}, encoded, encoder_mask(inputs, prompt_length),
                         shift_right(targets), method=T5.decode)  # [B, C, L, V]
    return summed_target_log_likelihoods(token_log_likelihoods(logits, targets), targets)

  def pooled_encoding(self, params, tokens: Array) -> Array:
    """[B, T] tokens -> [B, H] float32 mean of the encoder output over non-pad tokens."""
    hidden = T5(self.config).apply({"params": params}, tokens, method=T5.encode)  # [B, T, H]
    mask = (tokens > 0)[..., None]  # [B, T, 1]
    summed = jnp.sum(jnp.where(mask, hidden.astype(jnp.float32), 0.0), axis=1)  # [B, H]
    return summed / jnp.maximum(jnp.sum(mask, axis=1), 1).astype(jnp.float32)

  def embedding_table(self, params) -> Array:
    """[V, H] input embedding."""
    return params["token_embedder"]["embedding"]

  def abstract_params(self):
    """Boxed `ShapeDtypeStruct`s with T5X's logical axes (nothing is computed)."""
    return jax.eval_shape(lambda: init_params(self.config, jax.random.PRNGKey(0), boxed=True))

  def init_params(self, rng: Array):
    """Random parameters of the whole model (see `init_params`)."""
    return init_params(self.config, rng)


def summed_target_log_likelihoods(log_likelihoods: Array, targets: Array) -> Array:
  """[..., L] token log p and targets -> [...] sum over real tokens; -inf where a row has none."""
  real = targets > 0
  total = jnp.sum(jnp.where(real, log_likelihoods, 0.0), axis=-1)
  return jnp.where(jnp.any(real, axis=-1), total, -jnp.inf)

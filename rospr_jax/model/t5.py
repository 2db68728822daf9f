"""T5 v1.1 / T0 encoder-decoder in Flax linen, with a soft prompt prepended to the encoder input.

Parameter names and logical axes are T5X's, so T5X checkpoints map one to one and Hugging Face
checkpoints map by a fixed renaming (see `checkpoints.py`). Numerics follow T5 v1.1 exactly (the
layers: `t5_layers.py`): bucketed relative position biases (one table per stack, bidirectional in the
encoder), untied float32 logits. Activations use `config.dtype`. `t5_backbone.py` wraps the model as
the `PromptedBackbone` the steps of RoSPr call.

Vocabulary (docs/design.md): B batch, T encoder length, L decoder length, P prompt length, H model dim,
A heads, Dh head dim, V vocabulary.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rospr_jax.model.config import T5Config
from rospr_jax.model.t5_layers import (MASK_VALUE, Dense, GatedGeluMlp, MultiHeadAttention,
                                       RelativePositionBias, RMSNorm, draw_layer_masks, dropout)

Array = jax.Array


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
    x = x + dropout(cfg, y, enable_dropout, keep.get("attention_out"))
    y = norm(name="pre_mlp_layer_norm")(x)
    y = GatedGeluMlp(cfg, name="mlp")(y, enable_dropout=enable_dropout, keep=keep.get("mlp"))
    return nn.with_logical_constraint(x + dropout(cfg, y, enable_dropout, keep.get("mlp_out")),
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
    x = x + dropout(cfg, y, enable_dropout, keep.get("self_attention_out"))
    y = norm(name="pre_cross_attention_layer_norm")(x)
    y = MultiHeadAttention(cfg, name="encoder_decoder_attention")(
        y, encoded, None, encoder_mask, enable_dropout=enable_dropout, value_keep=keep.get("cross_attention"))
    x = x + dropout(cfg, y, enable_dropout, keep.get("cross_attention_out"))
    y = norm(name="pre_mlp_layer_norm")(x)
    y = GatedGeluMlp(cfg, name="mlp")(y, enable_dropout=enable_dropout, keep=keep.get("mlp"))
    return nn.with_logical_constraint(x + dropout(cfg, y, enable_dropout, keep.get("mlp_out")),
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


class Encoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, *, enable_dropout: bool) -> Array:
    """[B, T, H] embedded inputs (prompt included), [B, T] bool mask -> [B, T, H]."""
    cfg = self.config
    length = embedded.shape[1]
    bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(length, length)  # [1, A, T, T]
    x = dropout(cfg, embedded, enable_dropout)
    keeps = draw_layer_masks(self, cfg, enable_dropout, cfg.num_encoder_layers, embedded.shape[0],
                             EncoderLayer.dropout_sites(cfg, length))
    layer = _remat(EncoderLayer, cfg.remat_policy)
    for i, keep in enumerate(keeps):
      x = layer(cfg, name=f"layers_{i}")(x, bias, mask, keep, enable_dropout)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name="encoder_norm")(x)
    return dropout(cfg, x, enable_dropout)


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
    self_bias = self_bias + jnp.where(causal, 0.0, MASK_VALUE)[None, None]
    x = dropout(cfg, embedded, enable_dropout)
    keeps = draw_layer_masks(self, cfg, enable_dropout, cfg.num_decoder_layers, embedded.shape[0],
                             DecoderLayer.dropout_sites(cfg, embedded.shape[1], encoded.shape[1]))
    layer = _remat(DecoderLayer, cfg.remat_policy)
    for i, keep in enumerate(keeps):
      x = layer(cfg, name=f"layers_{i}")(x, encoded, self_bias, encoder_mask, keep, enable_dropout)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name="decoder_norm")(x)
    x = dropout(cfg, x, enable_dropout)
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


def init_params(config: T5Config, rng: Array, *, boxed: bool = False):
  """Random parameters of `config`'s model (boxed with logical axes when `boxed`).

  Runs eagerly on purpose: under one `jit`, XLA compiles a separate threefry generator for every
  parameter (65 s on 2 CPU cores for the 430 tensors of T0_3B, and minutes on a GPU), while eager
  initialization compiles one generator per distinct shape and gives bit-identical values.
  """
  tokens = jnp.ones((1, 4), jnp.int32)
  variables = T5(config).init(rng, tokens, tokens)
  return variables["params"] if boxed else nn.unbox(variables["params"])

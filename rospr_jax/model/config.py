"""T5 v1.1 / T0 model configuration.

A frozen dataclass that keeps the Flax modules free of keyword plumbing (the T5X convention).
Named sizes follow the published checkpoints:

| name  | checkpoint              | H     | mlp    | heads x d_kv | layers (enc + dec) |
|-------|-------------------------|-------|--------|--------------|--------------------|
| tiny  | tests and the demo      | 64    | 128    | 4 x 16       | 2 + 2              |
| small | T5 v1.1 small shape     | 512   | 1024   | 6 x 64       | 8 + 8              |
| xl    | bigscience/T0_3B        | 2048  | 5120   | 32 x 64      | 24 + 24            |
| xxl   | bigscience/T0, T0pp     | 4096  | 10240  | 64 x 64      | 24 + 24            |
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# Special token ids of the T5 SentencePiece vocabulary (and of the vocabularies this project trains).
PAD_ID = 0
EOS_ID = 1
UNK_ID = 2

ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn")
# Fields that change only training (dropout, what the backward pass keeps), not what the model computes.
TRAINING_ONLY_FIELDS = ("dropout_rate", "dropout_broadcast_dims", "remat_policy")
REMAT_POLICIES = ("none", "minimal", "full")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Shape and numerics of a T5 v1.1 encoder-decoder.

  Attributes:
    vocab_size: rows of the token embedding and columns of the (untied) logits.
    emb_dim: model dimension H.
    num_heads: attention heads.
    head_dim: per-head dimension (d_kv); heads * head_dim need not equal H.
    mlp_dim: hidden size of the gated-GELU feed-forward.
    num_encoder_layers, num_decoder_layers: depth of each stack.
    relative_attention_num_buckets, relative_attention_max_distance: relative position scheme.
    dropout_rate: dropout used when `deterministic=False`.
    dropout_broadcast_dims: axes along which one dropout mask is shared: (-2,) or (). T5X's (-2,)
      (the default, as Mesh TensorFlow T5, with which T0 was trained) draws one mask per sequence,
      shared along the length of [B, T, H] states, and one per key column of [B, A, Tq, Tk] attention
      weights, shared by all queries (applied to the values, which is the same product and lets the
      fused attention kernels train with dropout): about T times fewer random bits than () (one draw
      per element, as Hugging Face's T5 does; einsum attention only while dropout is on). With (-2,)
      the masks of all layers of a stack come from one random draw (few random-number generators to
      compile, whatever the depth); () draws at every site.
    layer_norm_epsilon: RMS norm epsilon (computed in float32).
    dtype: activation dtype (bfloat16 on accelerators); logits are always float32.
    param_dtype: dtype parameters are created in by `init`.
    attention_impl: "einsum" (plain XLA einsums, any backend), or an implementation of
      `jax.nn.dot_product_attention`: "xla", or "cudnn" (the fused cuDNN kernel on NVIDIA GPUs, which
      takes T5's relative-position bias; bfloat16 / float16 only; odd lengths reach it padded by one
      masked position, since it trains with a bias only at even lengths). Per-element attention dropout
      (`dropout_broadcast_dims=()`), when enabled, always uses the einsum path.
    fused_padding: how the fused attention paths take the key padding: "bias" (added to the position
      bias, one [B, A, Tq, Tk] array per layer, whose gradient cuDNN also writes while training: the
      form run on an H100 so far) or "lengths" (key lengths [B] and a batch-free [1, A, Tq, Tk]
      position bias; padding must follow the tokens in each row, as in every batch this project
      builds).
    remat_policy: what each encoder and decoder layer keeps for the backward pass (forward-only calls
      are unaffected): "none" keeps every activation; "minimal" keeps the outputs of the projections
      (matmuls without batch dimensions) and recomputes attention weights, dropout masks and
      element-wise ops, for about 1% more FLOPs (T5X's "minimal"); "full" keeps only each layer's
      input and recomputes the layer.
  """

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.0
  dropout_broadcast_dims: tuple[int, ...] = (-2,)
  layer_norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_impl: str = "einsum"
  fused_padding: str = "bias"
  remat_policy: str = "none"

  def __post_init__(self):
    if self.attention_impl not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"Unknown attention_impl {self.attention_impl!r}; "
                       f"choose one of {ATTENTION_IMPLEMENTATIONS}.")
    if tuple(self.dropout_broadcast_dims) not in ((-2,), ()):
      raise ValueError(f"dropout_broadcast_dims must be (-2,) (T5X: masks shared along the length) or () "
                       f"(one draw per element), not {self.dropout_broadcast_dims!r}.")
    if self.fused_padding not in ("bias", "lengths"):
      raise ValueError(f"fused_padding must be 'bias' or 'lengths', not {self.fused_padding!r}.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat_policy {self.remat_policy!r}; choose one of {REMAT_POLICIES}.")

  def inference_fields(self) -> dict[str, str]:
    """Every field that changes what the model computes (not `TRAINING_ONLY_FIELDS`), as text.

    Dtypes are written by name ("bfloat16"), however they were given (`jnp.bfloat16`, a string, a
    numpy dtype), so the same model always gives the same text.
    """
    return {f.name: (jnp.dtype(value).name if f.name in ("dtype", "param_dtype") else str(value))
            for f in dataclasses.fields(self) if f.name not in TRAINING_ONLY_FIELDS
            for value in [getattr(self, f.name)]}

  def replace(self, **changes) -> "T5Config":
    return dataclasses.replace(self, **changes)

  @property
  def joined_kv(self) -> int:
    return self.num_heads * self.head_dim

  def num_parameters(self) -> int:
    """Number of parameters of the model this config describes."""
    h, kv, mlp = self.emb_dim, self.joined_kv, self.mlp_dim
    attention = 4 * h * kv
    ffn = 3 * h * mlp
    encoder = self.num_encoder_layers * (attention + ffn + 2 * h) + h
    decoder = self.num_decoder_layers * (2 * attention + ffn + 3 * h) + h
    relpos = 2 * self.num_heads * self.relative_attention_num_buckets
    return 2 * self.vocab_size * h + encoder + decoder + relpos


SIZES: dict[str, T5Config] = {
    "tiny": T5Config(vocab_size=512, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                     num_encoder_layers=2, num_decoder_layers=2),
    "small": T5Config(vocab_size=32128, emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024,
                      num_encoder_layers=8, num_decoder_layers=8),
    "xl": T5Config(vocab_size=32128, emb_dim=2048, num_heads=32, head_dim=64, mlp_dim=5120,
                   num_encoder_layers=24, num_decoder_layers=24),
    "xxl": T5Config(vocab_size=32128, emb_dim=4096, num_heads=64, head_dim=64, mlp_dim=10240,
                    num_encoder_layers=24, num_decoder_layers=24),
}


def get_config(name: str, **overrides) -> T5Config:
  """Returns the named size (`tiny`, `small`, `xl`, `xxl`) with `overrides` applied."""
  if name not in SIZES:
    raise ValueError(f"Unknown model size {name!r}; known sizes: {sorted(SIZES)}.")
  return SIZES[name].replace(**overrides)

"""`T5Backbone`: T5 v1.1 / T0 as the `interface.PromptedBackbone` that the steps of RoSPr call, with the
tensor functions it scores with (shifted decoder inputs, encoder masks, per-token and summed log p).

Vocabulary (docs/design.md): B batch, T encoder length, L decoder length, C choices, P prompt length,
H model dim, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rospr_jax.model.config import T5Config
from rospr_jax.model.t5 import T5, init_params

Array = jax.Array


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

"""Rank classification with T0's protocol: the score of an answer choice is the sum of its tokens'
log-probabilities given the input (no length normalization); the prediction is the argmax.

The fast path encodes each input once (with its soft prompt) and decodes all C choices side by side
against that one encoder output, so the cross-attention keys and values are computed once per
example. `score_choices_naive` runs every (example, choice) pair through the whole model, as T0's
own evaluation did; it is the reference the fast path is tested against.

Targets are [B, C, L] token ids with EOS and 0-padding; an all-padding row is an absent choice and
scores -inf.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rospr_jax.model import PromptedBackbone, summed_target_log_likelihoods

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("model",))
def score_choices(params, inputs: Array, targets: Array, prompt: Array | None = None, *,
                  model: PromptedBackbone) -> Array:
  """Encode-once scores (`model.choice_scores`).

  Args:
    params: model parameters.
    inputs: [B, T] input ids without EOS, 0-padded.
    targets: [B, C, L] choice ids with EOS, 0-padded.
    prompt: None, [P, H] shared by the batch, or [B, P, H] one per example.
    model: the backbone (`PromptedBackbone`, hashable: a static argument).

  Returns:
    [B, C] float32 summed log-likelihoods (-inf for absent choices).
  """
  return model.choice_scores(params, inputs, targets, prompt)


@functools.partial(jax.jit, static_argnames=("model",))
def score_choices_naive(params, inputs: Array, targets: Array, prompt: Array | None = None, *,
                        model: PromptedBackbone) -> Array:
  """Reference scores: every (example, choice) pair through the whole model. Same contract."""
  batch, num_choices, length = targets.shape
  repeated_inputs = jnp.repeat(inputs, num_choices, axis=0)  # [B * C, T]
  if prompt is not None and prompt.ndim == 3:
    prompt = jnp.repeat(prompt, num_choices, axis=0)  # [B * C, P, H]
  flat_targets = targets.reshape(batch * num_choices, length)
  log_likelihoods = model.token_log_likelihoods(params, repeated_inputs, flat_targets, prompt)
  return summed_target_log_likelihoods(log_likelihoods, flat_targets).reshape(batch, num_choices)

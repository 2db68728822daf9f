"""What RoSPr asks of a backbone: one small protocol, and the registry that finds a config's model.

The steps never name a model class. Prompt training asks for token log-likelihoods, evaluation for
choice scores, the retriever for a mean-pooled encoding, the prompt initializers for the embedding
table, and partitioning for abstract parameters with logical axes. A new backbone family is one module
that implements `PromptedBackbone` for its config class (and calls `register_family`), plus one
checkpoint importer in `rospr_jax/model/checkpoints.py`.

Every method is a pure function of `params` and arrays, safe to call under `jax.jit` with the
backbone object (hashable: it holds only its config) as a static argument. The steps (scoring, the
prompt step, the retriever's encoding) take that object, never a config: `model_for(config)` is called
only where a model is assembled (`rospr_jax.backbone.Backbone.model`, the trainer, the commands).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import jax

Array = jax.Array


@runtime_checkable
class PromptedBackbone(Protocol):
  """A frozen encoder-decoder that takes a soft prompt [P, H] (or [B, P, H]) before its input."""

  config: Any

  def token_log_likelihoods(self, params, inputs: Array, targets: Array, prompt: Array | None = None,
                            *, dropout_rng: Array | None = None) -> Array:
    """Teacher-forced log p of each target token.

    Args:
      inputs: [B, T] int32 input ids (0 = padding); targets: [B, L] int32 ids (0 = padding).
      prompt: None, [P, H] shared by the batch, or [B, P, H] one per example.
      dropout_rng: a PRNG key to train with dropout; None computes deterministically.

    Returns:
      [B, L] float32 (padding positions hold the log p of id 0: callers mask them).
    """

  def choice_scores(self, params, inputs: Array, targets: Array, prompt: Array | None = None) -> Array:
    """T0's rank-classification score: each input encoded once, its C choices decoded side by side.

    Args:
      inputs: [B, T] input ids without EOS; targets: [B, C, L] choice ids with EOS, 0-padded (an
        all-padding row is an absent choice). prompt: as in `token_log_likelihoods`.

    Returns:
      [B, C] float32 summed log-likelihoods over real tokens (-inf for absent choices).
    """

  def pooled_encoding(self, params, tokens: Array) -> Array:
    """[B, T] int32 tokens (0 = pad) -> [B, H] float32 mean of the encoder output over real tokens
    (the zero vector for an all-padding row)."""

  def embedding_table(self, params) -> Array:
    """The input embedding [V, H], from which prompt initializers draw."""

  def abstract_params(self) -> Any:
    """The parameter tree as `jax.ShapeDtypeStruct`s boxed with their logical axis names."""

  def init_params(self, rng: Array) -> Any:
    """Random parameters (unboxed): a stand-in backbone or retriever where no checkpoint is given."""


_FAMILIES: dict[type, Callable[[Any], PromptedBackbone]] = {}


def register_family(config_type: type, factory: Callable[[Any], PromptedBackbone]) -> None:
  """Makes `model_for` build `factory(config)` for configs of `config_type`."""
  _FAMILIES[config_type] = factory


def model_for(config: Any) -> PromptedBackbone:
  """The backbone that `config` describes (a T5 v1.1 / T0 for a `T5Config`)."""
  factory = _FAMILIES.get(type(config))
  if factory is None:
    known = ", ".join(sorted(t.__name__ for t in _FAMILIES)) or "none"
    raise TypeError(f"No backbone family is registered for {type(config).__name__} (known: {known}).")
  return factory(config)

"""The one backbone loader: a frozen T5 / T0 with its compute dtype, vocabulary and fingerprint.

Every command (train-prompts, evaluate, score, retrieve's VAR, the demo) loads its model here, so the
same checkpoint always gives the same config, the same canonical dtype name and the same fingerprint,
whichever command recorded it in a manifest. The model gin files (`gin/models/*.gin`) bind
`load_backbone` with the macros CHECKPOINT, DTYPE, ATTENTION and VOCABULARY for every run file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import gin
import jax
import jax.numpy as jnp

from rospr_jax import storage, tokenization
from rospr_jax.model import (PromptedBackbone, T5Config, get_config, init_params, load_fingerprinted,
                             model_for)
from rospr_jax.model.config import ATTENTION_IMPLEMENTATIONS

DTYPES = ("float32", "bfloat16", "float16")
# The fields that make a named size (`--gin.SIZE`) a shape check of a checkpoint.
SHAPE_FIELDS = ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                "num_decoder_layers")


def dtype_name(dtype: Any) -> str:
  """The canonical name of a compute dtype ("bfloat16"), refusing what the backbone cannot run in."""
  try:
    name = jnp.dtype(dtype).name
  except TypeError:
    raise ValueError(f"Unknown dtype {dtype!r}; use one of {list(DTYPES)}.") from None
  if name not in DTYPES:
    raise ValueError(f"dtype {name!r} is not supported; use one of {list(DTYPES)}.")
  return name


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A frozen model.

  Attributes:
    config: its config; `dtype` and `param_dtype` are the compute dtype, `attention_impl` the kernel.
    params: nested dict of parameters with T5X names (host arrays).
    fingerprint: 16 hex digits of the checkpoint's weights and shape (`checkpoint_fingerprint`: the
      same for its HF and T5X forms and any load dtype), or of the random init.
    description: what a manifest records about it (checkpoint path or random size, dtype; for a
      checkpoint or vocabulary read from a URL, the URLs, under "checkpoint" and "vocabulary").
    vocabulary: the SentencePiece model scoring and training use (None: random weights without one).
  """
  config: T5Config
  params: Any
  fingerprint: str
  description: dict
  vocabulary: str | None = None

  @property
  def dtype(self) -> str:
    return dtype_name(self.config.dtype)

  @property
  def model(self) -> PromptedBackbone:
    """What the steps call: token log-likelihoods, choice scores, pooled encodings, ..."""
    return model_for(self.config)

  def tokenizer(self) -> tokenization.Tokenizer:
    """The backbone's tokenizer (refused when it has more pieces than the model has embeddings)."""
    if self.vocabulary is None:
      if "checkpoint" in self.description:  # names the files looked for, and both ways to give one
        tokenization.find_sentencepiece_model(self.description["checkpoint"])
      raise ValueError(f"The backbone {self.description} has no vocabulary: give VOCABULARY (a "
                       "SentencePiece model).")
    tokenizer = tokenization.Tokenizer(self.vocabulary)
    where = self.description.get("checkpoint")
    tokenizer.check_fits(self.config.vocab_size,
                         f"the checkpoint {where}" if where else f"the backbone {self.description}")
    return tokenizer


@gin.configurable
def load_backbone(checkpoint: str | None = None, *, size: str | None = None, dtype: Any = "float32",
                  attention: str = "einsum", vocabulary: str | None = None, seed: int = 0) -> Backbone:
  """Loads the frozen backbone, parameters and activations in `dtype`.

  Args:
    checkpoint: a Hugging Face or T5X checkpoint (e.g. bigscience/T0_3B); None for random weights.
    size: a named size (`tiny`, `small`, `xl`, `xxl`). With a checkpoint it is checked against the
      checkpoint's shape; without one the model is initialized randomly (tests, benchmarks).
    dtype: parameter and compute dtype ("bfloat16" on accelerators).
    attention: `T5Config.attention_impl` ("einsum" anywhere, "cudnn" on NVIDIA GPUs).
    vocabulary: the SentencePiece model (default: the one in the checkpoint directory, if any).
    seed: seed of random weights.
  """
  name = dtype_name(dtype)
  if attention not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"Unknown attention {attention!r}; use one of {list(ATTENTION_IMPLEMENTATIONS)}.")
  if attention == "cudnn" and jax.default_backend() != "gpu":
    raise ValueError(f"attention 'cudnn' needs an NVIDIA GPU; this run's backend is "
                     f"{jax.default_backend()!r}: use attention 'einsum'.")
  compute = jnp.dtype(name)
  if checkpoint is None:
    if size is None:
      raise ValueError("load_backbone: give a checkpoint path or a model size.")
    config = get_config(size, dtype=compute, param_dtype=compute, attention_impl=attention)
    params = init_params(config, jax.random.PRNGKey(seed))
    fingerprint = hashlib.sha256(f"random-init {size} seed={seed}".encode()).hexdigest()[:16]
    description = {"random_init": size, "seed": seed, "dtype": name}
  else:
    storage.require_local(checkpoint, "CHECKPOINT", "load_backbone")
    storage.require_local(vocabulary, "VOCABULARY", "load_backbone")
    # The fingerprint is of the stored tensors (hashed before the cast), whatever `dtype` is.
    config, params, fingerprint = load_fingerprinted(checkpoint, compute)
    config = config.replace(dtype=compute, param_dtype=compute, attention_impl=attention)
    if size is not None:
      expected = get_config(size)
      diff = {f: (getattr(config, f), getattr(expected, f)) for f in SHAPE_FIELDS
              if getattr(config, f) != getattr(expected, f)}
      if diff:
        raise ValueError(f"{storage.absolute(checkpoint)} is not the {size!r} shape: (checkpoint, {size}) "
                         f"differ in {diff}.")
    # Records name what was given: a local copy (`storage.copies.LocalCopy`) by its URL.
    description = {"checkpoint": storage.absolute(checkpoint), "dtype": name}
    if vocabulary is None:
      vocabulary = tokenization.find_sentencepiece_model(checkpoint, required=False)
      if vocabulary and storage.is_url(description["checkpoint"]):
        description["vocabulary"] = f"{description['checkpoint'].rstrip('/')}/{os.path.relpath(vocabulary, checkpoint)}"
    elif storage.absolute(vocabulary) != os.path.abspath(vocabulary):
      description["vocabulary"] = storage.absolute(vocabulary)
  backbone = Backbone(config, params, fingerprint, description,
                      os.path.abspath(vocabulary) if vocabulary else None)
  if vocabulary is not None:
    backbone.tokenizer()  # a missing, unreadable or too large vocabulary fails here, before any work
  return backbone

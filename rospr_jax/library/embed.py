"""Retriever embeddings: the mean over non-pad tokens of a T5 encoder's last hidden states.

Texts arrive as token ids (inputs are tokenized without EOS, as T0 does). They are sorted by length,
grouped into a few padded lengths (powers of two up to `max_length`) and run in jitted batches of a
fixed number of rows per bucket (about `tokens_per_batch` tokens), so a library of any size compiles
once per bucket. Padding never changes an embedding: the encoder masks padded keys and the mean skips
padded positions. With a partitioner (one partition: data parallel), each batch is split over its
mesh's `data` axis (parameters replicated), so all local accelerators embed at once; the embeddings
are those of one device. A partitioner over several processes (`data_partitioner`) splits each batch
over all of them and gathers the rows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rospr_jax.model import PromptedBackbone, T5Config, model_for, partitioning

# Input tokens kept per text, and padded tokens per batch (build-library's --max-length, --tokens-per-batch).
DEFAULT_MAX_LENGTH = 512
DEFAULT_TOKENS_PER_BATCH = 65_536
# The parameters an embedding depends on: the token embedding and the encoder stack.
ENCODER_PREFIXES = ("token_embedder", "encoder")


def bucket_lengths(max_length: int, min_bucket: int = 16) -> list[int]:
  """Padded lengths: powers of two from `min_bucket`, capped by (and ending at) `max_length`."""
  if max_length < 1 or min_bucket < 1:
    raise ValueError(f"max_length ({max_length}) and min_bucket ({min_bucket}) must be >= 1.")
  buckets, length = [], min_bucket
  while length < max_length:
    buckets.append(length)
    length *= 2
  return buckets + [max_length]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict) and not hasattr(tree, "items"):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
  return out


def retriever_fingerprint(config: T5Config, params) -> str:
  """sha256 of the config (its fields that change what the model computes) and of every parameter the
  encoder uses (names, dtypes, shapes, bytes)."""
  digest = hashlib.sha256()
  digest.update(json.dumps(config.inference_fields(), sort_keys=True).encode())
  flat = _flatten(nn.unbox(params))
  used = sorted(name for name in flat if name.split("/")[0] in ENCODER_PREFIXES)
  if not used:
    raise ValueError(f"The retriever parameters have no token_embedder or encoder entries "
                     f"(found: {sorted(flat)[:8]}).")
  for name in used:
    value = np.ascontiguousarray(np.asarray(flat[name]))
    if value.dtype == object:
      raise ValueError(f"Retriever parameter {name} is a {type(flat[name]).__name__}, not an array.")
    digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


@functools.partial(jax.jit, static_argnames=("model",))
def mean_encoder_states(params, tokens: jax.Array, *, model: PromptedBackbone) -> jax.Array:
  """[B, T] int32 tokens (0 = pad) -> [B, H] float32 mean of the encoder output over non-pad tokens
  (`model.pooled_encoding`; `model` is hashable, a static argument).

  A row without any token (batch padding) gives the zero vector.
  """
  return model.pooled_encoding(params, tokens)


def embedding_step(model: PromptedBackbone) -> partitioning.MeshStep:
  """The step `Embedder.embed` calls: `step(params, tokens [B, T]) -> [B, H]` (`mean_encoder_states`,
  outside any mesh scope: the parameters are replicated, the batch split by its sharding); `step.lower`
  for a plan."""
  return partitioning.MeshStep(mean_encoder_states, None, model=model)


class Embedder:
  """Embeds token sequences with a T5 encoder (the retriever)."""

  def __init__(self, model: PromptedBackbone, params, *, max_length: int = DEFAULT_MAX_LENGTH,
               tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH, min_bucket: int = 16,
               partitioner: partitioning.Partitioner | None = None):
    """Args:
      model: the retriever's model (`PromptedBackbone`; `model.config` its config).
      params: its parameters (only token_embedder and encoder are used).
      max_length: inputs longer than this are truncated (and counted in `truncated`).
      tokens_per_batch: rows per batch = max(1, tokens_per_batch // bucket length), rounded up to a
        multiple of the mesh's `data` axis.
      min_bucket: the smallest padded length.
      partitioner: a data-parallel `Partitioner` to split batches over: this host's devices
        (`local_data_partitioner`) or every process's (`data_partitioner`, all processes then embed the
        same texts); None: one device.
    """
    self.model, self.config = model, model.config
    self.params = {k: v for k, v in nn.unbox(params).items() if k in ENCODER_PREFIXES}
    self.partitioner = partitioner
    self.step = embedding_step(self.model)
    self.buckets = bucket_lengths(max_length, min(min_bucket, max_length))
    self.max_length = max_length
    self.tokens_per_batch = tokens_per_batch
    self.fingerprint = retriever_fingerprint(self.config, self.params)
    self.truncated = 0  # inputs cut to max_length so far
    if partitioner is not None:
      self.params = jax.device_put(self.params, partitioner.replicated)

  @property
  def dim(self) -> int:
    return self.config.emb_dim

  def description(self) -> dict:
    """What to record about the retriever in a library manifest."""
    return {"config": self.config.inference_fields(),
            "max_length": self.max_length, "pooling": "mean over non-pad encoder states"}

  def rows_per_batch(self, bucket: int) -> int:
    rows = max(1, self.tokens_per_batch // bucket)
    data = 1 if self.partitioner is None else self.partitioner.data_size
    return -(-rows // data) * data

  def embed(self, sequences: Sequence[Sequence[int]], normalize: bool = True) -> np.ndarray:
    """Embeds token sequences.

    Args:
      sequences: [B] token id lists (no padding, at least one token each).
      normalize: scale each embedding to unit norm (cosine retrieval).

    Returns:
      [B, H] float32, in the order of `sequences`.
    """
    lengths = np.array([len(s) for s in sequences], np.int64)
    if len(sequences) and lengths.min() == 0:
      raise ValueError(f"Sequence {int(np.argmin(lengths))} is empty: nothing to embed.")
    out = np.zeros((len(sequences), self.dim), np.float32)
    clipped = np.minimum(lengths, self.max_length)
    self.truncated += int((lengths > self.max_length).sum())
    bucket_of = np.searchsorted(self.buckets, clipped)  # index of the smallest bucket >= length
    for b, bucket in enumerate(self.buckets):
      members = np.flatnonzero(bucket_of == b)
      members = members[np.argsort(clipped[members], kind="stable")]
      rows = self.rows_per_batch(bucket)
      for start in range(0, len(members), rows):
        chunk = members[start:start + rows]
        tokens = np.zeros((rows, bucket), np.int32)  # fixed [rows, bucket]: one compile per bucket
        for r, i in enumerate(chunk):
          seq = np.asarray(sequences[i][:self.max_length], np.int32)
          if seq.min() <= 0 or seq.max() >= self.config.vocab_size:
            bad = int(seq.min()) if seq.min() <= 0 else int(seq.max())
            raise ValueError(f"Sequence {int(i)} holds token id {bad}; ids must be in [1, "
                             f"{self.config.vocab_size}) (0 is padding).")
          tokens[r, :len(seq)] = seq
        if self.partitioner is None:
          batch = jnp.asarray(tokens)
        else:  # each process fills its own devices' rows (every process holds the same tokens)
          batch = self.partitioner.place(tokens, self.partitioner.batch_sharding(2))
        means = self.step(self.params, batch)
        if not means.is_fully_addressable:  # a mesh over several processes: gather every row
          from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
          means = multihost_utils.process_allgather(means, tiled=True)
        out[chunk] = np.asarray(means)[:len(chunk)]
    if normalize and len(out):
      out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out

  def embed_texts(self, texts: Sequence[str], tokenize: Callable[[str], Sequence[int]],
                  normalize: bool = True) -> np.ndarray:
    """Tokenizes (without EOS) and embeds texts. [B] strings -> [B, H] float32."""
    sequences = []
    for i, text in enumerate(texts):
      ids = list(tokenize(text))
      if not ids:
        raise ValueError(f"Text {i} ({text!r:.80}) tokenizes to nothing.")
      sequences.append(ids)
    before = self.truncated
    out = self.embed(sequences, normalize=normalize)
    if self.truncated > before:
      logging.info("Truncated %d of %d texts to %d tokens.", self.truncated - before, len(texts),
                   self.max_length)
    return out


def load_embedder(checkpoint: str | None = None, *, random_size: str | None = None, seed: int = 0,
                  min_vocab_size: int = 0, dtype: str = "float32", **kwargs) -> Embedder:
  """An embedder from a checkpoint (Hugging Face or T5X), or with random weights of a named size.

  Random weights (`random_size`, e.g. "tiny") serve the offline demo and tests; only the encoder is
  initialized, with at least `min_vocab_size` embeddings (the vocabulary's size). `kwargs` go to
  `Embedder` (max_length, tokens_per_batch, min_bucket, partitioner).
  """
  if (checkpoint is None) == (random_size is None):
    raise ValueError("Give exactly one of a retriever checkpoint and a random retriever size.")
  compute_dtype = jnp.dtype(dtype)
  if checkpoint is not None:
    from rospr_jax.backbone import load_backbone  # pylint: disable=g-import-not-at-top
    loaded = load_backbone(checkpoint, dtype="float32")  # weights in float32, computed in `dtype`
    config, params = loaded.config, loaded.params
  else:
    from rospr_jax.model import get_config  # pylint: disable=g-import-not-at-top
    config = get_config(random_size)
    config = config.replace(vocab_size=max(config.vocab_size, min_vocab_size))
    params = model_for(config).init_params(jax.random.PRNGKey(seed))  # Embedder keeps the encoder
  return Embedder(model_for(config.replace(dtype=compute_dtype)), params, **kwargs)


def data_partitioner() -> partitioning.Partitioner | None:
  """A data-parallel partitioner over the devices of every process when there are several, else None:
  with several processes each embeds its share of every batch (all of them embed the same texts)."""
  return partitioning.Partitioner(1) if jax.device_count() > 1 else None


def local_data_partitioner() -> partitioning.Partitioner | None:
  """A data-parallel partitioner over this host's devices when it has several, else None."""
  devices = jax.local_devices()
  return partitioning.Partitioner(1, devices=devices) if len(devices) > 1 else None

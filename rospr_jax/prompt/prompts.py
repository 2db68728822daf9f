"""Soft prompts: the Flax module, its initializers and the per-source prompt table.

Initializers follow the Flax closure convention `init(rng, shape) -> Array` with `shape = (P, H)`, and
refuse a shape they cannot fill with a ValueError that names both shapes:

- `random_uniform(scale)`: U[-scale, scale) (Lester et al. use scale 0.5).
- `from_sample_of_embeddings(embeddings, population_size)`: P rows drawn without replacement from the
  first `population_size` token embeddings (SentencePiece orders its vocabulary by frequency, so the
  first 5,000 ids are the most frequent tokens).
- `from_class_labels(embeddings, labels, fallback)`: row i = the mean of the sub-token embeddings of
  label i; the remaining rows come from `fallback` (vocabulary sampling by default).
- `from_array(array)` / `from_file(path)`: a given [P, H] prompt (e.g. a `.npy` export).

Vocabulary: S sources, P prompt length, H model dim, V vocabulary, B batch, T input length.
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rospr_jax.prompt import export

logger = logging.getLogger(__name__)

Array = jax.Array
Initializer = Callable[[Array, Sequence[int]], Array]

DEFAULT_LENGTH = 100
DEFAULT_POPULATION = 5000
PROMPT_AXES = ("prompt", "prompt_embed")


def _check_2d(shape: Sequence[int], name: str) -> tuple[int, int]:
  shape = tuple(int(d) for d in shape)
  if len(shape) != 2:
    raise ValueError(f"{name}: a prompt has shape [P, H]; asked for shape {shape}.")
  return shape


def random_uniform(scale: float = 0.5) -> Initializer:
  """Prompt entries drawn from U[-scale, scale)."""
  if scale <= 0:
    raise ValueError(f"random_uniform: scale must be positive, got {scale}.")

  def init(rng: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns [P, H]."""
    shape = _check_2d(shape, "random_uniform")
    return jax.random.uniform(rng, shape, dtype, minval=-scale, maxval=scale)

  return init


def from_sample_of_embeddings(embeddings, population_size: int = DEFAULT_POPULATION) -> Initializer:
  """Rows sampled from the first `population_size` rows of a [V, H] embedding table.

  Sampling is without replacement while P <= population_size, with replacement beyond.
  """
  table = np.asarray(embeddings)
  if table.ndim != 2:
    raise ValueError(f"from_sample_of_embeddings: embeddings must be [V, H], got shape {table.shape}.")
  if population_size <= 0:
    raise ValueError(f"from_sample_of_embeddings: population_size must be positive, got {population_size}.")
  population = min(int(population_size), table.shape[0])

  def init(rng: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns [P, H] rows of the embedding table."""
    length, dim = _check_2d(shape, "from_sample_of_embeddings")
    if dim != table.shape[1]:
      raise ValueError(f"Prompt shape {(length, dim)} does not match the embedding table of shape "
                       f"{table.shape}: H differs.")
    replace = length > population
    if replace:
      logger.warning("Prompt length %d exceeds the %d embeddings sampled from: sampling with "
                      "replacement.", length, population)
    index = np.asarray(jax.random.choice(rng, population, (length,), replace=replace))
    return jnp.asarray(table[index], dtype)

  return init


def from_class_labels(embeddings, labels: Sequence[Sequence[int]],
                      fallback: Initializer | None = None) -> Initializer:
  """Row i = mean embedding of the sub-tokens of label i; other rows from `fallback`.

  Args:
    embeddings: [V, H] token embedding table.
    labels: token ids of each class label (without EOS), e.g. [[4273], [150, 9]]. Labels beyond P are
      dropped with a warning.
    fallback: fills the rows after the labels (default: sampling the 5,000 most frequent tokens).
  """
  table = np.asarray(embeddings)
  if table.ndim != 2:
    raise ValueError(f"from_class_labels: embeddings must be [V, H], got shape {table.shape}.")
  labels = [list(int(t) for t in label) for label in labels]
  for i, label in enumerate(labels):
    if not label:
      raise ValueError(f"from_class_labels: label {i} has no tokens.")
    bad = [t for t in label if not 0 <= t < table.shape[0]]
    if bad:
      raise ValueError(f"from_class_labels: label {i} has token ids {bad} outside the vocabulary of "
                       f"{table.shape[0]}.")
  fallback = fallback or from_sample_of_embeddings(table)

  def init(rng: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns [P, H]: the label means first, then the fallback's rows."""
    length, dim = _check_2d(shape, "from_class_labels")
    if dim != table.shape[1]:
      raise ValueError(f"Prompt shape {(length, dim)} does not match the embedding table of shape "
                       f"{table.shape}: H differs.")
    if len(labels) > length:
      logger.warning("%d class labels but a prompt of %d positions: labels %d.. are not used.",
                      len(labels), length, length)
    prompt = np.array(fallback(rng, (length, dim)), dtype=np.float32)
    for i, label in enumerate(labels[:length]):
      prompt[i] = table[label].astype(np.float32).mean(axis=0)
    return jnp.asarray(prompt, dtype)

  return init


def from_array(array) -> Initializer:
  """Returns a given [P, H] prompt (the rng is unused)."""
  value = np.asarray(array)

  def init(rng: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
    del rng
    if tuple(value.shape) != tuple(shape):
      raise ValueError(f"The given prompt has shape {tuple(value.shape)} while the prompt to initialize "
                       f"has shape {tuple(shape)}.")
    return jnp.asarray(value, dtype)

  return init


def from_file(path: str | os.PathLike) -> Initializer:
  """Reads a [P, H] prompt from a `.npy` file (e.g. an exported `encoder.prompt.prompt.prompt`)."""
  value = export.read_source_prompt(os.fspath(path))
  base = from_array(value)

  def init(rng: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
    try:
      return base(rng, shape, dtype)
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None

  return init


class Prompt(nn.Module):
  """A learnable soft prompt [P, H], replicated under any mesh (logical axes `prompt, prompt_embed`).

  Attributes:
    length: P.
    embed_dim: H.
    prompt_init: an `init(rng, (P, H))` closure.
  """
  length: int = DEFAULT_LENGTH
  embed_dim: int = 512
  prompt_init: Initializer = random_uniform()

  @nn.compact
  def __call__(self) -> Array:
    """Returns the prompt [P, H] float32."""
    return self.param("prompt", nn.with_logical_partitioning(self.prompt_init, PROMPT_AXES),
                      (self.length, self.embed_dim))


def source_seed(name: str) -> int:
  """A stable 31-bit seed of a source name (CRC-32): a source's initial prompt depends on its name and
  the run seed only, not on which other sources are trained beside it."""
  return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def initial_table(names: Sequence[str], length: int, embed_dim: int, seed: int,
                  initializer_for: Callable[[int], Initializer]) -> tuple[np.ndarray, list[int]]:
  """The initial prompt table.

  Row s is `Prompt(length, embed_dim, initializer_for(s))` initialized with
  `fold_in(PRNGKey(seed), source_seed(names[s]))`.

  Returns:
    ([S, P, H] float32 table, [S] per-source seeds).
  """
  if len(set(names)) != len(names):
    dup = sorted({n for n in names if list(names).count(n) > 1})
    raise ValueError(f"Duplicate source names {dup}.")
  root = jax.random.PRNGKey(seed)
  rows, seeds = [], []
  for s, name in enumerate(names):
    seeds.append(source_seed(name))
    module = Prompt(length=length, embed_dim=embed_dim, prompt_init=initializer_for(s))
    variables = module.init({"params": jax.random.fold_in(root, seeds[-1])})
    rows.append(np.asarray(nn.unbox(variables["params"]["prompt"]), np.float32))
  table = np.stack(rows) if rows else np.zeros((0, length, embed_dim), np.float32)
  return table, seeds

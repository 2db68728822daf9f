"""The steps a run executes, lowered for a target from abstract arguments (no weights are read).

Each function builds the run's own step (`train_step.make_train_step`, `batching.scoring_step`,
`embed.embedding_step`: the same jitted functions the commands call, with the run's
`partitioning.Partitioner`: its mesh and logical axis rules) and lowers it for `jax.ShapeDtypeStruct`
arguments carrying the shardings the partitioner gives the commands' arrays.

Vocabulary: S sources, P prompt length, H model dim, B batch, T input length, L target length,
C answer-choice slots of a scoring row.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from rospr_jax.eval import batching
from rospr_jax.model import PromptedBackbone
from rospr_jax.model import partitioning
from rospr_jax.prompt.train_step import dropout_key, init_state, make_train_step


@dataclasses.dataclass(frozen=True)
class TrainShapes:
  """The shapes of a training step: B, T, L, P and S (prompts in the table)."""
  batch_size: int
  input_length: int
  target_length: int
  prompt_length: int
  num_sources: int


@dataclasses.dataclass(frozen=True)
class ScoringShapes:
  """The shapes of a scoring batch: B rows of T input tokens and C choice slots of L tokens, a
  [P, H] prompt per row."""
  batch_size: int
  input_length: int
  choices: int
  target_length: int
  prompt_length: int


@dataclasses.dataclass(frozen=True)
class EmbeddingShapes:
  """The shapes of an embedding batch: B rows of T tokens (`Embedder.rows_per_batch(T)` at its largest
  bucket, T = max_length)."""
  batch_size: int
  input_length: int


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def abstract_params(model: PromptedBackbone, partitioner: partitioning.Partitioner):
  """The backbone's parameters as `ShapeDtypeStruct`s sharded by the logical axis rules (as
  `Partitioner.shard_params` places real ones)."""
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  boxed = model.abstract_params()
  return _abstract(nn.unbox(boxed), partitioner.params_shardings(boxed))


def _batch_array(shape, dtype, partitioner: partitioning.Partitioner) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype, sharding=partitioner.batch_sharding(len(shape)))


def per_device_bytes(arguments) -> int:
  """Bytes of abstract, sharded arguments one device holds (its shard of each; PRNG keys not counted)."""
  total = 0
  for x in jax.tree.leaves(arguments):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      continue
    total += math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
  return total


def train_step_arguments(model: PromptedBackbone, optimizer: optax.GradientTransformation,
                         partitioner: partitioning.Partitioner, shapes: TrainShapes, rng_impl: str | None) -> tuple:
  """(state, params, batch, rng) as `ShapeDtypeStruct`s: a replicated [S, P, H] state, the sharded
  backbone, a batch (inputs [B, T], targets [B, L], source_ids [B], split over `data`) and the run's
  dropout key."""
  replicated = partitioner.replicated
  table = jax.ShapeDtypeStruct((shapes.num_sources, shapes.prompt_length, model.config.emb_dim), jnp.float32)
  state = jax.eval_shape(lambda t: init_state(t, optimizer), table)
  state = _abstract(state, jax.tree.map(lambda _: replicated, state))
  b = shapes.batch_size
  batch = {"inputs": _batch_array((b, shapes.input_length), jnp.int32, partitioner),
           "targets": _batch_array((b, shapes.target_length), jnp.int32, partitioner),
           "source_ids": _batch_array((b,), jnp.int32, partitioner)}
  key = jax.eval_shape(lambda: dropout_key(0, rng_impl))
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
  return state, abstract_params(model, partitioner), batch, rng


def lower_train_step(model: PromptedBackbone, optimizer: optax.GradientTransformation,
                     partitioner: partitioning.Partitioner, shapes: TrainShapes, rng_impl: str | None):
  """The prompt-training step (`make_train_step(model, optimizer, partitioner=partitioner)`, as
  `PromptTrainer` calls it) lowered for `train_step_arguments`; returns (step, lowered)."""
  step = make_train_step(model, optimizer, partitioner=partitioner)
  return step, step.lower(*train_step_arguments(model, optimizer, partitioner, shapes, rng_impl))


def scoring_step_arguments(model: PromptedBackbone, partitioner: partitioning.Partitioner,
                           shapes: ScoringShapes) -> tuple:
  """(params, inputs [B, T], targets [B, C, L], prompts [B, P, H]) as `ShapeDtypeStruct`s: the sharded
  backbone and a batch split over `data`."""
  b = shapes.batch_size
  inputs = _batch_array((b, shapes.input_length), jnp.int32, partitioner)
  targets = _batch_array((b, shapes.choices, shapes.target_length), jnp.int32, partitioner)
  prompts = _batch_array((b, shapes.prompt_length, model.config.emb_dim), jnp.float32, partitioner)
  return abstract_params(model, partitioner), inputs, targets, prompts


def lower_scoring_step(model: PromptedBackbone, partitioner: partitioning.Partitioner, shapes: ScoringShapes):
  """Evaluate's encode-once scoring step (`batching.scoring_step(model, partitioner)`, as
  `score_examples` calls it) lowered for `scoring_step_arguments`; returns (step, lowered)."""
  step = batching.scoring_step(model, partitioner)
  return step, step.lower(*scoring_step_arguments(model, partitioner, shapes))


def embedding_step_arguments(model: PromptedBackbone, partitioner: partitioning.Partitioner,
                             shapes: EmbeddingShapes) -> tuple:
  """(encoder params, tokens [B, T]) as `ShapeDtypeStruct`s: the retriever's token embedding and
  encoder replicated (as `Embedder` places them), the batch split over `data`."""
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  from rospr_jax.library import embed  # pylint: disable=g-import-not-at-top
  params = {k: v for k, v in nn.unbox(model.abstract_params()).items() if k in embed.ENCODER_PREFIXES}
  params = _abstract(params, jax.tree.map(lambda _: partitioner.replicated, params))
  return params, _batch_array((shapes.batch_size, shapes.input_length), jnp.int32, partitioner)


def lower_embedding_step(model: PromptedBackbone, partitioner: partitioning.Partitioner, shapes: EmbeddingShapes):
  """The library's embedding step (`embed.embedding_step(model)`, as `Embedder.embed` calls it)
  lowered for `embedding_step_arguments`; returns (step, lowered)."""
  from rospr_jax.library import embed  # pylint: disable=g-import-not-at-top
  step = embed.embedding_step(model)
  return step, step.lower(*embedding_step_arguments(model, partitioner, shapes))

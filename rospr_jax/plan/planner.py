"""`plan(...)`: compiles the steps a run executes for a target and returns what each costs.

The settings are the run's own (the same gin model and run files): the backbone's config (shape,
dtype, attention), NUM_PARTITIONS, and for prompt training its batch, lengths, prompt, dropout, remat
policy and optimizer; for evaluation its scoring batch at T0's largest bucket (inputs of 1024 tokens,
512 answer tokens per row) and the library's embedding step (the retriever's encoder at the
library-build batch).

Vocabulary: B batch, T input length, L target length, P prompt length, S sources, C choice slots.
"""

from __future__ import annotations

import dataclasses
import time

import optax

from rospr_jax.model import T5Config, model_for
from rospr_jax.model import partitioning
from rospr_jax.plan import report, steps
from rospr_jax.plan.targets import Target


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """A prompt-training run: its shapes, dropout, remat policy, optimizer and dropout PRNG."""
  shapes: steps.TrainShapes
  dropout_rate: float
  remat_policy: str
  optimizer: optax.GradientTransformation
  rng_impl: str | None = "auto"


@dataclasses.dataclass(frozen=True)
class EmbeddingSettings:
  """The library's embedding: the retriever's config (its compute dtype) and the batch
  (`Embedder`'s rows at its largest bucket), data parallel over every device as `build-library` runs it."""
  config: T5Config
  shapes: steps.EmbeddingShapes
  source: str = ""  # where the retriever's shape comes from, for the report


def _data_multiple(batch_size: int, data: int, macro: str, round_up: bool) -> int:
  if batch_size % data == 0:
    return batch_size
  if round_up:  # evaluate and the embedder pad their batches to a multiple of the data axis
    return -(-batch_size // data) * data
  raise ValueError(f"{macro} {batch_size} is not a multiple of the mesh's data axis ({data} devices); "
                   f"give a multiple of {data}.")


def plan(config: T5Config, target: Target, *, partitioner: partitioning.Partitioner,
         train: TrainSettings | None = None, scoring: steps.ScoringShapes | None = None,
         embedding: EmbeddingSettings | None = None) -> list[report.StepCost]:
  """Compiles the training, scoring and / or embedding step for `target` with the run's `partitioner`
  (laid over the target's devices); returns their costs, in that order."""
  partitioner = partitioner.for_devices(target.devices)
  partitioner.check(config)
  data = partitioner.data_size
  costs = []
  if train is not None:
    _data_multiple(train.shapes.batch_size, data, "BATCH_SIZE", round_up=False)
    model = model_for(config.replace(dropout_rate=train.dropout_rate, remat_policy=train.remat_policy))
    shapes = {**dataclasses.asdict(train.shapes), "remat_policy": train.remat_policy,
              "dropout_rate": train.dropout_rate, "num_partitions": partitioner.num_partitions}
    arguments = steps.train_step_arguments(model, train.optimizer, partitioner, train.shapes, train.rng_impl)
    costs.append(_compile("train", shapes, target, arguments, lambda: steps.lower_train_step(
        model, train.optimizer, partitioner, train.shapes, train.rng_impl)[1]))
  if scoring is not None:
    scoring = dataclasses.replace(
        scoring, batch_size=_data_multiple(scoring.batch_size, data, "BATCH_SIZE", round_up=True))
    shapes = {**dataclasses.asdict(scoring), "num_partitions": partitioner.num_partitions}
    arguments = steps.scoring_step_arguments(model_for(config), partitioner, scoring)
    costs.append(_compile("scoring", shapes, target, arguments,
                          lambda: steps.lower_scoring_step(model_for(config), partitioner, scoring)[1]))
  if embedding is not None:  # data parallel over every device, whatever NUM_PARTITIONS (`embed.data_partitioner`)
    data_parallel = partitioning.Partitioner(1, devices=target.devices)
    shapes = dataclasses.replace(embedding.shapes, batch_size=_data_multiple(
        embedding.shapes.batch_size, data_parallel.data_size, "the embedding batch", round_up=True))
    model = model_for(embedding.config)
    arguments = steps.embedding_step_arguments(model, data_parallel, shapes)
    described = {**dataclasses.asdict(shapes), "retriever": embedding.source}
    costs.append(_compile("embed", described, target, arguments,
                          lambda: steps.lower_embedding_step(model, data_parallel, shapes)[1]))
  return costs


def _compile(step: str, shapes: dict, target: Target, arguments, lower) -> report.StepCost:
  """Lowers and compiles a step; a compiler's refusal for want of memory is a step that does not fit,
  and so, without compiling, is one whose arguments alone exceed the device's HBM."""
  start = time.perf_counter()
  held, (hbm, hbm_source) = steps.per_device_bytes(arguments), target.hbm_bytes
  if held > hbm:
    return report.refused_cost(step, shapes, ValueError(
        f"not compiled: its arguments alone (backbone, state, batch) hold {held / 2**30:.2f} GiB per device, "
        f"more than the {hbm / 2**30:.2f} GiB of {hbm_source}"), target, 0.0, required=held)
  try:
    compiled = lower().compile()
  except Exception as e:  # noqa: BLE001 - XLA's RESOURCE_EXHAUSTED is a JaxRuntimeError; others re-raise
    if not report.is_out_of_memory(e):
      raise
    return report.refused_cost(step, shapes, e, target, time.perf_counter() - start)
  return report.step_cost(step, shapes, compiled, target, time.perf_counter() - start)

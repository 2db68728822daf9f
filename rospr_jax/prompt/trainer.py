"""The gin entry point of prompt tuning: `train(...)` assembles a run, `loop.PromptTrainer` trains it.

`train(...)` (gin: gin/prompt_tuning/*.gin; `rospr train-prompts`) takes the run's settings as checked
config objects (`configs.py`), holds the run
folder and its lock, loads data and backbone, checks that a step can fit and the weights are finite,
places the backbone on the mesh, opens the checkpointer, starts or restores the state, and hands them
to a `PromptTrainer`. One run trains one soft prompt per source on a frozen backbone:

    <model_dir>/config.gin             the operative gin config of the first segment (T5X's name)
    <model_dir>/config-<step>.gin      that of a segment resumed from checkpoint <step>
    <model_dir>/model-info.txt         backbone and prompt shapes, logical axes, mesh
    <model_dir>/checkpoints/<step>/    orbax: prompts, optimizer states, step, data position
    <model_dir>/export/...             per-source .npy prompts and the [S, P, H] table (export.py)
    <model_dir>/train/                 TensorBoard summaries (when clu and TensorFlow import)

A run that finds checkpoints in its model_dir resumes from the newest one (same sources, shapes, seed,
batch size, examples, dropout, optimizer settings and backbone, or it refuses naming the difference:
`Checkpointer.restore`; what killed runs left is removed first, by name, and orbax sweeps its own
temporaries) and continues the same batch stream, so it ends with
the prompts an uninterrupted run would have (a non-finite loss: `loop.NonFiniteLossError`).

Vocabulary: S sources, P prompt length, H model dim, B batch, T input length, L target length.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any, Callable

import gin
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from rospr_jax import multihost, storage
from rospr_jax.config_fields import positive_number, problem, refuse
from rospr_jax.model import T5Config, model_for
from rospr_jax.model import partitioning
from rospr_jax.prompt import export as export_lib
from rospr_jax.prompt import prompt_init as init_lib
from rospr_jax.prompt import prompts as prompts_lib
from rospr_jax.prompt.checkpointing import Checkpointer
from rospr_jax.prompt.configs import CheckpointConfig, LoopConfig, ShapeConfig, StepConfig
from rospr_jax.prompt.input_pipeline import BatchIterator, SourceExamples, as_one_source
from rospr_jax.prompt.optimizers import OptimizerSpec, flat_facts, resolve
from rospr_jax.prompt.loop import PromptTrainer
from rospr_jax.prompt.train_step import (PromptTrainState, check_step_fits, dropout_key, init_state,
                                         make_train_step, place_state)
from rospr_jax.tokenization import check_same_vocabulary

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
  """What a finished run leaves: the final state (host arrays), the export and the step."""
  state: PromptTrainState
  names: list[str]
  step: int
  export_dir: str | None
  checkpoint_dir: str
  resumed_from: int | None = None  # the checkpoint step this run started from (None: from scratch)


def _model_info(config: T5Config, params, boxed, state: PromptTrainState, mesh) -> str:
  lines = [f"backbone: {config}", f"prompt table [S, P, H]: {list(state.prompts.shape)} float32, replicated",
           f"mesh: {None if mesh is None else dict(mesh.shape)}", "",
           "frozen parameters (shape, dtype, axes):"]
  specs = nn.get_partition_spec(boxed)
  flat = jax.tree_util.tree_leaves_with_path(params)
  spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  for (path, value), spec in zip(flat, spec_leaves, strict=True):
    name = "/".join(getattr(k, "key", str(k)) for k in path)
    lines.append(f"  {name}: {list(value.shape)} {jnp.dtype(value.dtype).name} {tuple(spec) if spec else ''}")
  return "\n".join(lines) + "\n"


def _summary_writer(logdir: str, enabled: bool):
  """A clu metric writer (TensorBoard when TensorFlow imports), or None."""
  if not enabled:
    return None
  try:
    from clu import metric_writers
    return metric_writers.create_default_writer(logdir, just_logging=not multihost.is_writer(),
                                                asynchronous=False)
  except Exception as e:  # noqa: BLE001 - summaries are optional; training goes on without them.
    logger.warning("TensorBoard summaries disabled (%s: %s).", type(e).__name__, e)
    return None


def _check_learning_rate(learning_rate: Any) -> None:
  """A constant learning rate must be a finite number > 0 (a negative one climbs the loss; a schedule,
  recorded as a dict, is the schedule's business; None: an optax transformation, unrecorded)."""
  if learning_rate is not None and not isinstance(learning_rate, dict):
    refuse([problem("learning_rate", "LEARNING_RATE", learning_rate, positive_number)])


def _check_finite_weights(backbone) -> None:
  """Refuses a backbone holding NaN or infinite weights before any step (otherwise the first loss is
  NaN and the message would blame the learning rate); names the first tensors."""
  finite = jax.device_get(jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), backbone.params))
  bad = ["/".join(str(getattr(k, "key", k)) for k in path)
         for path, ok in jax.tree_util.tree_leaves_with_path(finite) if not ok]
  if bad:
    where = backbone.description.get("checkpoint") or backbone.description
    raise ValueError(f"The backbone {where} holds NaN or infinite weights in {len(bad)} tensors "
                     f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); nothing was trained.")


@gin.configurable
def train(*, model_dir: str = gin.REQUIRED, examples: Any = gin.REQUIRED, backbone: Any = gin.REQUIRED,
          loop: LoopConfig = gin.REQUIRED, shapes: ShapeConfig = ShapeConfig(), step: StepConfig = StepConfig(),
          checkpointing: CheckpointConfig = CheckpointConfig(),
          prompt_init: init_lib.PromptInitializer | str | None = None,
          optimizer: OptimizerSpec | optax.GradientTransformation | None = None,
          multitask: bool = False) -> TrainResult:
  """Trains one soft prompt per source; see the module docstring for what is written.

  Args:
    model_dir: the run directory.
    examples: a `SourceExamples`, or a callable returning one (e.g. `seqio_input.seqio_sources`).
    backbone: a `rospr_jax.backbone.Backbone` (its config carries the dtype and the attention
      kernel), or a callable returning one (e.g. `rospr_jax.backbone.load_backbone`).
    loop, shapes, step, checkpointing: the run's settings (`configs`), each checked when it was made.
    prompt_init: how prompts start (PROMPT_INIT): a `prompt_init.PromptInitializer`, or the name of one,
      made as gin configures it (None: 'random_uniform'); an unknown name is refused naming PROMPT_INIT.
    optimizer: how each prompt is updated, separately: an `optimizers.OptimizerSpec` (recorded; default
      `optimizers.Adafactor()`) or an optax transformation (recorded as unrecorded).
    multitask: train one prompt on the union of the sources (`input_pipeline.as_one_source`: the same
      batches, every example training the one source "multitask"); its export is an ordinary one of
      one prompt, which `rospr evaluate` takes as the method 'MT prompt' (MT_PROMPT).

  Returns:
    The final state (on the host), source names, step, export directory and checkpoint directory.
  """
  transformation, optimizer_facts = resolve(optimizer)
  _check_learning_rate(optimizer_facts.get("learning_rate"))
  model_dir = storage.absolute(storage.as_path(model_dir, "model_dir", output=True))
  settings = _Settings(shapes, step, loop, checkpointing, init_lib.resolve(prompt_init),
                       optimizer_facts)
  # MODEL_DIR is used in place, local or at a URL (orbax writes and commits each checkpoint there, and
  # a rerun on any machine resumes from the last one). Process 0 alone writes, holding the run lock.
  with storage.run_lock(model_dir, "train-prompts", "MODEL_DIR") if multihost.is_writer() else contextlib.nullcontext():
    data = examples() if callable(examples) else examples
    data.check_every_source_has_examples()
    data = as_one_source(data) if multitask else data
    backbone = backbone() if callable(backbone) else backbone
    return _train_segment(model_dir, data, backbone, settings, transformation)


@dataclasses.dataclass(frozen=True)
class _Settings:
  """What `train` was given, checked: the configs, how prompts start and the optimizer's facts."""
  shapes: ShapeConfig
  step: StepConfig
  loop: LoopConfig
  checkpointing: CheckpointConfig
  prompt_init: init_lib.PromptInitializer
  optimizer_facts: dict


def _train_segment(model_dir: str, data: SourceExamples, backbone, settings: _Settings,
                   optimizer: optax.GradientTransformation) -> TrainResult:
  """One segment of a run, under its run folder and lock: the backbone laid out by the run's
  partitioner, the checkpointer, the initial or restored state, handed to a `PromptTrainer`; reports the
  result."""
  loop, step = settings.loop, settings.step
  config = backbone.config.replace(dropout_rate=step.dropout_rate, remat_policy=step.remat_policy)
  _check_inputs(data, backbone, config, settings.shapes)
  model, partitioner = model_for(config), _partitioner(config, step)
  params = (partitioner.shard_params(backbone.params, model.abstract_params()) if partitioner is not None
            else jax.device_put(backbone.params))
  run_facts = _run_facts(data, backbone, settings)
  if multihost.is_writer():  # under the run lock: no live run writes here (orbax sweeps its own)
    storage.remove_leftovers(model_dir, recursive=True)
  checkpointer = Checkpointer(os.path.join(model_dir, "checkpoints"), keep=settings.checkpointing.keep_checkpoints)
  state, position, latest, seeds = _initial_state(checkpointer, model, backbone.params, data, settings,
                                                  run_facts, optimizer)
  state = jax.device_put(state) if partitioner is None else place_state(state, partitioner)
  _write_run_info(model_dir, config, params, model, state, None if partitioner is None else partitioner.mesh,
                  latest)
  batches = BatchIterator(data, batch_size=settings.shapes.batch_size, input_length=settings.shapes.input_length,
                          target_length=settings.shapes.target_length, seed=loop.seed, position=position)
  writer = _summary_writer(os.path.join(model_dir, "train"), loop.summaries)
  shapes = settings.shapes
  remedy = (f"lower BATCH_SIZE ({shapes.batch_size}), INPUT_LENGTH ({shapes.input_length}), TARGET_LENGTH "
            f"({shapes.target_length}) or PROMPT_LENGTH ({shapes.prompt_length}), raise NUM_PARTITIONS "
            f"({step.num_partitions}), or set REMAT_POLICY 'full' (now {step.remat_policy!r})")
  trainer = PromptTrainer(make_train_step(model, optimizer, partitioner=partitioner), params,
                          dropout_key(loop.seed, step.dropout_rng_impl), partitioner=partitioner,
                          checkpointer=checkpointer, exporter=_exporter(model_dir, data, backbone, settings, seeds),
                          loop=loop, checkpointing=settings.checkpointing, run_facts=run_facts, writer=writer,
                          memory_remedy=remedy)
  try:
    state = trainer.fit(state, batches, last_saved=latest)
  finally:
    if writer is not None:
      writer.close()
    checkpointer.close()
  # The other processes end only once process 0 has exported: a failure there stops them too.
  multihost.barrier("train-prompts: exported")
  export_dir = os.path.join(model_dir, "export")
  if latest is None:
    logger.info("Trained %d steps from scratch; exports in %s.", loop.num_steps, export_dir)
  else:
    logger.info("Resumed from step %d, trained %d more steps to %d; exports in %s.", latest,
                loop.num_steps - latest, loop.num_steps, export_dir)
  return TrainResult(jax.device_get(state), list(data.names), loop.num_steps, export_dir, checkpointer.directory,
                     resumed_from=latest)


def _check_inputs(data: SourceExamples, backbone, config: T5Config, shapes: ShapeConfig) -> None:
  """Refuses, before anything is placed, a step that cannot fit, non-finite weights, and examples of
  another vocabulary or with token ids past the model's."""
  check_step_fits(config, **dataclasses.asdict(shapes))
  _check_finite_weights(backbone)
  check_same_vocabulary(data.vocabulary, backbone.vocabulary, "The training examples")
  data.check_token_ids(config.vocab_size)


def _partitioner(config: T5Config, step: StepConfig) -> partitioning.Partitioner | None:
  """The run's partitioner over every device (`step.partitioner()`), or None (one device and no model
  parallelism, or `step.use_mesh` False); a split the rules cannot make is refused naming NUM_PARTITIONS."""
  partitioner = step.partitioner()
  use_mesh = partitioner.uses_mesh if step.use_mesh is None else step.use_mesh
  if not use_mesh:
    return None
  partitioner.check(config)
  return partitioner


def _run_facts(data: SourceExamples, backbone, settings: _Settings) -> dict:
  """What every checkpoint records and a resume must match; the same on every process (checked)."""
  shapes, loop = settings.shapes, settings.loop
  facts = {"sources": list(data.names), "prompt_shape": [len(data.names), shapes.prompt_length,
                                                         backbone.config.emb_dim],
           "seed": loop.seed, "batch_size": shapes.batch_size, "input_length": shapes.input_length,
           "target_length": shapes.target_length, "backbone_fingerprint": backbone.fingerprint,
           "examples": data.digest(), "dropout_rate": settings.step.dropout_rate,
           **flat_facts("optimizer", settings.optimizer_facts)}
  multihost.check_same_on_every_process(
      {**facts, "num_steps": loop.num_steps, "checkpoint_every": settings.checkpointing.checkpoint_every,
       "export_every": settings.checkpointing.export_interval, "log_every": loop.log_every}, "train-prompts")
  return facts


def _initial_state(checkpointer: Checkpointer, model, params, data: SourceExamples, settings: _Settings,
                   run_facts: dict, optimizer) -> tuple[PromptTrainState, int, int | None, list[int]]:
  """(host state, data position, the checkpoint resumed from or None, source seeds): initialized, or
  restored from the newest checkpoint after `Checkpointer.restore` checked it belongs to this run."""
  names, prompt_length, dim = list(data.names), settings.shapes.prompt_length, run_facts["prompt_shape"][2]
  seeds = [prompts_lib.source_seed(n) for n in names]
  latest = checkpointer.latest_step()  # process 0's: all resume alike
  if latest is None:
    initializer_for = settings.prompt_init.initializers(model.embedding_table(params), data, prompt_length)
    table, seeds = prompts_lib.initial_table(names, prompt_length, dim, settings.loop.seed, initializer_for)
    return init_state(table, optimizer), 0, None, seeds
  if latest > settings.loop.num_steps:
    raise ValueError(f"{checkpointer.directory} holds checkpoint {latest}, past num_steps = "
                     f"{settings.loop.num_steps}: give TRAIN_STEPS >= {latest} to continue, or a new model_dir.")
  abstract = jax.eval_shape(lambda table: init_state(table, optimizer),
                            jax.ShapeDtypeStruct((len(names), prompt_length, dim), jnp.float32))
  state, run = checkpointer.restore(latest, abstract, run_facts)
  logger.info("Resuming from checkpoint %d in %s (data position %d).", latest, checkpointer.directory,
              run["position"])
  return state, int(run["position"]), latest, seeds


def _write_run_info(model_dir: str, config: T5Config, params, model, state, mesh, latest: int | None) -> None:
  """config.gin (the first segment's; a resumed one writes config-<its first step>.gin), model-info.txt."""
  if not multihost.is_writer():
    return
  first = latest is None or not storage.as_path(model_dir, "model_dir").joinpath("config.gin").exists()
  storage.write_text(os.path.join(model_dir, "config.gin" if first else f"config-{latest}.gin"),
                     gin.operative_config_str())
  storage.write_text(os.path.join(model_dir, "model-info.txt"),
                     _model_info(config, params, model.abstract_params(), state, mesh))


def _exporter(model_dir: str, data: SourceExamples, backbone, settings: _Settings,
              seeds: list[int]) -> Callable[[int, PromptTrainState], None]:
  """`export(step, host_state)`: the prompt export of a step, with the run's settings in its manifest."""
  export_dir, source_examples, names = os.path.join(model_dir, "export"), data.counts().tolist(), list(data.names)
  shapes, facts = settings.shapes, settings.optimizer_facts
  extra = {"seed": settings.loop.seed, "prompt_init": settings.prompt_init.record(),
           "batch_size": shapes.batch_size, "input_length": shapes.input_length,
           "target_length": shapes.target_length, "dropout_rate": settings.step.dropout_rate,
           "num_steps": settings.loop.num_steps, "backbone": backbone.description,
           **({"multitask_of": data.merged_from} if data.merged_from else {}),
           "optimizer": facts, "learning_rate": facts.get("learning_rate"),
           "versions": {"jax": jax.__version__, "optax": optax.__version__}}

  def export(done: int, host: PromptTrainState) -> None:
    table = export_lib.export_prompts(
        export_dir, host.prompts, names, done, backbone_fingerprint=backbone.fingerprint, seeds=seeds,
        source_steps=host.source_steps.tolist(), source_examples=source_examples, extra=extra)
    logger.info("Exported prompts of step %d to %s.", done, table)
  return export

"""The gin entry point of prompt tuning: `train(...)` assembles a run, `loop.PromptTrainer` trains it.

`train(...)` (gin: gin/prompt_tuning/*.gin; `rospr train-prompts`) checks the settings, holds the run
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
batch size, examples, dropout, optimizer settings and backbone, or it refuses naming the difference;
what killed runs left is removed first, by name) and continues the same batch stream, so it ends with
the prompts an uninterrupted run would have (a non-finite loss: `loop.NonFiniteLossError`).

Vocabulary: S sources, P prompt length, H model dim, B batch, T input length, L target length.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import re
import shutil
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from rospr_jax import multihost, storage
from rospr_jax.model import EOS_ID, T5Config, model_for
from rospr_jax.model import partitioning
from rospr_jax.prompt import export as export_lib
from rospr_jax.prompt import prompts as prompts_lib
from rospr_jax.prompt.checkpointing import CheckpointMismatchError, Checkpointer
from rospr_jax.prompt.input_pipeline import BatchIterator, SourceExamples, as_one_source
from rospr_jax.prompt.optimizers import OptimizerSpec, flat_facts, resolve
from rospr_jax.prompt.loop import LoopSettings, PromptTrainer, check_step_fits
from rospr_jax.prompt.train_step import PromptTrainState, init_state, place_state
from rospr_jax.tokenization import check_same_vocabulary

logger = logging.getLogger(__name__)


def most_frequent_targets(data: SourceExamples, source_id: int, limit: int) -> list[list[int]]:
  """The `limit` most frequent target sequences of a source (EOS and padding removed), ties by first
  appearance: the class labels of a classification source."""
  counts: collections.Counter = collections.Counter()
  for ex in data.examples:
    if ex.source_id == source_id:
      label = tuple(int(t) for t in ex.targets if int(t) not in (0, EOS_ID))
      if label:
        counts[label] += 1
  return [list(label) for label, _ in counts.most_common(limit)]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PromptInit:
  """How the prompts start.

  Attributes:
    method: "random_uniform" (U[-scale, scale)), "sampled_vocab" (rows of the `population_size` most
      frequent token embeddings), "class_labels" (mean sub-token embedding of each class label, then
      sampled vocabulary; the labels are `class_labels` texts tokenized with `vocabulary`, or else each
      source's most frequent training targets), or "file" (`file`: a [P, H] or [S, P, H] `.npy`, or a
      prompt export whose rows are taken by source name).
  """
  method: str = "random_uniform"
  scale: float = 0.5
  population_size: int = prompts_lib.DEFAULT_POPULATION
  class_labels: Sequence[str] | None = None
  vocabulary: str | None = None
  file: str | None = None

  METHODS = ("random_uniform", "sampled_vocab", "class_labels", "file")

  def initializers(self, embeddings, data: SourceExamples,
                   length: int) -> Callable[[int], prompts_lib.Initializer]:
    """Returns `initializer_for(source_id)`; `embeddings` [V, H] is the backbone's token table."""
    if self.method == "random_uniform":
      init = prompts_lib.random_uniform(self.scale)
      return lambda s: init
    embeddings = np.asarray(embeddings, np.float32)
    vocab = prompts_lib.from_sample_of_embeddings(embeddings, self.population_size)
    if self.method == "sampled_vocab":
      return lambda s: vocab
    if self.method == "class_labels":
      if self.class_labels is not None:
        if self.vocabulary is None:
          raise ValueError("PromptInit: class_labels texts need a SentencePiece `vocabulary` to tokenize.")
        from rospr_jax.tokenization import Tokenizer
        tokenizer = Tokenizer(self.vocabulary)
        shared = prompts_lib.from_class_labels(
            embeddings, [tokenizer.encode_input(t) for t in self.class_labels], vocab)
        return lambda s: shared
      return lambda s: prompts_lib.from_class_labels(
          embeddings, most_frequent_targets(data, s, length), vocab)
    if self.method == "file":
      return self._file_initializers(data)
    raise ValueError(f"PromptInit.method {self.method!r} is not one of {self.METHODS}.")

  def _file_initializers(self, data: SourceExamples) -> Callable[[int], prompts_lib.Initializer]:
    if self.file is None:
      raise ValueError("PromptInit.method 'file' needs PromptInit.file.")
    table = export_lib.load_prompt_table(self.file, "PromptInit.file")
    value = table.prompts
    if table.names is not None:
      rows = {name: value[i] for i, name in enumerate(table.names)}
      missing = [n for n in data.names if n not in rows]
      if missing:
        raise ValueError(f"{self.file}: no prompt for sources {missing}.")
      return lambda s: prompts_lib.from_array(rows[data.names[s]])
    if value.ndim == 2:
      return lambda s: prompts_lib.from_file(self.file)
    if value.ndim == 3 and value.shape[0] == len(data.names):
      return lambda s: prompts_lib.from_array(value[s])
    raise ValueError(f"{self.file}: shape {value.shape} is neither [P, H] nor [S, P, H] with "
                     f"S = {len(data.names)} sources.")


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


# The gin macros of `train`'s settings, for messages (gin/prompt_tuning/base.gin).
_MACROS = {"num_steps": "TRAIN_STEPS", "batch_size": "BATCH_SIZE", "input_length": "INPUT_LENGTH",
           "target_length": "TARGET_LENGTH", "prompt_length": "PROMPT_LENGTH",
           "checkpoint_every": "CHECKPOINT_EVERY", "export_every": "EXPORT_EVERY", "log_every": "LOG_EVERY",
           "num_partitions": "NUM_PARTITIONS", "dropout_rate": "DROPOUT_RATE"}


def _check_settings(dropout_rate, **counts) -> None:
  """Refuses meaningless settings before anything is loaded: counts must be integers >= 1 and the
  dropout rate in [0, 1) (at 1 every unit is dropped and nothing can be learned)."""
  problems = [f"{name} ({_MACROS[name]}) must be an integer >= 1, not {value!r}"
              for name, value in counts.items()
              if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1]
  if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) or not 0 <= dropout_rate < 1:
    problems.append(f"dropout_rate (DROPOUT_RATE) must be a number in [0, 1), not {dropout_rate!r}")
  if problems:
    raise ValueError("; ".join(problems) + ".")


def _check_learning_rate(learning_rate: Any) -> None:
  """A constant learning rate must be a finite number > 0 (a negative one climbs the loss; a schedule,
  recorded as a dict, is the schedule's business)."""
  if isinstance(learning_rate, (bool, str)) or (isinstance(learning_rate, (int, float)) and
                                                not 0 < learning_rate < float("inf")):
    raise ValueError(f"learning_rate (LEARNING_RATE) must be a finite number > 0, not {learning_rate!r}.")


_ORBAX_TMP = re.compile(r"^\d+\.orbax-checkpoint-tmp(-\d+)?$")


def remove_leftovers(model_dir: str) -> list[str]:
  """Removes what killed runs left in `model_dir` (the caller holds its run lock): this project's
  temporaries of dead writers (`storage.remove_leftovers`) and orbax's unfinished checkpoints
  `checkpoints/<step>.orbax-checkpoint-tmp-*`; logs each path removed."""
  removed = storage.remove_leftovers(model_dir, recursive=True)
  checkpoints = os.path.join(model_dir, "checkpoints")
  entries = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
  unfinished = sorted(os.path.join(checkpoints, entry) for entry in entries if _ORBAX_TMP.match(entry))
  for path in unfinished:
    shutil.rmtree(path, ignore_errors=True)
  if unfinished:
    logger.warning("Removed %d unfinished checkpoints of an interrupted run: %s", len(unfinished),
                   ", ".join(unfinished))
  return removed + unfinished


def _check_resume(run: dict, expected: dict, where: str) -> None:
  diff = {k: (run.get(k), v) for k, v in expected.items() if run.get(k) != v}
  if diff:
    details = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
    raise ValueError(f"Cannot resume from {where}: the run differs ({details}). Use a new model_dir.")


def _check_recorded_facts(checkpointer: Checkpointer, step: int, run_facts: dict, where: str) -> None:
  """Refuses naming the difference when the run facts of checkpoint `step` (orbax's JSON item
  `<step>/run/metadata`) differ from this run's; does nothing when they cannot be read."""
  try:
    run = storage.read_json(os.path.join(checkpointer.directory, str(step), "run", "metadata"))
  except (OSError, ValueError):
    return
  if isinstance(run, dict):
    _check_resume(run, run_facts, where)


def _restore(checkpointer: Checkpointer, step: int, run_facts: dict, optimizer, shown: str):
  """Restores checkpoint `step` (host arrays) after checking it belongs to this run; messages name the
  checkpoint folder `shown`.

  Returns:
    (state, data position).
  """
  num_sources, prompt_length, dim = run_facts["prompt_shape"]
  abstract = jax.eval_shape(lambda table: init_state(table, optimizer),
                            jax.ShapeDtypeStruct((num_sources, prompt_length, dim), jnp.float32))
  where = f"checkpoint {step} in {shown}"
  try:
    state, run = checkpointer.restore(step, abstract)
  except CheckpointMismatchError as e:
    _check_recorded_facts(checkpointer, step, run_facts, where)  # another optimizer: say which
    raise ValueError(f"Cannot restore {where}: it is damaged, or does not fit prompts of shape "
                     f"{run_facts['prompt_shape']} and this optimizer's state ({e}).") from e
  _check_resume(run, run_facts, where)
  logger.info("Resuming from %s (data position %d).", where, run["position"])
  return state, int(run["position"])


@gin.configurable
def train(*, model_dir: str = gin.REQUIRED, examples: Any = gin.REQUIRED, backbone: Any = gin.REQUIRED,
          num_steps: int = gin.REQUIRED, prompt_length: int = prompts_lib.DEFAULT_LENGTH,
          prompt_init: PromptInit | None = None,
          optimizer: OptimizerSpec | optax.GradientTransformation | None = None,
          batch_size: int = 32, input_length: int = 512, target_length: int = 64,
          dropout_rate: float = 0.1, remat_policy: str = "minimal", seed: int = 0,
          checkpoint_every: int = 1000,
          keep_checkpoints: int | None = 3, export_every: int | None = None, log_every: int = 100,
          num_partitions: int = 1, use_mesh: bool | None = None, summaries: bool = True,
          dropout_rng_impl: str | None = "auto", multitask: bool = False) -> TrainResult:
  """Trains one soft prompt per source; see the module docstring for what is written.

  Args:
    model_dir: the run directory.
    examples: a `SourceExamples`, or a callable returning one (e.g. `seqio_input.seqio_sources`).
    backbone: a `rospr_jax.backbone.Backbone` (its config carries the dtype and the attention
      kernel), or a callable returning one (e.g. `rospr_jax.backbone.load_backbone`).
    num_steps: total training steps (a resumed run continues up to it).
    prompt_length: P.
    prompt_init: how prompts start (default: random uniform, scale 0.5).
    optimizer: how each prompt is updated, separately: an `optimizers.OptimizerSpec` (recorded; default
      `optimizers.Adafactor()`) or an optax transformation (recorded as unrecorded).
    batch_size, input_length, target_length: B, T, L of every batch.
    dropout_rate: the backbone's dropout while training (T5X's masks, shared along the length:
      `T5Config.dropout_broadcast_dims`).
    remat_policy: activations recomputed in the backward pass (`T5Config.remat_policy`). With "minimal"
      T0_3B's batch-32 step (inputs 256 + 100 prompt tokens, targets 16) compiles for a v4-8 to 3.72 GiB
      of temporaries per chip instead of 8.79 GiB (`rospr plan`), for under 1% more FLOPs; "none" is
      faster where memory allows (the tiny model's CPU step: 1.2x faster).
    seed: seeds the prompt initialization, the data order and dropout.
    checkpoint_every: steps between orbax checkpoints (the last step is always saved).
    keep_checkpoints: newest checkpoints kept (None: all).
    export_every: steps between exports (default: at each checkpoint).
    log_every: steps between log lines and summaries.
    num_partitions: model-parallel partitions of the mesh (the rest is data parallel).
    use_mesh: run under a data x model mesh over all devices (default: when there is more than one).
    summaries: write TensorBoard summaries under <model_dir>/train.
    dropout_rng_impl: PRNG of the dropout masks (`train_step.dropout_key`: "auto" = JAX's CUDA
      threefry kernel on GPUs, XLA's RngBitGenerator elsewhere).
    multitask: train one prompt on the union of the sources (`input_pipeline.as_one_source`: the same
      batches, every example training the one source "multitask"); its export is an ordinary one of
      one prompt, which `rospr evaluate` takes as the method 'MT prompt' (MT_PROMPT).

  Returns:
    The final state (on the host), source names, step, export directory and checkpoint directory.
  """
  export_every = checkpoint_every if export_every is None else export_every
  _check_settings(num_steps=num_steps, batch_size=batch_size, input_length=input_length,
                  target_length=target_length, prompt_length=prompt_length,
                  checkpoint_every=checkpoint_every, export_every=export_every, log_every=log_every,
                  num_partitions=num_partitions, dropout_rate=dropout_rate)
  transformation, optimizer_facts = resolve(optimizer)
  _check_learning_rate(optimizer_facts.get("learning_rate"))
  model_dir = storage.absolute(storage.as_path(model_dir, "model_dir", output=True))
  settings = LoopSettings(num_steps=num_steps, batch_size=batch_size, checkpoint_every=checkpoint_every,
                          export_every=export_every, log_every=log_every, seed=seed,
                          dropout_rng_impl=dropout_rng_impl)
  # MODEL_DIR is used in place, local or at a URL (orbax writes and commits each checkpoint there, and
  # a rerun on any machine resumes from the last one). Process 0 alone writes, holding the run lock.
  with storage.run_lock(model_dir, "train-prompts", "MODEL_DIR") if multihost.is_writer() else contextlib.nullcontext():
    data = examples() if callable(examples) else examples
    data.check_every_source_has_examples()
    data = as_one_source(data) if multitask else data
    backbone = backbone() if callable(backbone) else backbone
    run = _Run(model_dir, data, backbone, settings, optimizer_facts, transformation,
               prompt_init if prompt_init is not None else PromptInit(), prompt_length=prompt_length,
               input_length=input_length, target_length=target_length, dropout_rate=dropout_rate,
               remat_policy=remat_policy, keep_checkpoints=keep_checkpoints,
               num_partitions=num_partitions, use_mesh=use_mesh, summaries=summaries)
    return run.train()


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


class _Run:
  """One segment of a run, assembled by `train` under its run folder and lock: the backbone placed on
  the mesh, the checkpointer, the initial or restored state; `train()` hands them to a
  `PromptTrainer` and reports the result."""

  def __init__(self, model_dir, data, backbone, settings: LoopSettings, optimizer_facts: dict,
               optimizer, prompt_init, *, prompt_length, input_length, target_length, dropout_rate,
               remat_policy, keep_checkpoints, num_partitions, use_mesh, summaries):
    self.model_dir = model_dir
    self.data, self.backbone, self.settings, self.optimizer = data, backbone, settings, optimizer
    self.optimizer_facts, self.prompt_init, self.summaries = optimizer_facts, prompt_init, summaries
    self.prompt_length, self.input_length, self.target_length = prompt_length, input_length, target_length
    self.config = backbone.config.replace(dropout_rate=dropout_rate, remat_policy=remat_policy)
    check_step_fits(self.config, batch_size=settings.batch_size, input_length=input_length,
                    target_length=target_length, prompt_length=prompt_length)
    _check_finite_weights(backbone)
    check_same_vocabulary(data.vocabulary, backbone.vocabulary, "The training examples")
    data.check_token_ids(self.config.vocab_size)
    self.names = list(data.names)
    use_mesh = jax.device_count() > 1 or num_partitions > 1 if use_mesh is None else use_mesh
    if use_mesh:  # a split the rules cannot make: one line naming NUM_PARTITIONS and the dimension
      partitioning.check_partitions(self.config, num_partitions, jax.device_count())
    self.mesh = partitioning.make_mesh(num_partitions) if use_mesh else None
    self.model = model_for(self.config)
    self.boxed = self.model.abstract_params()  # logical axes
    self.params = (partitioning.shard_params(backbone.params, self.boxed, self.mesh) if self.mesh is not None
                   else jax.device_put(backbone.params))
    if multihost.is_writer():  # under the run lock: no live run writes here
      remove_leftovers(self.model_dir)
    self.checkpointer = Checkpointer(os.path.join(self.model_dir, "checkpoints"), keep=keep_checkpoints)
    self.ckpt_shown = self.checkpointer.directory
    self.run_facts = {
        "sources": self.names, "prompt_shape": [len(self.names), prompt_length, self.config.emb_dim],
        "seed": settings.seed, "batch_size": settings.batch_size, "input_length": input_length,
        "target_length": target_length, "backbone_fingerprint": backbone.fingerprint, "examples": data.digest(),
        "dropout_rate": dropout_rate, **flat_facts("optimizer", optimizer_facts)}
    multihost.check_same_on_every_process(
        {**self.run_facts, "num_steps": settings.num_steps, "checkpoint_every": settings.checkpoint_every,
         "export_every": settings.export_every, "log_every": settings.log_every}, "train-prompts")

  def initial_state(self) -> tuple[PromptTrainState, int, int | None, list[int]]:
    """(state placed for the step, data position, the checkpoint resumed from or None, source seeds)."""
    seeds = [prompts_lib.source_seed(n) for n in self.names]
    latest = self.checkpointer.latest_step()  # process 0's: all resume alike
    if latest is None:
      initializer_for = self.prompt_init.initializers(self.model.embedding_table(self.backbone.params), self.data,
                                                      self.prompt_length)
      table, seeds = prompts_lib.initial_table(self.names, self.prompt_length, self.config.emb_dim,
                                               self.settings.seed, initializer_for)
      state, position = init_state(table, self.optimizer), 0
    else:
      if latest > self.settings.num_steps:
        raise ValueError(f"{self.ckpt_shown} holds checkpoint {latest}, past num_steps = "
                         f"{self.settings.num_steps}: give TRAIN_STEPS >= {latest} to continue, or a new model_dir.")
      state, position = _restore(self.checkpointer, latest, self.run_facts, self.optimizer, self.ckpt_shown)
    state = jax.device_put(state) if self.mesh is None else place_state(state, self.mesh)
    return state, position, latest, seeds

  def _write_run_info(self, state, latest: int | None) -> None:
    """config.gin (the first segment's; a resumed one writes config-<its first step>.gin), model-info.txt."""
    if not multihost.is_writer():
      return
    first = latest is None or not storage.as_path(self.model_dir, "model_dir").joinpath("config.gin").exists()
    storage.write_text(os.path.join(self.model_dir, "config.gin" if first else f"config-{latest}.gin"),
                         gin.operative_config_str())
    storage.write_text(os.path.join(self.model_dir, "model-info.txt"),
                         _model_info(self.config, self.params, self.boxed, state, self.mesh))

  def _exporter(self, seeds: list[int]) -> Callable[[int, PromptTrainState], None]:
    export_dir, source_examples = os.path.join(self.model_dir, "export"), self.data.counts().tolist()
    extra = {"seed": self.settings.seed, "prompt_init": dataclasses.asdict(self.prompt_init),
             "batch_size": self.settings.batch_size, "input_length": self.input_length,
             "target_length": self.target_length, "dropout_rate": self.config.dropout_rate,
             "num_steps": self.settings.num_steps, "backbone": self.backbone.description,
             **({"multitask_of": self.data.merged_from} if self.data.merged_from else {}),
             "optimizer": self.optimizer_facts, "learning_rate": self.optimizer_facts.get("learning_rate"),
             "versions": {"jax": jax.__version__, "optax": optax.__version__}}

    def export(done: int, host: PromptTrainState) -> None:
      table = export_lib.export_prompts(
          export_dir, host.prompts, self.names, done, backbone_fingerprint=self.backbone.fingerprint, seeds=seeds,
          source_steps=host.source_steps.tolist(), source_examples=source_examples, extra=extra)
      logger.info("Exported prompts of step %d to %s.", done, table)
    return export

  def train(self) -> TrainResult:
    state, position, latest, seeds = self.initial_state()
    batches = BatchIterator(self.data, batch_size=self.settings.batch_size, input_length=self.input_length,
                            target_length=self.target_length, seed=self.settings.seed, position=position)
    self._write_run_info(state, latest)
    writer = _summary_writer(os.path.join(self.model_dir, "train"), self.summaries)
    loop = PromptTrainer(self.model, self.params, self.optimizer, mesh=self.mesh, checkpointer=self.checkpointer,
                         exporter=self._exporter(seeds), settings=self.settings, run_facts=self.run_facts,
                         checkpoint_shown=self.ckpt_shown, writer=writer)
    try:
      state = loop.fit(state, batches, last_saved=latest)
    finally:
      if writer is not None:
        writer.close()
      self.checkpointer.close()
    # The other processes end only once process 0 has exported: a failure there stops them too.
    multihost.barrier("train-prompts: exported")
    export_dir, ckpt_dir = os.path.join(self.model_dir, "export"), self.checkpointer.directory
    num_steps = self.settings.num_steps
    if latest is None:
      logger.info("Trained %d steps from scratch; exports in %s.", num_steps, export_dir)
    else:
      logger.info("Resumed from step %d, trained %d more steps to %d; exports in %s.", latest,
                  num_steps - latest, num_steps, export_dir)
    return TrainResult(jax.device_get(state), self.names, num_steps, export_dir, ckpt_dir, resumed_from=latest)

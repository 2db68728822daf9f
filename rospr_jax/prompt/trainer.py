"""The prompt-tuning loop: prompt initialization, checkpoints, exports, metrics.

`train(...)` is gin-configurable (gin/prompt_tuning/*.gin bind it; `rospr train-prompts` calls it)
and plain Python alike. One run trains one soft prompt per source on a frozen backbone:

    <model_dir>/config.gin             the operative gin config of the first segment (T5X's name)
    <model_dir>/config-<step>.gin      that of a segment resumed from checkpoint <step>
    <model_dir>/model-info.txt         backbone and prompt shapes, logical axes, mesh
    <model_dir>/checkpoints/<step>/    orbax: prompts, optimizer states, step, data position
    <model_dir>/export/...             per-source .npy prompts and the [S, P, H] table (export.py)
    <model_dir>/train/                 TensorBoard summaries (when clu and TensorFlow import)

A run that finds checkpoints in its model_dir resumes from the newest one (same sources, shapes,
seed, batch size, examples, dropout, optimizer settings and backbone, or it refuses naming the
difference; temporaries and unfinished checkpoints of killed runs are removed first, by name) and
continues the same batch stream, so it ends with the prompts an uninterrupted run would have. A non-finite loss stops the run
with `NonFiniteLossError` before anything after the last good checkpoint is written.

Every `log_every` steps a T5X-style line `[step] loss=... steps/s=... seqs/s=... tokens/s=...` is
logged and written as summaries (`loss`, `timing/*`): loss is the mean over the sources in each batch
of their mean token loss, averaged over the steps since the last line; tokens/s counts the non-padding
input and target tokens.

Vocabulary: S sources, P prompt length, H model dim, B batch, T input length, L target length.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from rospr_jax import artifacts, paths
from rospr_jax.model import EOS_ID, T5Config, model_for
from rospr_jax.model import partitioning
from rospr_jax.prompt import export as export_lib
from rospr_jax.prompt import prompts as prompts_lib
from rospr_jax.prompt.checkpointing import CheckpointMismatchError, Checkpointer
from rospr_jax.prompt.input_pipeline import BatchIterator, SourceExamples
from rospr_jax.prompt.train_step import (PromptTrainState, default_optimizer, dropout_key, init_state,
                                         make_train_step, place_batch, place_state)
from rospr_jax.tokenization import check_same_vocabulary

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """The loss or a prompt became NaN or infinite; the run stopped without saving anything newer."""


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
    if os.path.isdir(self.file):
      exported = export_lib.load_prompts(self.file)
      rows = {name: exported.prompts[i] for i, name in enumerate(exported.names)}
      missing = [n for n in data.names if n not in rows]
      if missing:
        raise ValueError(f"{self.file}: no prompt for sources {missing}.")
      return lambda s: prompts_lib.from_array(rows[data.names[s]])
    if not os.path.isfile(self.file):
      raise FileNotFoundError(f"Prompt file not found: {self.file}")
    value = np.load(self.file, allow_pickle=False)
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
    return metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0,
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
  if isinstance(learning_rate, bool) or (isinstance(learning_rate, (int, float)) and
                                         not 0 < learning_rate < float("inf")):
    raise ValueError(f"learning_rate (LEARNING_RATE) must be a finite number > 0, not {learning_rate!r}.")
  if isinstance(learning_rate, str) and not learning_rate.startswith("@"):
    raise ValueError(f"learning_rate (LEARNING_RATE) must be a finite number > 0, not {learning_rate!r}.")


# What `default_optimizer()` is (train_step.py), for the records of a run that gives no optimizer.
_DEFAULT_OPTIMIZER = {"name": "optax.adafactor", "learning_rate": 0.3, "decay_rate": 0.8,
                      "multiply_by_parameter_scale": False, "weight_decay_rate": 1e-5}
_ORBAX_TMP = re.compile(r"^\d+\.orbax-checkpoint-tmp(-\d+)?$")


def _gin_value(value: Any, depth: int = 0) -> Any:
  """A gin binding as JSON: a configurable reference as {"name": selector, its bindings...}, a macro
  as its value."""
  if isinstance(value, gin.config.ConfigurableReference):
    if value.selector == "gin.macro":
      return _gin_value(gin.query_parameter("/".join(value.scopes) + "/gin.macro.value"), depth)
    if not value.evaluate or depth > 4:
      return f"@{value.scoped_selector}"
    bindings = gin.get_bindings(value.scoped_selector, resolve_references=False)
    return {"name": value.scoped_selector, **{k: _gin_value(v, depth + 1) for k, v in sorted(bindings.items())}}
  if isinstance(value, (list, tuple)):
    return [_gin_value(v, depth) for v in value]
  if isinstance(value, dict):
    return {str(k): _gin_value(v, depth) for k, v in value.items()}
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def describe_optimizer(optimizer: optax.GradientTransformation | None) -> dict:
  """The optimizer's settings as JSON (name, learning rate or schedule, the rest of its bindings),
  for the resume check and the export manifest: gin's bindings of `trainer.train.optimizer` when gin
  configured it, `default_optimizer`'s with None; an optax object given in Python cannot be read."""
  try:
    bound = gin.query_parameter("trainer.train.optimizer")
  except (ValueError, KeyError):
    bound = None
  if isinstance(bound, gin.config.ConfigurableReference):
    described = _gin_value(bound)
    if isinstance(described, dict):
      return described
  if optimizer is None:
    return dict(_DEFAULT_OPTIMIZER)
  return {"name": "unrecorded (an optax transformation given in Python)"}


def flat_facts(prefix: str, value: Any) -> dict:
  """{"optimizer": "optax.adam", "optimizer.learning_rate": 0.3, ...}: one fact per setting, so that a
  refused resume names the one that differs."""
  if not isinstance(value, dict):
    return {prefix: value}
  facts = {prefix: value.get("name")}
  for key, item in value.items():
    if key != "name":
      facts.update(flat_facts(f"{prefix}.{key}", item))
  return facts


def remove_leftovers(model_dir: str) -> list[str]:
  """Removes what killed runs left in `model_dir` (the caller holds its run lock): this project's
  temporaries of dead writers (`artifacts.remove_leftovers`) and orbax's unfinished checkpoints
  `checkpoints/<step>.orbax-checkpoint-tmp-*`; logs each path removed."""
  removed = artifacts.remove_leftovers(model_dir, recursive=True)
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
    with open(os.path.join(checkpointer.directory, str(step), "run", "metadata"), encoding="utf-8") as f:
      run = json.load(f)
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


def _raise_if_non_finite(values: list[dict], done: int, last_saved: int | None, ckpt_dir: str) -> None:
  """Raises NonFiniteLossError for the first of the metrics of steps done - len(values) + 1 .. done that
  is not finite."""
  for i, m in enumerate(values):
    if not m["finite"]:
      bad = done - len(values) + i + 1
      good = f"step {last_saved} in {ckpt_dir}" if last_saved is not None else "none (nothing was saved)"
      raise NonFiniteLossError(
          f"Non-finite loss ({float(m['loss_sum'])}) or prompt at step {bad}: training stopped. The last "
          f"good checkpoint is {good}; lower the learning rate or check the data of that step's sources.")


@gin.configurable
def train(*, model_dir: str = gin.REQUIRED, examples: Any = gin.REQUIRED, backbone: Any = gin.REQUIRED,
          num_steps: int = gin.REQUIRED, prompt_length: int = prompts_lib.DEFAULT_LENGTH,
          prompt_init: PromptInit | None = None, optimizer: optax.GradientTransformation | None = None,
          batch_size: int = 32, input_length: int = 512, target_length: int = 64,
          dropout_rate: float = 0.1, remat_policy: str = "minimal", seed: int = 0,
          checkpoint_every: int = 1000,
          keep_checkpoints: int | None = 3, export_every: int | None = None, log_every: int = 100,
          num_partitions: int = 1, use_mesh: bool | None = None, summaries: bool = True,
          dropout_rng_impl: str | None = "auto") -> TrainResult:
  """Trains one soft prompt per source; see the module docstring for what is written.

  Args:
    model_dir: the run directory.
    examples: a `SourceExamples`, or a callable returning one (e.g. `seqio_input.seqio_sources`).
    backbone: a `rospr_jax.backbone.Backbone` (its config carries the dtype and the attention
      kernel), or a callable returning one (e.g. `rospr_jax.backbone.load_backbone`).
    num_steps: total training steps (a resumed run continues up to it).
    prompt_length: P.
    prompt_init: how prompts start (default: random uniform, scale 0.5).
    optimizer: an optax transformation applied to each prompt separately (default: `default_optimizer`).
    batch_size, input_length, target_length: B, T, L of every batch.
    dropout_rate: the backbone's dropout while training (T5X's masks, shared along the length:
      `T5Config.dropout_broadcast_dims`).
    remat_policy: activations recomputed in the backward pass (`T5Config.remat_policy`). "minimal"
      keeps T0_3B's batch-32 step at about 13.5 GiB of saved activations instead of 69 GiB, for about 1%
      more FLOPs; "none" is faster where memory allows (the tiny model's CPU step: 1.2x faster).
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

  Returns:
    The final state (on the host), source names, step, export directory and checkpoint directory.
  """
  export_every = checkpoint_every if export_every is None else export_every
  _check_settings(num_steps=num_steps, batch_size=batch_size, input_length=input_length,
                  target_length=target_length, prompt_length=prompt_length,
                  checkpoint_every=checkpoint_every, export_every=export_every, log_every=log_every,
                  num_partitions=num_partitions, dropout_rate=dropout_rate)
  _check_learning_rate(describe_optimizer(optimizer).get("learning_rate"))
  model_url = model_dir if paths.is_url(model_dir) else os.path.abspath(model_dir)
  # MODEL_DIR at a URL: a local working copy, published after each checkpoint; a rerun on any machine
  # resumes from the last checkpoint published (paths.run_directory). Process 0 alone writes there.
  with paths.run_directory(model_url, "model_dir", writes=paths.writes_outputs()) as run_folder:
    model_dir = run_folder.local
    os.makedirs(model_dir, exist_ok=True)
    with (artifacts.run_lock(model_dir, "train-prompts") if jax.process_index() == 0
          else contextlib.nullcontext()):
      data = examples() if callable(examples) else examples
      data.check_every_source_has_examples()
      backbone = backbone() if callable(backbone) else backbone
      optimizer_facts = describe_optimizer(optimizer)  # before the default replaces None
      optimizer = optimizer if optimizer is not None else default_optimizer()
      prompt_init = prompt_init if prompt_init is not None else PromptInit()
      config = backbone.config.replace(dropout_rate=dropout_rate, remat_policy=remat_policy)
      check_same_vocabulary(data.vocabulary, backbone.vocabulary, "The training examples")
      data.check_token_ids(config.vocab_size)
      names = list(data.names)
      num_sources, dim = len(names), config.emb_dim

      use_mesh = jax.device_count() > 1 or num_partitions > 1 if use_mesh is None else use_mesh
      mesh = partitioning.make_mesh(num_partitions) if use_mesh else None
      model = model_for(config)
      boxed = model.abstract_params()  # logical axes
      if mesh is not None:
        params = partitioning.shard_params(backbone.params, boxed, mesh)
      else:
        params = jax.device_put(backbone.params)

      if jax.process_index() == 0:  # under the run lock: no live run writes here
        remove_leftovers(model_dir)
      checkpointer = Checkpointer(os.path.join(model_dir, "checkpoints"), keep=keep_checkpoints)
      ckpt_dir = checkpointer.directory
      # What messages name: the URL's checkpoints, not this machine's working copy of them.
      ckpt_shown = f"{model_url}/checkpoints" if paths.is_url(model_url) else ckpt_dir
      run_facts = {"sources": names, "prompt_shape": [num_sources, prompt_length, dim], "seed": seed,
                   "batch_size": batch_size, "input_length": input_length, "target_length": target_length,
                   "backbone_fingerprint": backbone.fingerprint, "examples": data.digest(),
                   "dropout_rate": dropout_rate, **flat_facts("optimizer", optimizer_facts)}
      seeds = [prompts_lib.source_seed(n) for n in names]
      paths.check_same_on_every_process({**run_facts, "num_steps": num_steps, "checkpoint_every": checkpoint_every,
                                         "export_every": export_every, "log_every": log_every}, "train-prompts")
      latest = checkpointer.latest_step()  # process 0's: all resume alike
      if latest is None:
        initializer_for = prompt_init.initializers(model.embedding_table(backbone.params), data,
                                                   prompt_length)
        table, seeds = prompts_lib.initial_table(names, prompt_length, dim, seed, initializer_for)
        state = init_state(table, optimizer)
        position = 0
      else:
        if latest > num_steps:
          raise ValueError(f"{ckpt_shown} holds checkpoint {latest}, past num_steps = {num_steps}: give "
                           f"TRAIN_STEPS >= {latest} to continue, or a new model_dir.")
        state, position = _restore(checkpointer, latest, run_facts, optimizer, ckpt_shown)
      state = jax.device_put(state) if mesh is None else place_state(state, mesh)

      batches = BatchIterator(data, batch_size=batch_size, input_length=input_length,
                              target_length=target_length, seed=seed, position=position)
      step_fn = make_train_step(config, optimizer, mesh=mesh)
      export_dir = os.path.join(model_dir, "export")
      source_examples = data.counts().tolist()
      manifest_extra = {"seed": seed, "prompt_init": dataclasses.asdict(prompt_init),
                        "batch_size": batch_size, "input_length": input_length, "target_length": target_length,
                        "dropout_rate": dropout_rate, "num_steps": num_steps, "backbone": backbone.description,
                        "optimizer": optimizer_facts, "learning_rate": optimizer_facts.get("learning_rate"),
                        "versions": {"jax": jax.__version__, "optax": optax.__version__}}

      if jax.process_index() == 0:
        # The first segment's config stays config.gin; a resumed one writes config-<its first step>.gin.
        first = latest is None or not os.path.exists(os.path.join(model_dir, "config.gin"))
        artifacts.write_text(os.path.join(model_dir, "config.gin" if first else f"config-{latest}.gin"),
                             gin.operative_config_str())
        artifacts.write_text(os.path.join(model_dir, "model-info.txt"), _model_info(config, params, boxed, state, mesh))
      writer = _summary_writer(os.path.join(model_dir, "train"), summaries)

      def save(done: int, checkpoint: bool, export: bool) -> None:
        # Export first (as prompt-tuning does): a run killed in between resumes from an earlier checkpoint
        # and rewrites the same export, so a checkpoint never lacks its export.
        if export and jax.process_index() == 0:
          host = jax.device_get(state)
          table = export_lib.export_prompts(
              export_dir, host.prompts, names, done, backbone_fingerprint=backbone.fingerprint, seeds=seeds,
              source_steps=host.source_steps.tolist(), source_examples=source_examples, extra=manifest_extra)
          logger.info("Exported prompts of step %d to %s.", done, table)
        if checkpoint:
          checkpointer.save(done, state, {**run_facts, "position": batches.position})
          if jax.process_index() == 0:
            logger.info("Saved checkpoint %d to %s.", done, ckpt_shown)
        run_folder.publish()  # a URL's MODEL_DIR: this step's checkpoint and export, uploaded

      rng = dropout_key(seed, dropout_rng_impl)
      start = int(jax.device_get(state.step))
      pending: list[dict] = []
      tokens = 0
      last_saved = latest
      last_time, last_step = time.perf_counter(), start
      try:
        for step in range(start, num_steps):
          host_batch = next(batches)
          tokens += int((host_batch["inputs"] > 0).sum() + (host_batch["targets"] > 0).sum())
          state, metrics = step_fn(state, params, place_batch(host_batch, mesh), rng)
          pending.append(metrics)
          done = step + 1
          saving = done % checkpoint_every == 0 or done % export_every == 0 or done == num_steps
          if step == start:  # compilation: reported apart, and kept out of the throughput figures
            jax.block_until_ready(state.prompts)
            logger.info("Step %d compiled and ran in %.1f s.", done, time.perf_counter() - last_time)
            if not (done % log_every == 0 or saving):
              last_time, last_step, tokens = time.perf_counter(), done, 0
          if done % log_every == 0 or saving:
            values = jax.device_get(pending)
            _raise_if_non_finite(values, done, last_saved, ckpt_shown)
            now = time.perf_counter()
            elapsed, steps = max(now - last_time, 1e-9), done - last_step
            loss = float(np.mean([m["loss"] for m in values]))
            scalars = {"loss": loss, "num_sources_per_batch": float(np.mean([m["num_sources"] for m in values])),
                       "timing/steps_per_second": steps / elapsed,
                       "timing/seqs_per_second": steps * batch_size / elapsed,
                       "timing/tokens_per_second": tokens / elapsed}
            logger.info("[%d] loss=%.4f sources/batch=%.1f steps/s=%.3g seqs/s=%.4g tokens/s=%.4g", done, loss,
                         scalars["num_sources_per_batch"], scalars["timing/steps_per_second"],
                         scalars["timing/seqs_per_second"], scalars["timing/tokens_per_second"])
            if writer is not None:
              writer.write_scalars(done, scalars)
              writer.flush()
            pending, tokens = [], 0
            last_time, last_step = time.perf_counter(), done
          if saving:
            checkpoint = done % checkpoint_every == 0 or done == num_steps
            save(done, checkpoint, export=done % export_every == 0 or done == num_steps)
            last_saved = done if checkpoint else last_saved
            last_time = time.perf_counter()
      finally:
        if writer is not None:
          writer.close()
        checkpointer.close()
      # The other processes end only once process 0 has exported: a failure there stops them too.
      paths.from_process_zero(np.zeros((), np.int32))
      if paths.is_url(model_url):  # what the user reads: the published folders
        export_dir, ckpt_dir = f"{model_url}/export", ckpt_shown
      if latest is None:
        logger.info("Trained %d steps from scratch; exports in %s.", num_steps, export_dir)
      else:
        logger.info("Resumed from step %d, trained %d more steps to %d; exports in %s.", latest,
                    num_steps - latest, num_steps, export_dir)
      return TrainResult(jax.device_get(state), names, num_steps, export_dir, ckpt_dir, resumed_from=latest)

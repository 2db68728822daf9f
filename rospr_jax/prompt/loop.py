"""`PromptTrainer`: the training loop of one prompt table, handed everything it uses (T5X's split).

The gin entry point `trainer.train` assembles the pieces (run folder and lock, data, backbone,
partitioner, checkpointer, initial or restored state) and hands them to a `PromptTrainer`, which only steps,
logs, checkpoints and exports:

    trainer = PromptTrainer(model, params, optimizer, partitioner=partitioner, checkpointer=checkpointer,
                            exporter=exporter, settings=LoopSettings(...), run_facts=run_facts)
    state = trainer.fit(state, batches, last_saved=latest)

On an accelerator the first step is compiled before it runs and refused, naming the macros, when it
needs more memory than the device has (`model.memory_check`); it then runs from that compilation.

Every `log_every` steps a T5X-style line `[step] loss=... steps/s=... seqs/s=... tokens/s=...` is
logged and written as summaries (`loss`, `timing/*`): loss is the mean over the sources in each batch
of their mean token loss, averaged over the steps since the last line; tokens/s counts the non-padding
input and target tokens. A non-finite loss stops the loop with `NonFiniteLossError` before anything
after the last good checkpoint is written. A preemption (SIGTERM, SIGINT: `rospr_jax.preemption`)
stops it after the step every process agrees on, checkpointed there (no export), with
`preemption.Preempted`.

Vocabulary: S sources, P prompt length, H model dim, B batch, T input length, L target length.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import jax
import numpy as np
import optax

from rospr_jax import multihost, preemption
from rospr_jax.model import partitioning
from rospr_jax.model import memory_check
from rospr_jax.prompt.checkpointing import Checkpointer
from rospr_jax.prompt.input_pipeline import BatchIterator
from rospr_jax.prompt.train_step import PromptTrainState, dropout_key, make_train_step, place_batch

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """The loss or a prompt became NaN or infinite; the run stopped without saving anything newer."""


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """How long to train and how often to log, checkpoint and export (the last step always saves)."""
  num_steps: int
  batch_size: int
  checkpoint_every: int
  export_every: int
  log_every: int
  seed: int
  dropout_rng_impl: str | None = "auto"


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


class PromptTrainer:
  """Steps a replicated `PromptTrainState` over a frozen backbone, logging, checkpointing and exporting.

  Args:
    model: the backbone (`PromptedBackbone`; its config holds the dtype, attention kernel, dropout and
      remat policy of the step).
    params: the frozen backbone parameters, placed (sharded by `partitioner`, or on the device).
    optimizer: the optax transformation applied to each prompt separately.
    partitioner: the run's `partitioning.Partitioner` (its data x model mesh), or None on one device.
    checkpointer: where checkpoints go (`Checkpointer`); `checkpoint_shown` names them in messages.
    exporter: `exporter(step, host_state)` writes the prompt export of `step` (called on process 0).
    run_facts: what each checkpoint records beside the state (the resume check reads it back).
    writer: a clu metric writer for summaries, or None.
    memory_remedy: what to change (the macros and their values) when, on an accelerator, the compiled
      step needs more memory than the device has (`model.memory_check`: checked before the first step).
  """

  def __init__(self, model, params, optimizer: optax.GradientTransformation, *,
               partitioner: partitioning.Partitioner | None, checkpointer: Checkpointer,
               exporter: Callable[[int, PromptTrainState], None], settings: LoopSettings, run_facts: dict,
               checkpoint_shown: str, writer: Any = None, memory_remedy: str | None = None):
    self.params, self.partitioner, self.settings = params, partitioner, settings
    self.memory_remedy = memory_remedy or f"lower BATCH_SIZE ({settings.batch_size})"
    self.checkpointer, self.checkpoint_shown = checkpointer, checkpoint_shown
    self.exporter, self.run_facts, self.writer = exporter, run_facts, writer
    self.step_fn = make_train_step(model, optimizer, partitioner=partitioner)

  def save(self, state: PromptTrainState, done: int, position: int, *, checkpoint: bool, export: bool) -> None:
    """Exports first (as prompt-tuning does: a run killed in between resumes from an earlier checkpoint
    and rewrites the same export, so a checkpoint never lacks its export), then checkpoints."""
    if export and multihost.is_writer():
      self.exporter(done, jax.device_get(state))
    if checkpoint:
      self.checkpointer.save(done, state, {**self.run_facts, "position": position})
      if multihost.is_writer():
        logger.info("Saved checkpoint %d to %s.", done, self.checkpoint_shown)

  def fit(self, state: PromptTrainState, batches: BatchIterator, *, last_saved: int | None) -> PromptTrainState:
    """Trains from `state.step` to `settings.num_steps`; returns the final (device) state."""
    s = self.settings
    rng = dropout_key(s.seed, s.dropout_rng_impl)
    start = int(jax.device_get(state.step))
    pending: list[dict] = []
    tokens = 0
    last_time, last_step = time.perf_counter(), start
    noticed = preemption.begin(start)  # a preemption notice before the first step: stop after it
    for step in range(start, s.num_steps):
      host_batch = next(batches)
      tokens += int((host_batch["inputs"] > 0).sum() + (host_batch["targets"] > 0).sum())
      batch = place_batch(host_batch, self.partitioner)
      if step == start:  # on an accelerator, its compiled memory against the device's, before it runs
        memory_check.check_compiled_step(self.step_fn, (state, self.params, batch, rng), what="One training step",
                                  remedy=self.memory_remedy)
      state, metrics = self.step_fn(state, self.params, batch, rng)
      pending.append(metrics)
      done = step + 1
      # Every process asks at every step, with the global step (JAX's service tracks the last one asked,
      # as orbax asks too); the last step saves and ends anyway.
      preempted = (preemption.reached(done) or noticed) and done < s.num_steps
      saving = (done % s.checkpoint_every == 0 or done % s.export_every == 0 or done == s.num_steps
                or preempted)
      if step == start:  # compilation: reported apart, and kept out of the throughput figures
        jax.block_until_ready(state.prompts)
        logger.info("Step %d compiled and ran in %.1f s.", done, time.perf_counter() - last_time)
        if not (done % s.log_every == 0 or saving):
          last_time, last_step, tokens = time.perf_counter(), done, 0
      if done % s.log_every == 0 or saving:
        values = jax.device_get(pending)
        _raise_if_non_finite(values, done, last_saved, self.checkpoint_shown)
        self._log(values, done, done - last_step, max(time.perf_counter() - last_time, 1e-9), tokens)
        pending, tokens = [], 0
        last_time, last_step = time.perf_counter(), done
      if saving:
        checkpoint = done % s.checkpoint_every == 0 or done == s.num_steps or preempted
        self.save(state, done, batches.position, checkpoint=checkpoint,
                  export=done % s.export_every == 0 or done == s.num_steps)
        last_saved = done if checkpoint else last_saved
        last_time = time.perf_counter()
      if preempted:
        preemption.stop(f"step {done}", "checkpoint saved")
    return state

  def _log(self, values: list[dict], done: int, steps: int, elapsed: float, tokens: int) -> None:
    loss = float(np.mean([m["loss"] for m in values]))
    scalars = {"loss": loss, "num_sources_per_batch": float(np.mean([m["num_sources"] for m in values])),
               "timing/steps_per_second": steps / elapsed,
               "timing/seqs_per_second": steps * self.settings.batch_size / elapsed,
               "timing/tokens_per_second": tokens / elapsed}
    logger.info("[%d] loss=%.4f sources/batch=%.1f steps/s=%.3g seqs/s=%.4g tokens/s=%.4g", done, loss,
                scalars["num_sources_per_batch"], scalars["timing/steps_per_second"],
                scalars["timing/seqs_per_second"], scalars["timing/tokens_per_second"])
    if self.writer is not None:
      self.writer.write_scalars(done, scalars)
      self.writer.flush()


def step_memory_lower_bound(config, *, batch_size: int, input_length: int, target_length: int,
                            prompt_length: int) -> int:
  """Bytes one training step needs at the least, from the shapes alone (before anything is allocated
  or compiled), with S = PROMPT_LENGTH + INPUT_LENGTH encoder and T = TARGET_LENGTH decoder positions:

  - on the host, the batch (inputs and targets, int32, twice) and the decoder's causal layout, a
    [T, T] bool array (`t5._choice_self_attention_layout`);
  - on the device, the relative position biases of both stacks, [1, A, S, S] and [1, A, T, T]
    (every attention implementation builds them), the states [B, S + T, H] of one layer, and, with
    einsum attention, one layer's largest attention weights [B, A, Tq, Tk] twice (the weights and
    their gradient in the backward pass): the encoder's [S, S] or the decoder's [T, T] and [T, S].

  A lower bound whatever the remat policy and whatever XLA fuses: these exist at once, so a step over
  it cannot run; a step under it may still not fit (XLA decides)."""
  s, t = prompt_length + input_length, target_length
  itemsize = np.dtype(config.dtype).itemsize
  host = 2 * 4 * batch_size * (input_length + target_length) + t * t
  biases = itemsize * config.num_heads * (s * s + t * t)
  states = itemsize * batch_size * (s + t) * config.emb_dim
  weights = 0
  if config.attention_impl == "einsum":
    weights = 2 * itemsize * batch_size * config.num_heads * max(s * s, t * t + t * s)
  return host + biases + states + weights


def check_step_fits(config, **shapes) -> None:
  """Refuses, naming the gin macros, a step whose lower bound exceeds the memory of this process's device
  (`partitioning.memory_limit`): such a run was killed by the kernel after a while, printing nothing."""
  need = step_memory_lower_bound(config, **shapes)
  limit, where = partitioning.memory_limit()
  if need > limit:
    raise ValueError(
        f"One training step needs at least {need / 2**30:,.1f} GiB (BATCH_SIZE {shapes['batch_size']} rows of "
        f"PROMPT_LENGTH {shapes['prompt_length']} + INPUT_LENGTH {shapes['input_length']} input and "
        f"TARGET_LENGTH {shapes['target_length']} target tokens), more than the {limit / 2**30:,.1f} GiB of "
        f"{where}; lower BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH or PROMPT_LENGTH.")

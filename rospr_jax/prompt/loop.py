"""`PromptTrainer`: the training loop of one prompt table, handed everything it uses (T5X's split).

The gin entry point `trainer.train` assembles the pieces (run folder and lock, data, backbone,
partitioner, checkpointer, initial or restored state) and hands them to a `PromptTrainer`, which only
steps, logs, checkpoints and exports:

    trainer = PromptTrainer(make_train_step(model, optimizer, partitioner=partitioner), params, rng,
                            partitioner=partitioner, checkpointer=checkpointer, exporter=exporter,
                            loop=LoopConfig(...), checkpointing=CheckpointConfig(...), run_facts=run_facts)
    state = trainer.fit(state, batches, last_saved=latest)

`tests/prompt/loop_test.py` runs it with a fake step, checkpointer and exporter.

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

import logging
import time
from typing import Any, Callable

import jax
import numpy as np

from rospr_jax import multihost, preemption
from rospr_jax.model import memory_check
from rospr_jax.prompt.configs import CheckpointConfig, LoopConfig
from rospr_jax.prompt.input_pipeline import BatchIterator
from rospr_jax.prompt.train_step import PromptTrainState, place_batch

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """The loss or a prompt became NaN or infinite; the run stopped without saving anything newer."""


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


# step_fn(state, params, batch, rng) -> (state, metrics): `train_step.make_train_step`'s step.
StepFn = Callable[[PromptTrainState, Any, dict, jax.Array], tuple[PromptTrainState, dict]]


class PromptTrainer:
  """Steps a replicated `PromptTrainState` over a frozen backbone, logging, checkpointing and exporting.

  Args:
    step_fn: one training step (`train_step.make_train_step(model, optimizer, partitioner=partitioner)`).
    params: the frozen backbone parameters, placed (sharded by `partitioner`, or on the device).
    rng: the dropout key of every step (`train_step.dropout_key`).
    partitioner: the run's `partitioning.Partitioner` (its data x model mesh batches are placed on), or
      None on one device.
    checkpointer: where checkpoints go (`checkpointing.Checkpointer`: `save(step, state, run)` and
      `directory`, which messages name).
    exporter: `exporter(step, host_state)` writes the prompt export of `step` (called on process 0).
    loop, checkpointing: how long to train; how often to log, checkpoint and export.
    run_facts: what each checkpoint records beside the state (the resume check reads it back).
    writer: a clu metric writer for summaries, or None.
    memory_remedy: what to change (the macros and their values) when, on an accelerator, the compiled
      step needs more memory than the device has (`model.memory_check`: checked before the first step).
  """

  def __init__(self, step_fn: StepFn, params, rng: jax.Array, *, partitioner, checkpointer,
               exporter: Callable[[int, PromptTrainState], None], loop: LoopConfig,
               checkpointing: CheckpointConfig, run_facts: dict, writer: Any = None,
               memory_remedy: str = "lower BATCH_SIZE or raise NUM_PARTITIONS"):
    self.step_fn, self.params, self.rng, self.partitioner = step_fn, params, rng, partitioner
    self.memory_remedy = memory_remedy
    self.loop, self.checkpointing = loop, checkpointing
    self.checkpointer, self.exporter, self.run_facts, self.writer = checkpointer, exporter, run_facts, writer

  def save(self, state: PromptTrainState, done: int, position: int, *, checkpoint: bool, export: bool) -> None:
    """Exports first (as prompt-tuning does: a run killed in between resumes from an earlier checkpoint
    and rewrites the same export, so a checkpoint never lacks its export), then checkpoints."""
    if export and multihost.is_writer():
      self.exporter(done, jax.device_get(state))
    if checkpoint:
      self.checkpointer.save(done, state, {**self.run_facts, "position": position})
      if multihost.is_writer():
        logger.info("Saved checkpoint %d to %s.", done, self.checkpointer.directory)

  def _due(self, done: int, preempted: bool) -> tuple[bool, bool]:
    """(checkpoint, export) after step `done`: at their intervals, at the last step, and a checkpoint
    (only) at a preemption."""
    last = done == self.loop.num_steps
    return (done % self.checkpointing.checkpoint_every == 0 or last or preempted,
            done % self.checkpointing.export_interval == 0 or last)

  def fit(self, state: PromptTrainState, batches: BatchIterator, *, last_saved: int | None) -> PromptTrainState:
    """Trains from `state.step` to `loop.num_steps`; returns the final (device) state."""
    start = int(jax.device_get(state.step))
    pending: list[dict] = []
    counts = [0, 0]  # sequences and non-padding tokens since the last log line
    last_time, last_step = time.perf_counter(), start
    noticed = preemption.begin(start)  # a preemption notice before the first step: stop after it
    for step in range(start, self.loop.num_steps):
      host_batch = next(batches)
      counts[0] += len(host_batch["inputs"])
      counts[1] += int((host_batch["inputs"] > 0).sum() + (host_batch["targets"] > 0).sum())
      batch = place_batch(host_batch, self.partitioner)
      if step == start:  # on an accelerator, its compiled memory against the device's, before it runs
        memory_check.check_compiled_step(self.step_fn, (state, self.params, batch, self.rng),
                                         what="One training step", remedy=self.memory_remedy)
      state, metrics = self.step_fn(state, self.params, batch, self.rng)
      pending.append(metrics)
      done = step + 1
      # Every process asks at every step, with the global step (JAX's service tracks the last one asked,
      # as orbax asks too); the last step saves and ends anyway.
      preempted = (preemption.reached(done) or noticed) and done < self.loop.num_steps
      checkpoint, export = self._due(done, preempted)
      logging_due = done % self.loop.log_every == 0 or checkpoint or export
      if step == start:  # compilation: reported apart, and kept out of the throughput figures
        jax.block_until_ready(state.prompts)
        logger.info("Step %d compiled and ran in %.1f s.", done, time.perf_counter() - last_time)
        if not logging_due:
          last_time, last_step, counts = time.perf_counter(), done, [0, 0]
      if logging_due:
        values = jax.device_get(pending)
        _raise_if_non_finite(values, done, last_saved, self.checkpointer.directory)
        self._log(values, done, done - last_step, max(time.perf_counter() - last_time, 1e-9), counts)
        pending, counts = [], [0, 0]
        last_time, last_step = time.perf_counter(), done
      if checkpoint or export:
        self.save(state, done, batches.position, checkpoint=checkpoint, export=export)
        last_saved = done if checkpoint else last_saved
        last_time = time.perf_counter()
      if preempted:
        preemption.stop(f"step {done}", "checkpoint saved")
    return state

  def _log(self, values: list[dict], done: int, steps: int, elapsed: float, counts: list[int]) -> None:
    loss = float(np.mean([m["loss"] for m in values]))
    scalars = {"loss": loss, "num_sources_per_batch": float(np.mean([m["num_sources"] for m in values])),
               "timing/steps_per_second": steps / elapsed,
               "timing/seqs_per_second": counts[0] / elapsed,
               "timing/tokens_per_second": counts[1] / elapsed}
    logger.info("[%d] loss=%.4f sources/batch=%.1f steps/s=%.3g seqs/s=%.4g tokens/s=%.4g", done, loss,
                scalars["num_sources_per_batch"], scalars["timing/steps_per_second"],
                scalars["timing/seqs_per_second"], scalars["timing/tokens_per_second"])
    if self.writer is not None:
      self.writer.write_scalars(done, scalars)
      self.writer.flush()

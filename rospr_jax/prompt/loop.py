"""`PromptTrainer`: the training loop of one prompt table, handed everything it uses (T5X's split).

The gin entry point `trainer.train` assembles the pieces (run folder and lock, data, backbone, mesh,
checkpointer, initial or restored state) and hands them to a `PromptTrainer`, which only steps,
logs, checkpoints and exports:

    trainer = PromptTrainer(model, params, optimizer, mesh=mesh, checkpointer=checkpointer,
                            exporter=exporter, settings=LoopSettings(...), run_facts=run_facts)
    state = trainer.fit(state, batches, last_saved=latest)

Every `log_every` steps a T5X-style line `[step] loss=... steps/s=... seqs/s=... tokens/s=...` is
logged and written as summaries (`loss`, `timing/*`): loss is the mean over the sources in each batch
of their mean token loss, averaged over the steps since the last line; tokens/s counts the non-padding
input and target tokens. A non-finite loss stops the loop with `NonFiniteLossError` before anything
after the last good checkpoint is written.

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

from rospr_jax import multihost
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
    params: the frozen backbone parameters, placed (sharded over `mesh`, or on the device).
    optimizer: the optax transformation applied to each prompt separately.
    mesh: the data x model mesh, or None on one device.
    checkpointer: where checkpoints go (`Checkpointer`); `checkpoint_shown` names them in messages.
    exporter: `exporter(step, host_state)` writes the prompt export of `step` (called on process 0).
    run_facts: what each checkpoint records beside the state (the resume check reads it back).
    writer: a clu metric writer for summaries, or None.
  """

  def __init__(self, model, params, optimizer: optax.GradientTransformation, *, mesh, checkpointer: Checkpointer,
               exporter: Callable[[int, PromptTrainState], None], settings: LoopSettings, run_facts: dict,
               checkpoint_shown: str, writer: Any = None):
    self.params, self.mesh, self.settings = params, mesh, settings
    self.checkpointer, self.checkpoint_shown = checkpointer, checkpoint_shown
    self.exporter, self.run_facts, self.writer = exporter, run_facts, writer
    self.step_fn = make_train_step(model, optimizer, mesh=mesh)

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
    for step in range(start, s.num_steps):
      host_batch = next(batches)
      tokens += int((host_batch["inputs"] > 0).sum() + (host_batch["targets"] > 0).sum())
      state, metrics = self.step_fn(state, self.params, place_batch(host_batch, self.mesh), rng)
      pending.append(metrics)
      done = step + 1
      saving = done % s.checkpoint_every == 0 or done % s.export_every == 0 or done == s.num_steps
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
        checkpoint = done % s.checkpoint_every == 0 or done == s.num_steps
        self.save(state, done, batches.position, checkpoint=checkpoint,
                  export=done % s.export_every == 0 or done == s.num_steps)
        last_saved = done if checkpoint else last_saved
        last_time = time.perf_counter()
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
  or compiled): the host batch, the encoder states of one layer and the attention scores of one
  encoder layer, [B, heads, P + T, P + T] float32. A lower bound: whatever the remat policy, these exist
  at once, so a step over it cannot run; a step under it may still not fit (XLA decides)."""
  tokens = prompt_length + input_length
  host_batch = 2 * 4 * batch_size * (input_length + target_length)  # inputs and targets, int32, twice
  states = 4 * batch_size * tokens * config.emb_dim
  scores = 4 * batch_size * config.num_heads * tokens * tokens
  return host_batch + states + scores


def check_step_fits(config, **shapes) -> None:
  """Refuses, naming the gin macros, a step whose lower bound exceeds the first device's memory (its
  `bytes_limit`) or, on the CPU, the host's physical memory: such a run was killed by the kernel after
  a while, printing nothing."""
  import os  # pylint: disable=g-import-not-at-top
  need = step_memory_lower_bound(config, **shapes)
  device = jax.local_devices()[0]  # this process's own: another process's has no memory stats here
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - a backend without memory stats: the host's memory bounds it
    stats = None
  limit = (stats or {}).get("bytes_limit") or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  where = f"the {device.platform} device" if stats else "this host's memory"
  if need > limit:
    raise ValueError(
        f"One training step needs at least {need / 2**30:,.1f} GiB (BATCH_SIZE {shapes['batch_size']} x "
        f"(PROMPT_LENGTH {shapes['prompt_length']} + INPUT_LENGTH {shapes['input_length']}) tokens, TARGET_LENGTH "
        f"{shapes['target_length']}), more than the {limit / 2**30:,.1f} GiB of {where}; lower INPUT_LENGTH or "
        f"BATCH_SIZE.")

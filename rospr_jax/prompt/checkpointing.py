"""Orbax checkpoints of a prompt-tuning run: prompts, optimizer states, step and data position.

Layout: `<directory>/<step>/state` (the `PromptTrainState` pytree) and `<directory>/<step>/run`
(JSON: data position, seed, source names, prompt shape, and `state_sha256`: the digest of every array
of the state and of the other run facts, checked when the step is restored, so a flipped byte, in the
arrays or in the data position, is refused instead of resuming with other prompts; a checkpoint
without it, as written before it was recorded, is restored with a warning that it was not checked). Orbax writes each step to a temporary directory and renames it when complete, so
a killed run leaves only whole checkpoints. The backbone is never saved: it is reloaded from its own
checkpoint, whose fingerprint is checked on resume.

The train state is replicated over every device (the prompt table is small next to the backbone), so
process 0 alone reads and writes the checkpoints, as host arrays, and the other processes receive what
it read: the processes of one run need not share the directory. At a URL (gs://), orbax writes the
checkpoints there itself, through etils.epath.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rospr_jax import multihost, storage
from rospr_jax.prompt.train_step import PromptTrainState


STATE_SHA256 = "state_sha256"


class CheckpointMismatchError(ValueError):
  """Checkpoint `step` does not restore into the given structure, shapes or dtypes, or its arrays do not
  match the digest recorded when it was saved (process 0 only)."""


def state_sha256(state, run: dict[str, Any]) -> str:
  """sha256 over every array of `state` in tree order (its path, dtype, shape and bytes) and over the
  run facts `run` (canonical JSON, without the digest itself)."""
  digest = hashlib.sha256()
  facts = {k: v for k, v in run.items() if k != STATE_SHA256}
  digest.update(json.dumps(facts, sort_keys=True, separators=(",", ":")).encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype.str}|{value.shape}|".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


class Checkpointer:
  """Saves and restores `(PromptTrainState, run facts)` by step; keeps the newest `keep` steps.

  Every process constructs one and calls its methods alike; only process 0's touches `directory`.
  """

  def __init__(self, directory: str | os.PathLike, *, keep: int | None = 3):
    self.directory = storage.absolute(directory)  # local, or a URL orbax writes to itself
    self._manager = None
    if multihost.is_writer():  # orbax creates it only with every process taking part
      storage.as_path(self.directory, "model_dir", output=True).mkdir(parents=True, exist_ok=True)
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=False, enable_async_checkpointing=False,
          multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}))
      self._manager = ocp.CheckpointManager(storage.as_path(self.directory), options=options, item_names=("state", "run"))

  def latest_step(self) -> int | None:
    """The newest complete step, as process 0 sees it (so every process resumes alike)."""
    latest = self._manager.latest_step() if self._manager is not None else None
    latest = int(multihost.broadcast(np.int32(-1 if latest is None else latest)))
    return None if latest < 0 else latest

  def save(self, step: int, state: PromptTrainState, run: dict[str, Any]) -> None:
    """Writes checkpoint `step` of the replicated `state` (synchronously: it is complete when this
    returns on process 0; the others return at once)."""
    if self._manager is None:
      return
    host = jax.device_get(state)
    run = {**run, STATE_SHA256: state_sha256(host, run)}
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host),
                                                     run=ocp.args.JsonSave(run)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: PromptTrainState) -> tuple[PromptTrainState, dict[str, Any]]:
    """Reads checkpoint `step` into host arrays of the structure, shapes and dtypes of `abstract_state`
    (arrays or `jax.ShapeDtypeStruct`s), on process 0; every process returns them.

    Raises:
      CheckpointMismatchError: on process 0, when the checkpoint does not fit `abstract_state`.
    """
    target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state)
    if self._manager is None:
      state, run = target, None
    else:
      try:  # orbax's own JSON error names no file: ours names the run facts' file
        storage.read_json(os.path.join(self.directory, str(step), "run", "metadata"), "Its run facts")
      except ValueError as e:
        raise CheckpointMismatchError(str(e)) from None
      except OSError:
        pass  # missing: orbax says so below
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), run=ocp.args.JsonRestore()))
      except Exception as e:  # noqa: BLE001 - orbax raises assorted errors for a shape mismatch.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointMismatchError(f"{type(e).__name__}: {first}") from e
      state, run = jax.tree.map(np.asarray, restored["state"]), dict(restored["run"])
      recorded = run.pop(STATE_SHA256, None)
      if recorded is None:  # written before digests were recorded (or the key was removed by hand)
        logging.getLogger(__name__).warning(
            "Checkpoint %d in %s records no %s: its arrays and data position are restored unchecked.", step,
            self.directory, STATE_SHA256)
      elif recorded != state_sha256(state, run):
        raise CheckpointMismatchError(f"its arrays or run facts do not match the sha256 recorded when step "
                                      f"{step} was saved (a changed or damaged file)")
    return multihost.broadcast(state), multihost.broadcast_json(run)

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()

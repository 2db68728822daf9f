"""Orbax checkpoints of a prompt-tuning run: prompts, optimizer states, step and data position.

Layout: `<directory>/<step>/state` (the `PromptTrainState` pytree) and `<directory>/<step>/run`
(JSON: data position, seed, source names, prompt shape, and `state_sha256`: the digest of every array
of the state and of the other run facts, checked when the step is restored, so a flipped byte, in the
arrays or in the data position, is refused instead of resuming with other prompts; a checkpoint
without it, as written before it was recorded, is restored with a warning that it was not checked).
Both items are read through orbax, never by path: `Checkpointer.restore(step, abstract state, expected
facts)` holds the resume checks (the run's facts equal the checkpoint's, the digest matches). Orbax
writes each step to a temporary directory and renames it when complete, so a killed run leaves only
whole checkpoints, and sweeps the temporaries a killed run left when it opens the directory
(`cleanup_tmp_directories`). The backbone is never saved: it is reloaded from its own checkpoint, whose
fingerprint is checked on resume.

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
          max_to_keep=keep, create=False, enable_async_checkpointing=False, cleanup_tmp_directories=True,
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

  def restore(self, step: int, abstract_state: PromptTrainState,
              expected: dict[str, Any]) -> tuple[PromptTrainState, dict[str, Any]]:
    """Reads checkpoint `step` into host arrays of the structure, shapes and dtypes of `abstract_state`
    (arrays or `jax.ShapeDtypeStruct`s), on process 0, and checks that it belongs to this run; every
    process returns them.

    Args:
      expected: this run's facts (sources, shapes, seed, examples, optimizer settings, ...): every one
        must equal the checkpoint's.

    Returns:
      (state, the checkpoint's run facts, its data position `position` among them).

    Raises:
      ValueError: naming the checkpoint, when its facts differ from `expected` (each difference as
        checkpoint, now), or it is damaged or does not fit `abstract_state`.
    """
    where = f"checkpoint {step} in {self.directory}"
    target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state)
    if self._manager is None:
      state, run = target, None
    else:
      try:
        state, run = self._restore_checked(step, target)
      except CheckpointMismatchError as e:
        _check_facts(self._recorded_facts(step), expected, where)  # another optimizer: say which
        raise ValueError(f"Cannot restore {where}: it is damaged, or does not fit prompts of shape "
                         f"{expected.get('prompt_shape')} and this optimizer's state ({e}).") from e
    state, run = multihost.broadcast(state), multihost.broadcast_json(run)
    _check_facts(run, expected, where)  # on every process: all stop alike
    return state, run

  def _restore_checked(self, step: int, target) -> tuple[PromptTrainState, dict[str, Any]]:
    """Both items of checkpoint `step`, the state's arrays checked against the digest recorded beside
    them (process 0)."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), run=ocp.args.JsonRestore()))
    except json.JSONDecodeError as e:  # orbax's own error names neither the item nor the step
      raise CheckpointMismatchError(f"its run facts (item 'run' of step {step}) are not valid JSON ({e})") from e
    except Exception as e:  # noqa: BLE001 - orbax raises assorted errors for a shape mismatch.
      raise CheckpointMismatchError(_first_line(e)) from e
    state, run = jax.tree.map(np.asarray, restored["state"]), dict(restored["run"])
    recorded = run.pop(STATE_SHA256, None)
    if recorded is None:  # written before digests were recorded (or the key was removed by hand)
      logging.getLogger(__name__).warning(
          "Checkpoint %d in %s records no %s: its arrays and data position are restored unchecked.", step,
          self.directory, STATE_SHA256)
    elif recorded != state_sha256(state, run):
      raise CheckpointMismatchError(f"its arrays or run facts do not match the sha256 recorded when step "
                                    f"{step} was saved (a changed or damaged file)")
    return state, run

  def _recorded_facts(self, step: int) -> dict[str, Any] | None:
    """The run item of checkpoint `step` alone, through orbax (None when it cannot be read)."""
    try:
      run = self._manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]
    except Exception:  # noqa: BLE001 - unreadable: the caller reports the checkpoint as damaged
      return None
    return dict(run) if isinstance(run, dict) else None

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()


def _first_line(error: Exception) -> str:
  first = (str(error).strip().splitlines() or [type(error).__name__])[0]
  return f"{type(error).__name__}: {first}"


def _check_facts(run: dict[str, Any] | None, expected: dict[str, Any], where: str) -> None:
  """Refuses naming every fact of `expected` that the checkpoint's facts `run` record otherwise (nothing
  to compare when `run` is None)."""
  if run is None:
    return
  diff = {k: (run.get(k), v) for k, v in expected.items() if run.get(k) != v}
  if diff:
    details = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
    raise ValueError(f"Cannot resume from {where}: the run differs ({details}). Use a new model_dir.")

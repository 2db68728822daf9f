"""Orbax checkpoints of a prompt-tuning run: prompts, optimizer states, step and data position.

Layout: `<directory>/<step>/state` (the `PromptTrainState` pytree) and `<directory>/<step>/run`
(JSON: data position, seed, source names, prompt shape). Orbax writes each step to a temporary
directory and renames it when complete, so a killed run leaves only whole checkpoints. The backbone
is never saved: it is reloaded from its own checkpoint, whose fingerprint is checked on resume.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from rospr_jax.prompt.train_step import PromptTrainState


class Checkpointer:
  """Saves and restores `(PromptTrainState, run facts)` by step; keeps the newest `keep` steps."""

  def __init__(self, directory: str | os.PathLike, *, keep: int | None = 3):
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "run"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: PromptTrainState, run: dict[str, Any]) -> None:
    """Writes checkpoint `step` (synchronously: it is complete when this returns)."""
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     run=ocp.args.JsonSave(run)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: PromptTrainState) -> tuple[PromptTrainState, dict[str, Any]]:
    """Reads checkpoint `step` into the structure, shapes and shardings of `abstract_state`.

    `abstract_state` may hold arrays or `jax.ShapeDtypeStruct`s (with `sharding` set to place them).
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), run=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["run"])

  def close(self) -> None:
    self._manager.close()

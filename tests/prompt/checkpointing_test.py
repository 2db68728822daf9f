"""`Checkpointer`: orbax sweeps what a killed save left, restores both items itself, and the resume
checks (this run's facts, the arrays' digest) sit in `restore`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rospr_jax.prompt.checkpointing import Checkpointer
from rospr_jax.prompt.train_step import init_state

FACTS = {"sources": ["a", "b"], "prompt_shape": [2, 3, 4], "seed": 0}


def _state():
  return init_state(jnp.arange(24, dtype=jnp.float32).reshape(2, 3, 4), optax.adam(0.1))


def test_a_killed_save_is_swept_on_restart_and_the_run_item_restores_through_orbax(tmp_path):
  directory = tmp_path / "checkpoints"
  first = Checkpointer(directory)
  first.save(2, _state(), {**FACTS, "position": 2})
  first.close()
  # What a save killed half-way leaves: orbax's temporary folder of step 4, items partly written.
  killed = directory / "4.orbax-checkpoint-tmp-1767225600"
  (killed / "state").mkdir(parents=True)
  (killed / "state" / "partial").write_bytes(b"\0" * 16)

  again = Checkpointer(directory)
  assert again.latest_step() == 2
  abstract = jax.eval_shape(_state)
  state, run = again.restore(2, abstract, FACTS)
  np.testing.assert_array_equal(state.prompts, np.asarray(_state().prompts))
  assert run == {**FACTS, "position": 2}
  again.save(3, _state(), {**FACTS, "position": 3})  # orbax's sweep is done before it saves
  again.close()
  assert sorted(p.name for p in directory.iterdir()) == ["2", "3"]

  with pytest.raises(ValueError, match=r"^Cannot resume from checkpoint 2 in .*checkpoints: the run differs "
                                       r"\(seed: checkpoint 0, now 1\)\. Use a new model_dir\.$"):
    Checkpointer(directory).restore(2, abstract, {**FACTS, "seed": 1})
  # Another optimizer's state does not fit: the facts that differ are named all the same.
  other = jax.eval_shape(lambda: init_state(jnp.zeros((2, 3, 4)), optax.sgd(0.1, momentum=0.9)))
  with pytest.raises(ValueError, match=r"^Cannot resume from checkpoint 2 .*\(sources: checkpoint \['a', 'b'\], "
                                       r"now \['a', 'c'\]\)"):
    Checkpointer(directory).restore(2, other, {**FACTS, "sources": ["a", "c"]})
  with pytest.raises(ValueError, match=r"^Cannot restore checkpoint 2 in .*: it is damaged, or does not fit "
                                       r"prompts of shape \[2, 3, 4\] and this optimizer's state"):
    Checkpointer(directory).restore(2, other, FACTS)

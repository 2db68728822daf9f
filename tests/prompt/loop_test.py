"""`PromptTrainer` built from parts, as t5x's trainer_test builds a Trainer: a fake step (the prompts
count the steps), a checkpointer and an exporter that record their calls. No model, no orbax: the
loop's own behaviour (steps taken, saves at the intervals, resume from a step, stop on preemption)."""

from __future__ import annotations

import signal

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rospr_jax import preemption
from rospr_jax.prompt import configs
from rospr_jax.prompt.input_pipeline import BatchIterator
from rospr_jax.prompt.loop import NonFiniteLossError, PromptTrainer
from rospr_jax.prompt.train_step import init_state


class FakeCheckpointer:
  directory = "/fake/checkpoints"

  def __init__(self):
    self.saved = []  # (step, prompts[0, 0, 0], run facts)

  def save(self, step, state, run):
    self.saved.append((step, float(state.prompts[0, 0, 0]), run))


def fake_step(nan_at: int | None = None, preempt_at: int | None = None):
  """A step that adds 1 to every prompt value and counts its calls; the loss is NaN after step
  `nan_at`, and a SIGTERM arrives during step `preempt_at`."""
  def step_fn(state, params, batch, rng):
    del params, rng
    done = int(state.step) + 1
    if done == preempt_at:
      signal.raise_signal(signal.SIGTERM)
    loss = float("nan") if nan_at is not None and done >= nan_at else 1.0
    metrics = {"loss": loss, "loss_sum": loss, "finite": loss == loss, "num_sources": len(batch["inputs"])}
    return state.replace(step=state.step + 1, prompts=state.prompts + 1.0), metrics
  return step_fn


def _trainer(step_fn, num_steps, *, checkpoint_every, export_every=None, log_every=100):
  checkpointer, exports = FakeCheckpointer(), []
  trainer = PromptTrainer(
      step_fn, params=None, rng=None, partitioner=None, checkpointer=checkpointer,
      exporter=lambda step, host: exports.append((step, float(host.prompts[0, 0, 0]))),
      loop=configs.LoopConfig(num_steps=num_steps, log_every=log_every, summaries=False),
      checkpointing=configs.CheckpointConfig(checkpoint_every=checkpoint_every, export_every=export_every),
      run_facts={"seed": 0})
  return trainer, checkpointer, exports


def _state(step: int = 0):
  state = init_state(jnp.zeros((2, 3, 4)), optax.sgd(0.1))
  return state.replace(step=jnp.int32(step), prompts=state.prompts + step)


def _batches(examples, position: int = 0):
  return BatchIterator(examples(2, 12), batch_size=4, input_length=8, target_length=4, seed=0, position=position)


def test_steps_and_saves_at_the_intervals(examples):
  trainer, checkpointer, exports = _trainer(fake_step(), 7, checkpoint_every=3, export_every=2)
  batches = _batches(examples)
  state = trainer.fit(_state(), batches, last_saved=None)
  assert int(state.step) == 7 and float(state.prompts[0, 0, 0]) == 7.0 and batches.position == 7
  # checkpoints at 3, 6 and the last step; exports at 2, 4, 6 and the last, each of its own step
  assert [(s, v) for s, v, _ in checkpointer.saved] == [(3, 3.0), (6, 6.0), (7, 7.0)]
  assert exports == [(2, 2.0), (4, 4.0), (6, 6.0), (7, 7.0)]
  # each checkpoint records the run facts and where the data stream stands
  assert [run for _, _, run in checkpointer.saved] == [{"seed": 0, "position": p} for p in (3, 6, 7)]


def test_resumes_from_a_step_with_its_data_position(examples):
  trainer, checkpointer, exports = _trainer(fake_step(), 6, checkpoint_every=2)
  state = trainer.fit(_state(4), _batches(examples, position=4), last_saved=4)
  assert int(state.step) == 6 and float(state.prompts[0, 0, 0]) == 6.0
  assert [(s, run["position"]) for s, _, run in checkpointer.saved] == [(6, 6)] and exports == [(6, 6.0)]


def test_a_preemption_stops_after_the_step_checkpointed_without_export(examples):
  trainer, checkpointer, exports = _trainer(fake_step(preempt_at=3), 10, checkpoint_every=4)
  with preemption.listening(True), pytest.raises(preemption.Preempted, match=r"^preempted at step 3: "
                                                                              r"checkpoint saved; rerun"):
    trainer.fit(_state(), _batches(examples), last_saved=None)
  assert [(s, v, run["position"]) for s, v, run in checkpointer.saved] == [(3, 3.0, 3)] and exports == []


def test_a_non_finite_loss_stops_before_saving_it(examples):
  trainer, checkpointer, exports = _trainer(fake_step(nan_at=5), 8, checkpoint_every=2, log_every=100)
  with pytest.raises(NonFiniteLossError, match=r"at step 5: training stopped. The last good checkpoint is "
                                               r"step 4 in /fake/checkpoints"):
    trainer.fit(_state(), _batches(examples), last_saved=None)
  assert [s for s, _, _ in checkpointer.saved] == [2, 4] and [s for s, _ in exports] == [2, 4]
  np.testing.assert_array_equal([v for _, v, _ in checkpointer.saved], [2.0, 4.0])

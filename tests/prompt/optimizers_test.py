"""The typed optimizer description: it builds the transformation and records itself, gin's run files
give the records runs made before it, and a resume with an edited setting is refused naming it."""

from __future__ import annotations

import gin
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rospr_jax import gin_cli
from rospr_jax.backbone import Backbone
from rospr_jax.prompt import optimizers, trainer
from rospr_jax.prompt.train_step import default_optimizer

# What runs recorded before the description existed (optimizer_facts.py's `_DEFAULT_OPTIMIZER`, and
# gin's bindings of base.gin and adam.gin read back): resume checks and exports compare these.
DEFAULT_FACTS = {"name": "optax.adafactor", "learning_rate": 0.3, "decay_rate": 0.8,
                 "multiply_by_parameter_scale": False, "weight_decay_rate": 1e-5}
BASE_GIN_FACTS = {**DEFAULT_FACTS, "clipping_threshold": 1.0}
ADAM_GIN_FACTS = {"name": "optax.adam", "learning_rate": 0.3}
RUN = dict(num_steps=2, batch_size=8, input_length=16, target_length=4, prompt_length=3, log_every=2,
           dropout_rate=0.0, use_mesh=False, summaries=False)


def _updates(transformation, steps=3):
  """The updates of a few steps on a [2, 3, 4] prompt (what the step applies to each prompt)."""
  params = jnp.linspace(-1.0, 1.0, 24).reshape(2, 3, 4)
  state, out = transformation.init(params), []
  for i in range(steps):
    grads = jnp.sin(params * (i + 1))
    updates, state = transformation.update(grads, state, params)
    out.append(np.asarray(updates))
  return out


def _gin_optimizer(files):
  gin_cli.parse_gin(["models/tiny.gin", "prompt_tuning/train_jsonl.gin", *files],
                    ["MODEL_DIR = '/runs/x'", "TRAIN_STEPS = 3", "EXAMPLES_FILE = '/x.jsonl'"], [])
  return gin.query_parameter("trainer.train.optimizer").scoped_configurable_fn()


def test_the_default_records_what_it_did_and_is_the_default_step_optimizer():
  transformation, facts = optimizers.resolve(None)
  assert facts == DEFAULT_FACTS and optimizers.DEFAULT_OPTIMIZER.facts() == DEFAULT_FACTS
  assert transformation is default_optimizer() is optimizers.Adafactor().build()  # one compiled step
  reference = optax.adafactor(0.3, decay_rate=0.8, multiply_by_parameter_scale=False, weight_decay_rate=1e-5)
  for a, b in zip(_updates(transformation), _updates(reference)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("files,expected", [([], BASE_GIN_FACTS),
                                            (["prompt_tuning/adam.gin"], ADAM_GIN_FACTS)], ids=["base", "adam"])
def test_the_run_files_give_the_facts_runs_recorded_and_the_same_optimizer(files, expected):
  spec = _gin_optimizer(files)
  gin.clear_config()
  assert isinstance(spec, optimizers.OptimizerSpec) and spec.facts() == expected
  assert type(spec)(**{k: v for k, v in expected.items() if k != "name"}) == spec  # round trip
  reference = (optax.adam(0.3) if "adam" in expected["name"] else
               optax.adafactor(0.3, decay_rate=0.8, multiply_by_parameter_scale=False, weight_decay_rate=1e-5,
                               clipping_threshold=1.0))
  for a, b in zip(_updates(spec.build()), _updates(reference)):
    np.testing.assert_array_equal(a, b)


def test_a_schedule_is_described_setting_by_setting():
  schedule = optimizers.Schedule("cosine_decay_schedule", {"init_value": 0.3, "decay_steps": 200})
  spec = optimizers.Adafactor(learning_rate=schedule, momentum=0.9)
  assert hash(spec) == hash(optimizers.Adafactor(learning_rate=optimizers.Schedule(
      "cosine_decay_schedule", {"decay_steps": 200, "init_value": 0.3}), momentum=0.9))
  facts = spec.facts()
  assert facts["learning_rate"] == {"name": "optax.cosine_decay_schedule", "decay_steps": 200,
                                    "init_value": 0.3}
  assert optimizers.flat_facts("optimizer", facts) == {
      "optimizer": "optax.adafactor", "optimizer.learning_rate": "optax.cosine_decay_schedule",
      "optimizer.learning_rate.decay_steps": 200, "optimizer.learning_rate.init_value": 0.3,
      "optimizer.decay_rate": 0.8, "optimizer.multiply_by_parameter_scale": False,
      "optimizer.weight_decay_rate": 1e-5, "optimizer.momentum": 0.9}
  reference = optax.adafactor(optax.cosine_decay_schedule(0.3, 200), decay_rate=0.8,
                              multiply_by_parameter_scale=False, weight_decay_rate=1e-5, momentum=0.9)
  for a, b in zip(_updates(spec.build()), _updates(reference)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="Unknown learning-rate schedule 'cosine'"):
    optimizers.Schedule("cosine", {})
  with pytest.raises(ValueError, match="setting 'boundaries_and_scales' must be a number"):
    optimizers.Schedule("piecewise_constant_schedule", {"init_value": 0.3, "boundaries_and_scales": {5: 0.1}})


def test_an_optax_transformation_given_in_python_is_recorded_as_unrecorded():
  adam = optax.adam(0.1)
  assert optimizers.resolve(adam) == (adam, optimizers.UNRECORDED)


def test_a_resume_with_an_edited_or_added_setting_is_refused_naming_it(tmp_path, config, params, examples,
                                                                       run_configs):
  backbone = Backbone(config, params, fingerprint="0123456789abcdef", description={"test": True})
  settings = dict(run_configs(**dict(RUN, checkpoint_every=2)), examples=examples(3, 30, seed=1), backbone=backbone)
  four_steps = dict(settings, **run_configs(**dict(RUN, checkpoint_every=2, num_steps=4)))
  first = trainer.train(model_dir=str(tmp_path), optimizer=optimizers.Adafactor(), **settings)
  assert first.step == 2
  with pytest.raises(ValueError, match=r"Cannot resume from checkpoint 2 .*optimizer\.decay_rate: checkpoint "
                                       r"0\.8, now 0\.5"):
    trainer.train(model_dir=str(tmp_path), optimizer=optimizers.Adafactor(decay_rate=0.5),
                  **four_steps)
  # A setting the checkpoint did not record (its optimizer state differs too): named all the same.
  with pytest.raises(ValueError, match=r"Cannot resume from checkpoint 2 .*optimizer\.momentum: checkpoint "
                                       r"None, now 0\.9"):
    trainer.train(model_dir=str(tmp_path), optimizer=optimizers.Adafactor(momentum=0.9),
                  **four_steps)
  with pytest.raises(ValueError, match=r"optimizer: checkpoint 'optax\.adafactor', now 'unrecorded"):
    trainer.train(model_dir=str(tmp_path), optimizer=default_optimizer(), **four_steps)
  resumed = trainer.train(model_dir=str(tmp_path), **four_steps)  # None: the default
  assert resumed.step == 4 and bool(jnp.all(jnp.isfinite(resumed.state.prompts)))

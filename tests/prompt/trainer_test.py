"""The training loop: resume equals uninterrupted, non-finite stops, checkpoint backbones, a prompt that
helps (prompt initialization: prompt_init_test.py)."""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rospr_jax.eval.batching import RankExample, score_examples
from rospr_jax.model import checkpoints
from rospr_jax.backbone import Backbone, load_backbone
from rospr_jax.prompt import export, loop, trainer
from rospr_jax.prompt.input_pipeline import BatchIterator, Example, SourceExamples

# The shapes of train_step_test.py (B 8, T 16, L 4, P 3, 3 sources, default optimizer): one compilation.
RUN = dict(num_steps=10, batch_size=8, input_length=16, target_length=4, prompt_length=3, log_every=2,
           dropout_rate=0.0, use_mesh=False, summaries=False)


@pytest.fixture(scope="module")
def backbone(config, params):
  return Backbone(config, params, fingerprint="0123456789abcdef", description={"test": True})


def _tree_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_crashed_run_resumes_to_the_uninterrupted_result(tmp_path, backbone, examples, monkeypatch, caplog,
                                                         run_configs):
  """A crash between checkpoints (a SIGKILLed process with dropout on: train_cli_test.py)."""
  data = examples(3, 30, seed=1)
  flat = dict(RUN, checkpoint_every=4)
  settings = dict(run_configs(**flat), examples=data, backbone=backbone)
  with caplog.at_level("INFO", logger="rospr_jax.prompt"):  # the trainer and its loop
    whole = trainer.train(model_dir=str(tmp_path / "whole"), **settings)
  logged = [r.getMessage() for r in caplog.records]
  assert re.fullmatch(r"Step 1 compiled and ran in \d+\.\d s\.", logged[0]), logged[:3]  # as T5X reports it
  assert sum(m.startswith("[2] loss=") for m in logged) == 1

  take = BatchIterator.__next__

  def crash_at_the_seventh_batch(self):
    if self.position == 6:
      raise RuntimeError("simulated crash")
    return take(self)

  with monkeypatch.context() as patch:
    patch.setattr(BatchIterator, "__next__", crash_at_the_seventh_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
      trainer.train(model_dir=str(tmp_path / "resumed"), **settings)
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["4"]  # steps 5 and 6 are lost
  resumed = trainer.train(model_dir=str(tmp_path / "resumed"), **settings)
  assert resumed.step == whole.step == 10
  _tree_equal(resumed.state, whole.state)
  a = export.load_prompts(whole.export_dir, expected_fingerprint="0123456789abcdef",
                          expected_sources=data.names)
  b = export.load_prompts(resumed.export_dir)
  np.testing.assert_array_equal(a.prompts, b.prompts)
  assert [s["steps"] for s in a.manifest["sources"]] == [s["steps"] for s in b.manifest["sources"]]
  assert sum(s["steps"] for s in a.manifest["sources"]) > 10  # several sources per step
  assert export.export_steps(whole.export_dir) == [4, 8, 10]
  run_dir = tmp_path / "whole"
  assert (run_dir / "config.gin").is_file()
  model_info = (run_dir / "model-info.txt").read_text()
  assert "token_embedder/embedding: [64, 32] float32 ('vocab', 'embed')" in model_info

  other = SourceExamples(["s0", "s1", "z"], data.examples)
  with pytest.raises(ValueError, match=r"Cannot resume from checkpoint 10 .*sources: checkpoint "
                                       r"\['s0', 's1', 's2'\], now \['s0', 's1', 'z'\]"):
    trainer.train(model_dir=str(tmp_path / "whole"), **dict(settings, examples=other))
  # Same source names, other examples: the data position would carry into other data.
  shuffled = SourceExamples(data.names, data.examples[::-1])
  with pytest.raises(ValueError, match=r"Cannot resume from checkpoint 10 .*examples: checkpoint '[0-9a-f]{16}', "
                                       r"now '[0-9a-f]{16}'"):
    trainer.train(model_dir=str(tmp_path / "whole"), **dict(settings, examples=shuffled))
  with pytest.raises(ValueError, match=r"Cannot resume .*dropout_rate: checkpoint 0.0, now 0.3"):
    trainer.train(model_dir=str(tmp_path / "whole"), **dict(settings, **run_configs(**dict(flat, dropout_rate=0.3))))
  with pytest.raises(ValueError, match=r"holds checkpoint 10, past num_steps = 6: give TRAIN_STEPS >= 10"):
    trainer.train(model_dir=str(tmp_path / "whole"), **dict(settings, **run_configs(**dict(flat, num_steps=6))))


def test_a_model_dir_that_would_not_persist_is_refused_and_file_urls_are_local(tmp_path, backbone, examples,
                                                                              run_configs):
  """MODEL_DIR is used in place (orbax writes each checkpoint there, at a bucket through epath): a
  scheme whose objects vanish with the process is refused before any work; file:// is a local path."""
  settings = dict(run_configs(**dict(RUN, num_steps=2, checkpoint_every=2)), examples=examples(2, 10, seed=1),
                  backbone=backbone)
  with pytest.raises(ValueError, match=r"^model_dir memory://b/run: memory:// objects vanish when the process "):
    trainer.train(model_dir="memory://b/run", **settings)
  result = trainer.train(model_dir=f"file://{tmp_path}/run", **settings)
  assert result.checkpoint_dir == f"{tmp_path}/run/checkpoints" and (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, backbone, examples, run_configs):
  data = examples(1, 20, seed=2)
  # The learning rate turns NaN at the 7th update: the prompt becomes NaN at step 7.
  optimizer = optax.sgd(lambda count: jnp.where(count >= 6, jnp.nan, 0.1))
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"at step 7: training stopped. The last good checkpoint is step 5 in "
                           r".*checkpoints"):
    trainer.train(model_dir=str(tmp_path), examples=data, backbone=backbone, optimizer=optimizer,
                  **run_configs(**dict(RUN, checkpoint_every=5, log_every=100)))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["5"]
  assert export.export_steps(str(tmp_path / "export")) == [5]
  assert np.isfinite(export.load_prompts(str(tmp_path / "export")).prompts).all()


def test_backbone_from_a_checkpoint_is_the_checkpoint(tmp_path, config, params, examples, run_configs):
  path = checkpoints.save_hf(tmp_path / "hf", config, params)
  loaded = load_backbone(str(path), dtype="float32")
  _tree_equal(loaded.params, params)  # every frozen weight is the checkpoint's, none fell back to random
  assert loaded.fingerprint == checkpoints.checkpoint_fingerprint(path)
  result = trainer.train(model_dir=str(tmp_path / "run"), examples=examples(3, 24), backbone=loaded,
                         **run_configs(**dict(RUN, num_steps=2, checkpoint_every=2)))
  _tree_equal(loaded.params, params)
  assert export.load_prompts(result.export_dir).manifest["backbone_fingerprint"] == loaded.fingerprint
  with pytest.raises(ValueError, match=r"is not the 'tiny' shape: .* differ in \{'vocab_size': \(64, 512\), "
                                       r"'emb_dim': \(32, 64\)"):
    load_backbone(str(path), size="tiny", dtype="float32")


@pytest.mark.slow
def test_tuned_prompt_beats_no_prompt_on_held_out_examples(tmp_path, run_configs):
  """A random tiny backbone, a rule visible in the input (tokens 10-59: answer A, 60-109: answer B):
  without a prompt rank classification is at chance; a tuned prompt makes the model follow the rule."""
  answers = [[200, 1], [201, 1]]

  def draw(count, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    lengths = rng.integers(6, 13, count)
    return [(rng.integers(10 + 50 * y, 60 + 50 * y, n).tolist(), int(y)) for y, n in zip(labels, lengths)]

  train_set, held_out = draw(512, 0), draw(200, 1)
  data = SourceExamples(["rule"], [Example(0, x, answers[y]) for x, y in train_set])
  backbone = load_backbone(size="tiny", dtype="float32", seed=0)
  # Adafactor's sign-like steps keep a constant learning rate bouncing between the classes; a decaying
  # schedule (any optax schedule can be bound in gin) settles.
  optimizer = optax.adafactor(optax.cosine_decay_schedule(0.3, 200), decay_rate=0.8,
                              multiply_by_parameter_scale=False)
  result = trainer.train(model_dir=str(tmp_path), examples=data, backbone=backbone, optimizer=optimizer,
                         **run_configs(num_steps=200, batch_size=32, input_length=12, target_length=2,
                                       prompt_length=10, dropout_rate=0.0, checkpoint_every=200, log_every=50,
                                       use_mesh=False, summaries=False))
  prompts = export.load_prompts(result.export_dir, expected_fingerprint=backbone.fingerprint).prompts

  def accuracy(table):
    scores = score_examples(backbone.params, backbone.model, [RankExample(x, answers) for x, _ in held_out],
                            prompts=table, batch_size=100)
    return float(np.mean([np.argmax(s) == y for s, (_, y) in zip(scores, held_out)]))

  without, tuned = accuracy(None), accuracy(prompts)
  assert without < 0.6 and tuned > 0.85, (without, tuned)

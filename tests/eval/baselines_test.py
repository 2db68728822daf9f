"""The baselines beside retrieval: `MT prompt` (one multitask prompt for every target) and the prompts
fine-tuned on k labelled training examples (from RoSPr's prompt, and from the default initializer):
their examples never come from the evaluated split, RoSPr's start is RoSPr's prompt, both rows score
through the `Evaluator` and a rerun resumes them."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from rospr_jax import storage, tokenization
from rospr_jax.commands import targets as targets_lib
from rospr_jax.data import generated
from rospr_jax.eval.batching import Scorer, score_examples
from rospr_jax.library import build, embed, sources as sources_lib
from rospr_jax.pipeline import evaluate, fine_tuning, methods
from rospr_jax.retrieval.selection import SelectionConfig

TOPICS = {"animals": "the cat and the dog ran to the horse and the bird near the farm",
          "weather": "rain snow wind cloud storm sunny cold warm forecast today",
          "food": "bread cheese apple soup rice salt sugar butter milk egg"}
FROM_ROSPR, FROM_DEFAULT = "Fine-tuned (2 labels, from RoSPr)", "Fine-tuned (2 labels)"


def _examples(topic: str, seed: int, size: int) -> tuple[tuple, tuple, tuple]:
  rng = np.random.default_rng(seed)
  inputs = tuple(" ".join(rng.permutation(TOPICS[topic].split())[:6]) for _ in range(size))
  return inputs, (("yes", "no"),) * size, tuple((i % 2 == 0, i % 2 == 1) for i in range(size))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
  """An evaluator over a 3-source library (P = 4), a multitask prompt, and two targets: `weather_t`
  with 3 labelled training examples, `food_t` without a training split."""
  tokenizer = tokenization.Tokenizer(tiny_model.vocab)
  rng = np.random.default_rng(0)
  sources = [sources_lib.SourceTexts(name, [" ".join(rng.permutation(words.split())) for _ in range(6)])
             for name, words in TOPICS.items()]
  prompts = 4 * np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 4, tiny_model.config.emb_dim)), np.float32)
  embedder = embed.Embedder(tiny_model.model, tiny_model.params, max_length=32)
  library, _ = build.build_library(str(tmp_path_factory.mktemp("lib") / "library"), sources, prompts,
                                   embedder, tokenizer.encode_input, draw=build.DrawConfig(n=4),
                                   index=build.IndexConfig("exact"))
  targets = [evaluate.Target("weather_t", "weather", "t", *_examples("weather", 1, 6)),
             evaluate.Target("food_t", "food", "t", *_examples("food", 2, 6))]
  train = _examples("weather", 3, 3)
  labelled = {"weather_t": fine_tuning.LabelledExamples("train", (5, 0, 2), *train, seed=0),
              "food_t": fine_tuning.LabelledExamples(None, reason="food_t has no training split")}
  scorer = Scorer(tiny_model.params, tiny_model.model, batch_size=8)
  evaluator = evaluate.Evaluator(
      scorer, tokenizer, evaluate.retriever_for(library, embedder, tokenizer, scorer,
                                                SelectionConfig(num_queries=3, num_neighbors=2, top_k=2)),
      multitask_prompt=prompts.mean(0), labelled=labelled,
      fine_tune=fine_tuning.FineTuneConfig(epochs=2, batch_size=4, prompt_length=4))
  return evaluator, targets


def test_labelled_examples_never_come_from_the_evaluated_split():
  task = generated.GeneratedTask(generated.target_templates()[0][1], sizes={"train": 40, "test": 20})
  target = targets_lib.target_from_task(task)
  drawn = targets_lib.labelled_examples(task, target, 16, seed=3)
  assert drawn.split == "train" and drawn.reason is None and len(drawn.ids) == 16 and drawn.seed == 3
  train = {ex.idx: ex.inputs for ex in task.examples("train")}
  assert [train[i] for i in drawn.ids] == list(drawn.inputs)  # the ids name the training examples drawn
  assert not set(drawn.inputs) & set(target.inputs)  # no evaluated example is among them
  assert targets_lib.labelled_examples(task, target, 8, seed=3).ids == drawn.ids[:8]  # k = 8: a prefix
  # A training example whose input is also evaluated is left out, and counted (the family's splits
  # share some texts: those of the evaluated split are left out already).
  text = train[drawn.ids[0]]
  leaked = dataclasses.replace(target, inputs=target.inputs + (text,))
  again = targets_lib.labelled_examples(task, leaked, 16, seed=3)
  assert text not in again.inputs and len(again.ids) == 16
  assert again.excluded == drawn.excluded + list(train.values()).count(text)
  # Evaluated on the training split (or on all of a task's examples): none, and the reason.
  on_train = targets_lib.labelled_examples(task, target, 16, seed=3, evaluated_split="train")
  assert on_train.ids == () and "holds its training examples" in on_train.reason


def test_a_fine_tuned_prompt_from_rospr_is_rospr_prompt_before_its_first_step(setup, tmp_path):
  evaluator, targets = setup
  selections = str(tmp_path / "selections")
  evaluator.evaluate(targets[:1], ["RoSPr"], selections_dir=selections)
  rospr = storage.load_npy(os.path.join(selections, "weather_t", "RoSPr", "prompt.npy"))
  plans = [methods._fine_tuning_plan(evaluator, targets[0], methods.get(name)) for name in (FROM_ROSPR, FROM_DEFAULT)]
  table = fine_tuning.initial_table(plans, 4, rospr.shape[1], seed=0)
  np.testing.assert_array_equal(table[0], rospr)
  assert not np.array_equal(table[1], rospr) and np.all(np.abs(table[1]) <= 0.5)  # the default initializer


def test_both_rows_score_and_a_rerun_resumes_them(setup, tmp_path, monkeypatch):
  evaluator, targets = setup
  names = ["MT prompt", FROM_ROSPR, FROM_DEFAULT]
  kwargs = dict(records_dir=str(tmp_path / "records"), selections_dir=str(tmp_path / "selections"))
  records, selections = evaluator.evaluate(targets, names, **kwargs)
  assert [(r["target"], r["method"]) for r in records] == [(t.name, n) for t in targets for n in names][:4]
  for target in targets:  # MT prompt: the one prompt, scored on every target
    scores = score_examples(evaluator.score_fn.params, evaluator.score_fn.model, evaluator.tokenize(target),
                            prompts=evaluator.multitask_prompt, batch_size=8)
    (row,) = [r for r in records if r["target"] == target.name and r["method"] == "MT prompt"]
    assert row["accuracy"] == pytest.approx(evaluate.accuracy_of(scores, target.is_correct))
  tuned = selections["weather_t"][FROM_ROSPR]
  assert (tuned["k"], tuned["seed"], tuned["ids"], tuned["split"]) == (2, 0, [5, 0], "train")
  assert tuned["start"]["from"] == "RoSPr" and tuned["steps"] == 2  # ceil(2 epochs x 4 examples / 4)
  assert selections["food_t"][FROM_DEFAULT] == {"not_scored": "food_t has no training split"}
  assert methods.not_scored_note(selections) == (
      "Not scored, for want of labelled examples apart from the evaluated ones: "
      f"{FROM_ROSPR} on food_t (food_t has no training split); {FROM_DEFAULT} on food_t (food_t has no training split).")
  prompt = storage.load_npy(str(tmp_path / "selections" / "weather_t" / "Fine-tuned__2_labels_" / "prompt.npy"))
  assert prompt.shape == (4, evaluator.score_fn.model.config.emb_dim)

  monkeypatch.setattr(evaluate.Evaluator, "score", lambda *a, **k: pytest.fail("scored a resumed pair"))
  monkeypatch.setattr(fine_tuning, "train_jointly", lambda *a, **k: pytest.fail("trained resumed prompts"))
  again, again_selections = evaluator.evaluate(targets, names, **kwargs)
  assert again == records and again_selections == selections


def _evaluate_command(tiny_model, output_dir, *extra) -> list[str]:
  return ["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
          f"--gin.CHECKPOINT='{tiny_model.checkpoint}'", f"--gin.OUTPUT_DIR='{output_dir}'",
          f"--gin.VOCABULARY='{tiny_model.vocab}'", "--gin.TARGETS=['generated_animal_truefalse_f0']",
          "--gin.MAX_EXAMPLES=6", "--gin.BATCH_SIZE=4", "--gin.FINE_TUNE_EPOCHS=1", "--gin.FINE_TUNE_BATCH_SIZE=4",
          "--gin.FINE_TUNE_PROMPT_LENGTH=3", *extra]


def test_evaluate_takes_both_baselines_by_gin_macros(tiny_model, tmp_path, capsys):
  from rospr_jax import cli  # pylint: disable=g-import-not-at-top
  prompt = np.full((3, tiny_model.config.emb_dim), 0.1, np.float32)
  np.save(tmp_path / "mt.npy", prompt)
  methods = "--gin.METHODS=['MT prompt', 'Fine-tuned (2 labels)']"
  assert cli.main(_evaluate_command(tiny_model, tmp_path / "none", methods)) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
      "rospr evaluate: error: The methods ['MT prompt'] need MT_PROMPT: the prompt export of rospr train-prompts")
  assert cli.main(_evaluate_command(tiny_model, tmp_path / "none", methods, "--gin.MT_PROMPT='x.npy'",
                                   "--gin.FINE_TUNE_EPOCHS=0", "--gin.FINE_TUNE_LEARNING_RATE=-1.0")) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "rospr evaluate: error: epochs (FINE_TUNE_EPOCHS) must be an integer >= 1, not 0; learning_rate "
      "(FINE_TUNE_LEARNING_RATE) must be a finite number > 0, not -1.0.")
  out = tmp_path / "eval"
  assert cli.main(_evaluate_command(tiny_model, out, methods, f"--gin.MT_PROMPT='{tmp_path / 'mt.npy'}'")) == 0
  results = json.loads((out / "results.json").read_text())
  assert results["summary"]["methods"] == ["MT prompt", "Fine-tuned (2 labels)"]
  tuned = results["selections"]["generated_animal_truefalse_f0"]["Fine-tuned (2 labels)"]
  assert tuned["k"] == 2 and tuned["split"] == "train" and len(tuned["ids"]) == 2
  assert "| Fine-tuned (2 labels) |" in (out / "results.md").read_text()
  run = json.loads((out / "run.json").read_text())
  assert run["fine_tune"]["epochs"] == 1 and run["mt_prompt"] == str(tmp_path / "mt.npy")

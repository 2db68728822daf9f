"""A method is one registry entry (`pipeline.methods.register`): a throwaway method registered there
alone is listed among the evaluation's methods, run through the `Evaluator` (its selection saved, its
record written and resumed without scoring again), and reported; a clashing one is refused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rospr_jax import storage, tokenization
from rospr_jax.eval import report
from rospr_jax.eval.batching import Scorer
from rospr_jax.pipeline import evaluate, methods
from rospr_jax.retrieval import retrieve

WORST_FILE = "worst.json"


def _worst(evaluator, target, examples, retrieval, where):
  """WORST: the hard prompt's least likely choice of each example; saves what it chose."""
  del retrieval
  predictions = [int(np.argmin(s)) for s in evaluator.score(examples, None, f"{target.name} WORST")]
  chosen = {"rule": "worst", "predictions": predictions}
  if where:
    storage.write_json(os.path.join(where, WORST_FILE), chosen)
    storage.save_npy(os.path.join(where, retrieve.PROMPT_FILE), np.zeros((1, 4), np.float32))
  return chosen, predictions


@pytest.fixture
def worst():
  """Registers WORST (saves a record, needs no library, not a default method) for one test."""
  method = methods.register(methods.Method(
      "WORST", _worst, record_file=WORST_FILE,
      load_saved=lambda directory: storage.read_json(os.path.join(directory, WORST_FILE), "WORST")))
  yield method
  del methods.METHODS["WORST"]


@pytest.fixture(scope="module")
def evaluator_and_target(tiny_model):
  """An evaluator with no library (the hard prompt and WORST need none) and one 6-example target."""
  evaluator = evaluate.Evaluator(Scorer(tiny_model.params, tiny_model.model, batch_size=4),
                                 tokenization.Tokenizer(tiny_model.vocab))
  target = evaluate.Target(
      name="pets_target", dataset="pets", template="t",
      inputs=tuple(f"is the {animal} a pet" for animal in ("cat", "dog", "cow", "fish", "lion", "horse")),
      choices=tuple(("yes", "no", "maybe") if i % 2 else ("yes", "no") for i in range(6)),
      is_correct=tuple((False, True, False) if i % 2 else (True, False) for i in range(6)))
  return evaluator, target


def test_a_registered_method_is_listed_but_not_a_default(worst):
  assert "WORST" in evaluate.all_methods() and "WORST" not in evaluate.default_methods()
  assert methods.get("WORST") is worst and worst.needs_backbone and worst.saves_selection
  assert "WORST" not in methods.reference_ticks()  # it scores: a bar, not a tick


def test_a_registered_method_runs_through_the_evaluator_and_resumes(worst, evaluator_and_target, tmp_path,
                                                                    monkeypatch):
  evaluator, target = evaluator_and_target
  records_dir, selections_dir = str(tmp_path / "records"), str(tmp_path / "selections")
  first, first_selections = evaluator.evaluate([target], ["T0", "WORST", "chance"], records_dir=records_dir,
                                               selections_dir=selections_dir)
  assert [r["method"] for r in first] == ["T0", "WORST", "chance"]
  scores = evaluator.score(evaluator.tokenize(target), None)
  expected = np.mean([flags[int(np.argmin(s))] for s, flags in zip(scores, target.is_correct)])
  (row,) = [r for r in first if r["method"] == "WORST"]
  assert row["accuracy"] == pytest.approx(expected) and row["examples"] == 6
  saved = storage.read_json(str(tmp_path / "selections" / "pets_target" / "WORST" / WORST_FILE), "WORST")
  assert saved == first_selections["pets_target"]["WORST"]
  assert os.path.isfile(tmp_path / "records" / "pets_target" / "WORST.json")
  monkeypatch.setattr(evaluate.Evaluator, "score", lambda *a, **k: pytest.fail("scored a resumed pair"))
  again, again_selections = evaluator.evaluate([target], ["T0", "WORST", "chance"], records_dir=records_dir,
                                               selections_dir=selections_dir)
  assert again == first and again_selections == first_selections
  assert "| WORST |" in report.markdown_table(report.summarize(first))


def test_a_method_cannot_take_an_existing_name_or_be_both_scored_and_expected(worst):
  for name in ("WORST", "T0", "RoSPr"):  # a registered method, a built-in, a rule's label
    with pytest.raises(ValueError, match="exists"):
      methods.register(methods.Method(name, _worst))
  with pytest.raises(ValueError, match="exactly one of predict and expected"):
    methods.register(methods.Method("BOTH", _worst, expected=lambda target: 0.5))
  with pytest.raises(ValueError, match="cannot read it back"):
    methods.register(methods.Method("UNREAD", _worst, record_file=WORST_FILE))
  assert "BOTH" not in methods.METHODS and "UNREAD" not in methods.METHODS

"""The evaluation core: accuracy by hand, and the saved selection records feeding the evaluation exactly."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rospr_jax import tokenization
from rospr_jax.eval.batching import Scorer
from rospr_jax.eval.scoring import score_choices_naive
from rospr_jax.library import build, embed, sources as sources_lib
from rospr_jax.pipeline import evaluate
from rospr_jax.retrieval import retrieve
from rospr_jax.retrieval.selection import SelectionConfig


def test_accuracy_hand_computed():
  scores = [np.array([-1.0, -2.0]), np.array([-3.0, -0.5, -4.0]), np.array([-2.0, -2.0])]
  is_correct = [(True, False), (True, False, False), (False, True)]
  # Example 0 right, example 1 wrong (picks choice 1), example 2: a tie picks the first choice: wrong.
  assert evaluate.accuracy_of(scores, is_correct) == pytest.approx(1 / 3)


def test_chance_accuracy_hand_computed():
  assert evaluate.chance_accuracy([(True, False), (False, True, False, False)]) == pytest.approx(0.375)


TOPICS = {
    "animals": "the cat and the dog ran to the horse and the bird near the farm",
    "numbers": "one two three four five six seven eight nine ten plus minus",
    "weather": "rain snow wind cloud storm sunny cold warm forecast today",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
  tokenizer = tokenization.Tokenizer(tiny_model.vocab)
  config, params = tiny_model.config, tiny_model.params
  rng = np.random.default_rng(0)
  sources = [sources_lib.SourceTexts(name, [" ".join(rng.permutation(words.split())) for _ in range(12)])
             for name, words in TOPICS.items()]
  prompts = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 4, config.emb_dim)), np.float32)
  embedder = embed.Embedder(tiny_model.model, params, max_length=64)
  library, _ = build.build_library(str(tmp_path_factory.mktemp("lib") / "library"), sources, prompts,
                                   embedder, tokenizer.encode_input, draw=build.DrawConfig(8),
                                   index=build.IndexConfig("exact"))
  target = evaluate.Target(
      name="weather_target", dataset="weather", template="t",
      inputs=tuple(" ".join(rng.permutation(TOPICS["weather"].split())) for _ in range(6)),
      choices=tuple(("rain", "snow", "sun") if i % 2 else ("yes", "no") for i in range(6)),
      is_correct=tuple((True, False, False) if i % 2 else (False, True) for i in range(6)))
  scorer = Scorer(params, tiny_model.model, batch_size=4)
  evaluator = evaluate.Evaluator(scorer, tokenizer, evaluate.retriever_for(
      library, embedder, tokenizer, scorer, SelectionConfig(num_queries=4, num_neighbors=3, num_prompts=2,
                                                            top_k=3)))
  return evaluator, target


def test_selection_records_feed_the_evaluation_exactly(setup, tmp_path):
  evaluator, target = setup
  records, selections = evaluator.evaluate([target], evaluate.METHODS, selections_dir=str(tmp_path))
  assert [r["method"] for r in records] == list(evaluate.METHODS)
  assert set(selections["weather_target"]) == set(evaluate.METHODS) - {"T0"}
  for record in records:
    if record["method"] == "T0":
      prompt = None
    else:
      saved_dir = tmp_path / "weather_target" / record["method"]
      chosen, prompt = retrieve.load_selection(str(saved_dir), committed=False)
      assert json.loads(chosen.to_json())["chosen"] == selections["weather_target"][record["method"]]["chosen"]
      table = evaluator.library.prompts()
      expected_prompt = sum(w * table[i] for i, w in zip(chosen.chosen, chosen.weights))
      np.testing.assert_allclose(prompt, expected_prompt, atol=1e-6)
    # Independent recomputation: each example alone through the naive scorer with the saved prompt.
    scores = []
    for example in evaluator.tokenize(target):
      inputs = jnp.asarray([example.inputs], jnp.int32)
      width = max(len(c) for c in example.choices)
      targets = jnp.asarray([[list(c) + [0] * (width - len(c)) for c in example.choices]], jnp.int32)
      scores.append(np.asarray(score_choices_naive(evaluator.score_fn.params, inputs, targets,
                                                   None if prompt is None else jnp.asarray(prompt),
                                                   model=evaluator.score_fn.model))[0])
    expected = np.mean([np.argmax(s) == flags.index(True) for s, flags in zip(scores, target.is_correct)])
    assert record["accuracy"] == pytest.approx(expected)


def test_weather_queries_retrieve_the_weather_source(setup):
  evaluator, target = setup
  _, selections = evaluator.evaluate([target], ["RoSPr"])
  assert selections["weather_target"]["RoSPr"]["names"][0] == "weather"


def test_unknown_method_is_refused(setup):
  evaluator, target = setup
  with pytest.raises(ValueError, match=r"Unknown methods \['BEST'\]"):
    evaluator.evaluate([target], ["BEST"])


def test_a_rerun_resumes_from_the_records_and_scores_only_what_is_missing(setup, tmp_path, monkeypatch):
  """A killed evaluation keeps what it scored: records are written per (target, method) as scored, and
  a rerun scores only the pairs without a record (here: one deleted), with the same results."""
  evaluator, target = setup
  methods = ["T0", "RoSPr", "VAR"]
  records_dir, selections_dir = str(tmp_path / "records"), str(tmp_path / "selections")
  first, first_selections = evaluator.evaluate([target], methods, selections_dir=selections_dir,
                                               records_dir=records_dir)
  (tmp_path / "records" / "weather_target" / "RoSPr.json").unlink()
  calls = []
  score = evaluate.Evaluator.score  # the Evaluator is frozen: patched on its class for this test
  monkeypatch.setattr(evaluate.Evaluator, "score", lambda self, examples, prompt, *rest:
                      calls.append(prompt) or score(self, examples, prompt, *rest))
  again, again_selections = evaluator.evaluate([target], methods, selections_dir=selections_dir,
                                               records_dir=records_dir)
  assert len(calls) == 1 and calls[0] is not None  # RoSPr alone, with its retrieved prompt
  assert again == first
  assert again_selections == first_selections

"""The reference rows: `Oracle (labels)` (the best single library prompt, chosen with the labels) against
a brute-force scoring of every prompt alone, and `Random` (a seeded library prompt, per target, whatever
the order); neither runs unless asked for, and both go through `rospr evaluate`."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from rospr_jax import cli, tokenization
from rospr_jax.eval.batching import Scorer, score_examples
from rospr_jax.library import build, embed, sources as sources_lib
from rospr_jax.pipeline import evaluate
from rospr_jax.retrieval import retrieve, selection
from rospr_jax.retrieval.selection import SelectionConfig

TOPICS = {
    "animals": "the cat and the dog ran to the horse and the bird near the farm",
    "numbers": "one two three four five six seven eight nine ten plus minus",
    "weather": "rain snow wind cloud storm sunny cold warm forecast today",
    "food": "bread cheese apple soup rice salt sugar butter milk egg",
    "music": "song guitar drum piano violin choir melody rhythm band note",
    "travel": "train plane ticket hotel road map border station bus trip",
}


def _target(name: str, topic: str, seed: int, size: int = 8) -> evaluate.Target:
  rng = np.random.default_rng(seed)
  return evaluate.Target(
      name=name, dataset=topic, template="t",
      inputs=tuple(" ".join(rng.permutation(TOPICS[topic].split())[:6]) for _ in range(size)),
      choices=tuple(("yes", "no", "maybe") if i % 2 else ("rain", "snow") for i in range(size)),
      is_correct=tuple(tuple(c == (i // 2) % (3 if i % 2 else 2) for c in range(3 if i % 2 else 2))
                       for i in range(size)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
  """An evaluator over a 6-source library whose prompts are large enough to move the predictions."""
  tokenizer = tokenization.Tokenizer(tiny_model.vocab)
  config, params = tiny_model.config, tiny_model.params
  rng = np.random.default_rng(0)
  sources = [sources_lib.SourceTexts(name, [" ".join(rng.permutation(words.split())) for _ in range(8)])
             for name, words in TOPICS.items()]
  prompts = 8 * np.asarray(jax.random.normal(jax.random.PRNGKey(1), (len(TOPICS), 4, config.emb_dim)),
                           np.float32)
  embedder = embed.Embedder(tiny_model.model, params, max_length=64)
  library, _ = build.build_library(str(tmp_path_factory.mktemp("lib") / "library"), sources, prompts,
                                   embedder, tokenizer.encode_input, draw=build.DrawConfig(6),
                                   index=build.IndexConfig("exact"))
  scorer = Scorer(params, tiny_model.model, batch_size=8)
  evaluator = evaluate.Evaluator(scorer, tokenizer, evaluate.retriever_for(
      library, embedder, tokenizer, scorer, SelectionConfig(num_queries=4, num_neighbors=3, top_k=3)))
  return evaluator, [_target("weather_t", "weather", 1), _target("food_t", "food", 2, size=12)]


def test_the_reference_rows_are_listed_but_not_run_by_default():
  assert evaluate.default_methods() == ("T0", "RoSPr", "INTER", "VAR", "INTER+VAR") == evaluate.METHODS
  assert {evaluate.ORACLE, "Random"} <= set(evaluate.all_methods())
  assert "labels" in evaluate.ORACLE  # the report's row says the oracle used labels
  assert selection.RULES["random"].reference and not selection.RULES["rospr"].reference
  with pytest.raises(ValueError, match=r"and the reference rows \['Random'\]"):
    selection.rule_of_label("Nope")


def test_the_oracle_is_the_best_single_prompt_by_brute_force(setup, tmp_path):
  evaluator, targets = setup
  table = evaluator.library.prompts()
  for target in targets:
    examples = evaluator.tokenize(target)
    # Brute force: every prompt alone, its own scoring pass.
    alone = [evaluate.accuracy_of(score_examples(evaluator.score_fn.params, evaluator.score_fn.model, examples,
                                                 prompts=table[s], batch_size=3), target.is_correct)
             for s in range(len(table))]
    assert len(set(alone)) > 1, "the prompts must disagree for this check to mean anything"
    best = max(range(len(alone)), key=lambda s: (alone[s], -s))  # the first of the highest
    record, prompt = evaluator.oracle(target)
    assert record["accuracies"] == pytest.approx(alone, abs=1e-12)
    assert record["chosen"] == [best] and record["accuracy"] == pytest.approx(max(alone))
    assert record["uses_labels"] and record["names"][best] == evaluator.library.source_names[best]
    np.testing.assert_array_equal(prompt, table[best])
  records, selections = evaluator.evaluate(targets, ["T0", evaluate.ORACLE], selections_dir=str(tmp_path))
  for target in targets:
    (row,) = [r for r in records if r["target"] == target.name and r["method"] == evaluate.ORACLE]
    (t0,) = [r for r in records if r["target"] == target.name and r["method"] == "T0"]
    assert row["accuracy"] == max(selections[target.name][evaluate.ORACLE]["accuracies"])
    saved, saved_prompt = evaluate.load_oracle(str(tmp_path / target.name / "Oracle__labels_"))
    assert saved == selections[target.name][evaluate.ORACLE]
    np.testing.assert_array_equal(saved_prompt, table[saved["chosen"][0]])
    assert 0.0 <= t0["accuracy"] <= 1.0


def test_the_oracle_takes_the_first_of_tied_prompts_and_refuses_nan():
  assert evaluate.oracle_choice([0.25, 0.75, 0.75, 0.5]) == 1
  with pytest.raises(ValueError, match="finite accuracy"):
    evaluate.oracle_choice([0.5, float("nan")])


def test_random_is_seeded_per_target_and_uniform_over_the_whole_library():
  neighbors, sims = np.array([[0, 1], [1, 0]]), np.ones((2, 2))
  draw = lambda seed, target: selection.select(  # noqa: E731
      "random", neighbors, sims, random_seed=seed, num_sources=50, target=target).chosen[0]
  assert draw(3, "rte") == draw(3, "rte")  # same seed, same target: same prompt
  assert len({draw(seed, "rte") for seed in range(20)}) > 5  # other seeds draw other prompts
  assert len({draw(3, f"target_{i}") for i in range(20)}) > 5  # and so do other targets
  # Uniform over all 50 sources, not only the two the neighbours hold.
  counts = np.bincount([selection.random_source(5, 0, f"t{i}") for i in range(2000)], minlength=5)
  assert counts.min() > 300 and counts.max() < 500, counts
  chosen = selection.select("random", neighbors, sims, random_seed=3, num_sources=50, target="rte")
  assert chosen.params == {"random_seed": 3, "num_sources": 50, "target": "rte"}
  assert chosen.rule == "random" and chosen.weights == (1.0,)
  with pytest.raises(ValueError, match="library has 1 sources"):
    selection.select("random", neighbors, sims, num_sources=1)
  with pytest.raises(ValueError, match=r"random_seed \(RANDOM_SEED\) must be an integer >= 0, not -1"):
    SelectionConfig(random_seed=-1)


def test_random_in_the_evaluation_is_reproducible_and_independent_of_target_order(setup, tmp_path):
  evaluator, targets = setup
  _, first = evaluator.evaluate(targets, ["Random"])
  _, reversed_ = evaluator.evaluate(targets[::-1], ["Random"])
  for target in targets:
    chosen = first[target.name]["Random"]
    assert chosen == reversed_[target.name]["Random"]
    assert chosen["chosen"] == [selection.random_source(6, 0, target.name)]
    assert chosen["params"]["num_sources"] == 6 and chosen["params"]["target"] == target.name
  picks = set()
  for seed in range(8):
    other = dataclasses.replace(evaluator, retriever=dataclasses.replace(
        evaluator.retriever, config=SelectionConfig(num_queries=4, num_neighbors=3, random_seed=seed)))
    records, chosen = other.evaluate(targets[:1], ["Random"], selections_dir=str(tmp_path / str(seed)))
    picks.add(chosen[targets[0].name]["Random"]["chosen"][0])
    # The accuracy is that of the drawn prompt, read back from the saved selection.
    saved, prompt = retrieve.load_selection(str(tmp_path / str(seed) / targets[0].name / "Random"), committed=False)
    np.testing.assert_array_equal(prompt, evaluator.library.prompts()[saved.chosen[0]])
    alone = evaluate.accuracy_of(score_examples(evaluator.score_fn.params, evaluator.score_fn.model,
                                                evaluator.tokenize(targets[0]), prompts=prompt, batch_size=8),
                                 targets[0].is_correct)
    assert records[0]["accuracy"] == pytest.approx(alone)
  assert len(picks) > 1  # the seed matters


def test_the_reference_rows_resume_without_scoring_again(setup, tmp_path, monkeypatch):
  evaluator, targets = setup
  methods = [evaluate.ORACLE, "Random"]
  records_dir, selections_dir = str(tmp_path / "records"), str(tmp_path / "selections")
  first, first_selections = evaluator.evaluate(targets, methods, selections_dir=selections_dir,
                                               records_dir=records_dir)
  monkeypatch.setattr(evaluate.Evaluator, "score", lambda *a, **k: pytest.fail("scored a resumed pair"))
  again, again_selections = evaluator.evaluate(targets, methods, selections_dir=selections_dir,
                                               records_dir=records_dir)
  assert again == first and again_selections == first_selections


@pytest.fixture(scope="module")
def cli_artifacts(tmp_path_factory, tiny_model):
  """(checkpoint dir, library dir, vocabulary path): a tiny random T5 and a 3-source library."""
  root = tmp_path_factory.mktemp("oracle_cli")
  vocab, checkpoint, config = tiny_model.vocab, tiny_model.checkpoint, tiny_model.config
  tokenizer = tokenization.Tokenizer(vocab)
  embedder = embed.load_embedder(checkpoint, max_length=64)
  rng = np.random.default_rng(0)
  sources = [sources_lib.SourceTexts(name, [" ".join(rng.permutation(TOPICS[name].split())) for _ in range(4)])
             for name in ("animals", "numbers", "music")]
  prompts = 8 * rng.normal(size=(3, 3, config.emb_dim)).astype(np.float32)
  build.build_library(str(root / "library"), sources, prompts, embedder, tokenizer.encode_input,
                      draw=build.DrawConfig(4), index=build.IndexConfig("exact"))
  return checkpoint, str(root / "library"), vocab


def test_rospr_evaluate_runs_the_reference_rows(cli_artifacts, tmp_path, capsys):
  checkpoint, library, vocab = cli_artifacts
  out = tmp_path / "eval"
  argv = ["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
          f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{out}'", f"--gin.LIBRARY_DIR='{library}'",
          f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'", f"--gin.VOCABULARY='{vocab}'",
          "--gin.TARGETS=['generated_animal_truefalse_f0']", "--gin.MAX_EXAMPLES=6", "--gin.NUM_QUERIES=4",
          "--gin.NUM_NEIGHBORS=2", "--gin.BATCH_SIZE=8", "--gin.RANDOM_SEED=5",
          "--gin.METHODS=['T0', 'Random', 'Oracle (labels)']"]
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  results = json.loads((out / "results.json").read_text())
  assert results["summary"]["methods"] == ["T0", "Random", "Oracle (labels)"]
  assert "| Oracle (labels) |" in (out / "results.md").read_text()
  (selected,) = results["selections"].values()
  assert selected["Random"]["params"]["random_seed"] == 5 and selected["Random"]["params"]["num_sources"] == 3
  oracle = selected["Oracle (labels)"]
  (row,) = [r for r in results["per_template"] if r["method"] == "Oracle (labels)"]
  assert row["accuracy"] == max(oracle["accuracies"]) and len(oracle["accuracies"]) == 3
  assert f"Oracle (labels): average accuracy {100 * row['accuracy']:.2f}%" in printed
  assert json.loads((out / "run.json").read_text())["random_seed"] == 5  # guards the resume
  capsys.readouterr()
  assert cli.main(argv[:-2] + ["--gin.RANDOM_SEED=6", "--gin.METHODS=['Random']"]) == 2
  assert "'random_seed': (5, 6)" in capsys.readouterr().err

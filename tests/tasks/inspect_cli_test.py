"""`rospr tasks`: listing with counts, showing rendered examples, clear errors."""

from __future__ import annotations

import json

import pytest

from rospr_jax.commands import tasks as inspect_cli
from rospr_jax.data import bigbench
from rospr_jax.data import bigbench_sources
from rospr_jax.data import prompted
from rospr_jax.library import sources
from rospr_tasks import inspect

COPA_EXERCISE_INPUT = ("Exercise: choose the most plausible alternative.\n\n"
                       "My body cast a shadow over the grass.  because... \n"
                       "- The sun was rising.\n- The grass was cut.")


def test_list_shows_mixtures_and_counts(registry, with_data, capsys):
  bad = with_data / "super_glue" / "rte" / "validation.jsonl"
  original = bad.read_text()
  bad.write_text(original + "{broken\n")
  try:
    assert inspect_cli.main(["--filter", "super_glue_rte_GPT"]) == 0
  finally:
    bad.write_text(original)
  out = capsys.readouterr().out
  assert "rospr_t0_train: 313 tasks" in out and "rospr_targets_score_eval: 130 tasks" in out
  # The test checkout's multiple-choice tasks besides the 14 targets: anachronisms and arithmetic.
  assert "rospr_bigbench_sources: 2 tasks" in out and "rospr_bigbench_targets_score_eval: 14 tasks" in out
  assert "rospr_generated_sources: 28 tasks" in out and "rospr_generated_targets_score_eval: 12 tasks" in out
  assert "super_glue_rte_GPT_3_style (+_score_eval)  [super_glue/rte]  train 2, validation 2 (1 malformed lines: [3]), test 2" in out
  # Sources: 313 promptsource + 2 BIG-bench + 28 generated; targets: 116 + 14 BIG-bench + 12 generated.
  assert "Sources (0 of 343)" in out and "Targets (1 of 142)" in out


def test_list_marks_absent_splits_and_bigbench_counts(registry, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path))
  assert inspect_cli.main(["--filter", "_novel_concepts"]) == 0
  out = capsys.readouterr().out
  assert "bigbench_novel_concepts (+_score_eval)  [bigbench/novel_concepts]  all 32, train 16, validation 16" in out
  assert inspect_cli.main(["--filter", "wiki_bio_who"]) == 0
  assert "wiki_bio_who  [wiki_bio]  train -, validation -, test -" in capsys.readouterr().out


def _small_source(tmp_path):
  """The BIG-bench source task of a store holding one multiple-choice task of 8 examples (the size of
  BIG-bench's simple_arithmetic_json_multiple_choice), built as the session's store is built; the
  session's checkout keeps its own task list (other tests pin it)."""
  task_dir = tmp_path / "BIG-bench" / "bigbench" / "benchmark_tasks" / "simple_arithmetic_json_multiple_choice"
  task_dir.mkdir(parents=True)
  examples = [{"input": f"{i} + {i} = ", "target_scores": {str(2 * i): 1, str(2 * i + 1): 0, str(i): 0}}
              for i in range(1, 9)]
  (task_dir / "task.json").write_text(json.dumps({
      "name": "simple_arithmetic_json_multiple_choice", "description": "8 sums (generated for the tests)",
      "keywords": ["arithmetic"], "metrics": ["multiple_choice_grade"], "examples": examples}))
  store = bigbench.BigBenchStore(bigbench_sources.build_store(tmp_path / "BIG-bench", tmp_path / "cache"))
  (task,) = prompted.bigbench_source_tasks(store)
  return task


def test_a_task_too_small_for_a_validation_cut_offers_only_all(registry, tmp_path, monkeypatch, capsys):
  """8 examples cannot give 16 to validation: the task is listed with its one split, and asking it for
  a validation split names the task (it used to stop `rospr tasks` with an unnamed ValueError)."""
  task = _small_source(tmp_path)
  assert task.name == "bigbench_simple_arithmetic_json_multiple_choice" and task.eval_split == "validation"
  monkeypatch.setitem(registry.SOURCES, task.name, task)  # a registered source, for this test only
  assert inspect_cli.main(["--filter", "simple_arithmetic_json_multiple_choice"]) == 0
  out = capsys.readouterr().out
  assert ("bigbench_simple_arithmetic_json_multiple_choice (+_score_eval)  "
          "[bigbench/simple_arithmetic_json_multiple_choice]  all 8\n") in out
  assert task.splits == ("all",) and len(list(task.examples("all"))) == 8
  with pytest.raises(ValueError, match=r"^bigbench_simple_arithmetic_json_multiple_choice: 8 examples are too "
                                       r"few for a train/validation split .*its splits: \['all'\]"):
    list(task.examples("validation"))
  # --show defaults to a source's validation split: refused in one line naming the task.
  assert inspect_cli.main(["--show", task.name]) == 1
  err = capsys.readouterr().err
  assert err.startswith("rospr tasks: bigbench_simple_arithmetic_json_multiple_choice: 8 examples are too few")
  assert "Traceback" not in err


def test_show_prints_what_the_model_sees(registry, with_data, capsys):
  assert inspect_cli.main(["--show", "super_glue_copa_exercise_score_eval", "-n", "1"]) == 0
  out = capsys.readouterr().out
  assert f"inputs:\n{COPA_EXERCISE_INPUT}\ntargets:\nThe sun was rising.\n" in out
  assert "* choice 0: The sun was rising.  idx [0, 0]" in out and "  choice 1: The grass was cut.  idx [0, 1]" in out
  assert "example 1" not in out


def test_show_reports_failures(registry, with_data, capsys):
  path = with_data / "super_glue" / "cb" / "validation.jsonl"
  original = path.read_text()
  path.write_text(json.dumps({"premise": "p", "label": 0}) + "\n" + original)
  try:
    assert inspect_cli.main(["--show", "super_glue_cb_GPT_3_style", "-n", "5"]) == 1
  finally:
    path.write_text(original)
  err = capsys.readouterr().err  # an example the data fails is refused in one line: file, line, field
  assert err == (f"rospr tasks: {path}: line 1: field(s) ['hypothesis'] that the template reads are missing "
                 "(the example has ['label', 'premise']) (super_glue/cb:'GPT-3 style', validation split); "
                 "correct or remove the example\n")


def test_show_errors(registry, tmp_path, monkeypatch, capsys):
  assert inspect_cli.main(["--show", "no_such_task"]) == 1
  assert "no rospr task named 'no_such_task'" in capsys.readouterr().err
  monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path))
  assert inspect_cli.main(["--show", "hellaswag_complete_first_then"]) == 1
  assert "no data for hellaswag split 'validation'" in capsys.readouterr().err


@pytest.mark.parametrize("typed,expected", [
    ("super_glue_rte_GPT_3_stle", "super_glue_rte_GPT_3_style"),  # a letter missing
    ("anli_r1_GPT3_style", "anli_GPT_3_style_r1"),  # the words in another order
    ("super_glue_copa_exercize_score_eval", "super_glue_copa_exercise_score_eval"),  # keeps the suffix
])
def test_show_suggests_the_near_names_of_a_misspelt_task(registry, capsys, typed, expected):
  assert inspect_cli.main(["--show", typed]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"rospr tasks: no rospr task named {typed!r}; did you mean ") and "Traceback" not in err
  suggested = err.split("did you mean ", 1)[1].rstrip("?\n").split(", ")
  assert repr(expected) in suggested and len(suggested) <= 5
  assert "'super_glue_rte_MNLI_crowdsource'" not in suggested  # a name sharing only the dataset


def test_queries_file_holds_inputs_and_choices_without_labels(registry, with_data, tmp_path, capsys,
                                                              object_store):
  out = tmp_path / "q.jsonl"
  assert inspect_cli.main(["--show", "super_glue_copa_exercise", "--split", "validation",
                           "--queries", str(out)]) == 0
  assert f"wrote 2 queries of super_glue_copa_exercise (validation) to {out}" in capsys.readouterr().out
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  task, _ = inspect.find(registry, "super_glue_copa_exercise")
  expected = [{"text": ex.inputs, "choices": list(ex.answer_choices), "target": "super_glue_copa_exercise"}
              for ex in task.examples("validation")]
  assert rows == expected and all(set(r) == {"text", "choices", "target"} for r in rows)  # no label
  assert {q.target for q in sources.read_queries(str(out))} == {"super_glue_copa_exercise"}  # what retrieve checks
  # At a URL: the same bytes, one object written whole.
  assert inspect_cli.main(["--show", "super_glue_copa_exercise", "--split", "validation",
                           "--queries", "gs://queries-bucket/q.jsonl"]) == 0
  assert "to gs://queries-bucket/q.jsonl" in capsys.readouterr().out
  assert object_store.cat_file("gs://queries-bucket/q.jsonl") == out.read_bytes()


def test_queries_without_show_is_refused(capsys):
  with pytest.raises(SystemExit) as raised:
    inspect_cli.main(["--queries", "q.jsonl"])
  assert raised.value.code == 2
  assert "--queries needs --show NAME" in capsys.readouterr().err

"""BIG-bench tasks from the checkout the tests write (tests/bigbench_checkout.py), formatted as BIG-bench's
documented `default_format_fn` does: the expected strings are written out here, the appended choices'
order computed with numpy's RandomState(42) independently of the loader."""

from __future__ import annotations

import collections
import json
import random

import numpy as np
import pytest

import bigbench_checkout as checkout_lib
from rospr_jax.data import bigbench
from rospr_jax.data import catalog


@pytest.fixture(scope="module")
def store(bigbench_folder):
  return bigbench.BigBenchStore(bigbench_folder)


@pytest.fixture(scope="module")
def raw(bigbench_checkout):
  """{"<task>" or "<task>/<subtask>": the task JSON as the checkout holds it}."""
  base = checkout_lib.tasks_dir(bigbench_checkout)
  return {p.parent.relative_to(base).as_posix(): json.loads(p.read_text()) for p in base.glob("**/task.json")}


def _appended(keys, prefix="\n  choice: "):
  """BIG-bench: `rng.permutation(sorted(choices))` with a fresh np.random.RandomState(42), joined."""
  return prefix + prefix.join(np.random.RandomState(42).permutation(sorted(keys)))


def test_tasks_and_their_counts(store, raw):
  assert set(catalog.BIGBENCH_TARGETS) == set(checkout_lib.TARGETS) <= set(store.task_names())
  assert store.task_names() == sorted(["anachronisms", "arithmetic", *catalog.BIGBENCH_TARGETS])
  assert store.index["simple_arithmetic_json"]["multiple_choice"] is False  # generative: indexed, left out
  assert "boolean_expressions" not in store.index  # programmatic: no task.json
  assert store.info("logical_deduction")["subtasks"] == ["five_objects", "three_objects"]  # sorted folders
  assert store.info("conceptual_combinations")["subtasks"] == ["contradictions", "emergent_properties"]
  for task in store.task_names():
    parts = [raw[f"{task}/{s}"] for s in store.info(task)["subtasks"]] or [raw[task]]
    distinct = sum(len({json.dumps(e) for e in p["examples"]}) for p in parts)
    report = bigbench.LoadReport()
    assert len(store.examples(task, report)) == distinct == store.info(task)["num_distinct_examples"], task
    assert report.kept == distinct and report.num_failed == 0
  assert store.info("arithmetic")["num_examples"] == 24 and store.info("arithmetic")["num_distinct_examples"] == 20


def test_formatting_by_hand(store, raw):
  first = raw["novel_concepts"]["examples"][0]
  ex = store.examples("novel_concepts")[0]
  assert ex.inputs == (checkout_lib.NOVEL_PREFIX + "\nQ: " + first["input"] + _appended(first["target_scores"])
                       + "\nA:")
  assert ex.inputs.startswith("Let's do some find-the-common-concept problems.")
  assert ex.choices == tuple(first["target_scores"]) and ex.scores == tuple(first["target_scores"].values())
  assert ex.target == next(k for k, v in first["target_scores"].items() if v == 1) and ex.subtask is None
  code = raw["code_line_description"]["examples"][3]  # custom input, output and choice prefixes
  assert store.examples("code_line_description")[3].inputs == (
      "Python code:\n" + code["input"] + _appended(code["target_scores"], "\n  option: ")
      + "\nEnglish language description:")
  wrong = raw["misconceptions"]["examples"][5]  # append_choices_to_input false
  assert store.examples("misconceptions")[5].inputs == f"Q: {wrong['input']}\nA:"
  plain = raw["anachronisms"]["examples"][7]
  assert store.examples("anachronisms")[7].inputs == f"Q: {plain['input']}{_appended(plain['target_scores'])}\nA:"


def test_container_subtasks_in_folder_order(store, raw):
  examples = store.examples("logical_deduction")
  assert [e.subtask for e in examples] == ["five_objects"] * 10 + ["three_objects"] * 12
  three = raw["logical_deduction/three_objects"]["examples"][0]  # the subtask's own task_prefix
  assert examples[10].inputs == ("Answer about three objects.\n\nQ: " + three["input"]
                                 + _appended(three["target_scores"]) + "\nA:")
  five = raw["logical_deduction/five_objects"]["examples"][0]
  assert examples[0].inputs == f"Q: {five['input']}{_appended(five['target_scores'])}\nA:"
  assert len(examples[0].choices) == 5 and len(examples[10].choices) == 3


def test_duplicates_dropped_in_order(store, raw):
  report = bigbench.LoadReport()
  examples = store.examples("arithmetic", report)
  assert report.duplicates == 4 and report.kept == 20
  assert [e.inputs for e in examples] == [bigbench.format_example(e, raw["arithmetic"]).inputs
                                          for e in raw["arithmetic"]["examples"][:20]]


def test_hand_checked_example():
  task = {"task_prefix": "Answer.\n", "choice_prefix": "\n - "}
  sample = {"input": "Sky colour?", "target_scores": {"red": 0, "blue": 1, "green": 0, "white": 0.5}}
  ex = bigbench.format_example(sample, task)
  order = np.random.RandomState(42).permutation(["blue", "green", "red", "white"])
  assert list(order) == ["green", "white", "blue", "red"]  # numpy's legacy stream, fixed across versions
  assert ex.inputs == "Answer.\n\nQ: Sky colour?\n - green\n - white\n - blue\n - red\nA:"
  assert ex.choices == ("red", "blue", "green", "white") and ex.scores == (0, 1, 0, 0.5)
  assert ex.is_correct == (False, True, False, False) and ex.target == "blue"
  # "append_choices_to_input": "false" is a non-empty string, so BIG-bench appends the choices anyway.
  assert "choice: blue" in bigbench.format_example(sample, {"append_choices_to_input": "false"}).inputs
  assert bigbench.format_example(sample, {"append_choices_to_input": False}).inputs == "Q: Sky colour?\nA:"


def test_malformed_examples_are_counted():
  part = {"examples": [
      {"input": "ok", "target_scores": {"a": 1, "b": 0}},
      {"input": "ok", "target_scores": {"a": 1, "b": 0}},          # duplicate
      {"input": "no choices", "target_scores": {}},
      {"input": "generative", "target": "x"},
      {"input": "all equal", "target_scores": {"a": 0, "b": 0}},
      {"target_scores": {"a": 1}},
  ]}
  report = bigbench.LoadReport()
  examples = bigbench.examples_from_parts("demo", [(None, part), ("sub", {"name": "no examples"})], report)
  assert len(examples) == 1 and report.kept == 1 and report.duplicates == 1
  assert report.skipped == collections.Counter({"no choices": 2, "no correct choice": 1, "no input": 1,
                                                 "no examples": 1})
  assert report.num_failed == 5
  assert "BIG-bench demo example 2: the example has no answer choices" in report.messages[0]
  assert "BIG-bench demo/sub: the task has no 'examples' list" in report.summary()


@pytest.mark.parametrize("task,num_validation", [("novel_concepts", 16), ("anachronisms", 16),
                                                 ("logical_deduction", 16)])
def test_splits_follow_bbseqio(store, task, num_validation):
  examples = store.examples(task)
  train = bigbench.split_examples(examples, "train")
  validation = bigbench.split_examples(examples, "validation")
  expected = list(examples)
  random.seed(42)
  random.shuffle(expected)  # bbseqio's cut: shuffle with seed 42, the last max(20 %, 16) are validation
  assert validation == expected[-num_validation:] and train == expected[:-num_validation]
  assert bigbench.can_split(len(examples))
  assert bigbench.split_examples(examples, "all") == examples
  with pytest.raises(ValueError, match="BIG-bench splits are"):
    bigbench.split_examples(examples, "test")
  with pytest.raises(ValueError, match="10 examples are too few"):
    bigbench.split_examples(examples[:10], "train")
  assert not bigbench.can_split(len(store.examples("winowhy")))  # 10 examples: "all" only


def test_store_reads_tasks(store):
  assert store.examples("logical_deduction") == bigbench.examples_from_parts(
      "logical_deduction", store.parts("logical_deduction"))
  with pytest.raises(KeyError, match="BIG-bench has no JSON task 'nope'"):
    store.examples("nope")
  with pytest.raises(KeyError, match="has no simple_arithmetic_json/task.json"):
    store.read_json("simple_arithmetic_json/task.json")  # only multiple-choice tasks are kept
  assert store.source["form"] == "checkout" and repr(store) == f"BigBenchStore({str(store.folder)!r})"


def test_default_store_is_the_configured_one(bigbench_env):
  assert bigbench.BigBenchStore().folder == bigbench_env

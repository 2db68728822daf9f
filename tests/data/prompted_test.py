"""Prompted tasks (no TensorFlow): task lists, examples from local files, rank rows, counted failures."""

from __future__ import annotations

import collections
import json

import pytest

from rospr_jax.data import bigbench
from rospr_jax.data import catalog
from rospr_jax.data import prompted
from rospr_jax.data import rank_classification as rc
from rospr_jax.data import records
from rospr_jax.data import templates

COPA_EXERCISE_INPUT = ("Exercise: choose the most plausible alternative.\n\n"
                       "My body cast a shadow over the grass.  because... \n"
                       "- The sun was rising.\n- The grass was cut.")


def test_task_lists(templates_dir, bigbench_folder):
  sources = prompted.t0_source_tasks(templates_dir)
  assert len(sources) == 313 and len({t.spec.key for t in sources}) == 38
  assert len({t.name for t in sources}) == 313
  targets = prompted.held_out_target_tasks(templates_dir)
  per = collections.Counter(t.dataset_label for t in targets)
  assert per == {"super_glue/rte": 10, "super_glue/cb": 15, "anli r1": 15, "anli r2": 15, "anli r3": 15,
                 "super_glue/copa": 12, "hellaswag": 4, "story_cloze/2016": 5, "winogrande/winogrande_xl": 5,
                 "super_glue/wsc.fixed": 10, "super_glue/wic": 10}
  assert "anli_GPT_3_style_r1" in {t.name for t in targets}
  assert "super_glue_wsc.fixed_GPT_3_Style" in {t.name for t in targets}
  store = bigbench.BigBenchStore(bigbench_folder)
  assert [t.task for t in prompted.bigbench_target_tasks(store)] == list(catalog.BIGBENCH_TARGETS)
  # Every multiple-choice task of the test checkout but the 14 targets (the checkout's own list).
  assert sorted(t.task for t in prompted.bigbench_source_tasks(store)) == \
      sorted(set(store.task_names()) - set(catalog.BIGBENCH_TARGETS)) == ["anachronisms", "arithmetic"]


def test_task_names_follow_t0():
  spec = catalog.DatasetSpec("super_glue", "wsc.fixed")
  assert catalog.template_task_name(spec, "does p stand for") == "super_glue_wsc.fixed_does_p_stand_for"
  assert catalog.template_task_name(catalog.DatasetSpec("imdb"), "Sentiment with choices ") == \
      "imdb_Sentiment_with_choices_"
  assert catalog.template_task_name(catalog.HELD_OUT_DATASETS[2], "can we infer") == "anli_can_we_infer_r1"
  assert catalog.T0_TRAIN_DATASETS[0].mixture_cap(7) == 3668
  amazon = [s for s in catalog.T0_TRAIN_DATASETS if s.name == "amazon_polarity"][0]
  assert amazon.mixture_cap(9) == 500_000 // 9


def test_copa_rank_rows_hand_checked(templates_dir, data_dir):
  spec = catalog.HELD_OUT_DATASETS[5]
  assert spec.key == "super_glue/copa"
  template = templates.load_dataset_templates(templates_dir, "super_glue", "copa")["exercise"]
  task = prompted.PromptsourceTask(spec, template, data_root=data_dir)
  rows = list(task.rank_rows())
  assert rows[:2] == [rc.ChoiceRow(COPA_EXERCISE_INPUT, "The sun was rising.", (0, 0), True),
                      rc.ChoiceRow(COPA_EXERCISE_INPUT, "The grass was cut.", (0, 1), False)]
  assert [r.idx for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
  assert rows[2].is_correct and not rows[3].is_correct  # both records have label 0


def test_dropped_examples_keep_their_index(templates_dir, data_dir):
  template = templates.load_dataset_templates(templates_dir, "super_glue", "copa")["…What could happen next, C1 or C2?"]
  task = prompted.PromptsourceTask(catalog.HELD_OUT_DATASETS[5], template, data_root=data_dir)
  examples = list(task.examples("validation"))
  assert [e.idx for e in examples] == [1]  # record 0 asks for a cause: the template renders nothing
  assert task.report.dropped[template.where] == 1
  assert examples[0].answer_choices == ("The patient filed a malpractice lawsuit against the physician.",
                                        "The patient disclosed confidential information to the physician.")
  assert examples[0].is_correct == (True, False)


def test_anli_rounds_read_their_splits(templates_dir, tmp_path):
  template = templates.load_dataset_templates(templates_dir, "anli")["GPT-3 style"]
  (tmp_path / "anli").mkdir()
  for r, label in (("r1", 0), ("r2", 1), ("r3", 2)):
    (tmp_path / "anli" / f"dev_{r}.jsonl").write_text(json.dumps(
        {"uid": r, "premise": f"premise {r}", "hypothesis": "h", "label": label, "reason": ""}) + "\n")
  for spec, label in zip(catalog.HELD_OUT_DATASETS[2:5], (0, 1, 2)):
    (ex,) = prompted.PromptsourceTask(spec, template, data_root=tmp_path).examples("validation")
    assert spec.task_suffix[1:] in ex.inputs and ex.is_correct.index(True) == label


@pytest.mark.parametrize("bad, field, says", [
    ({"hypothesis": "DELETE"}, "hypothesis", "field(s) ['hypothesis'] that the template reads are missing"),
    ({"premise": None}, "premise", "field 'premise' that the template reads is null"),
    ({"label": 5}, "label", "field 'label' is 5, not an index into the template's 2 answer choices (True | False)"),
    ({"label": "entailment"}, "label", "field 'label' is 'entailment', not an index into the template's 2"),
    ({"label": -1}, "label", "field 'label' is -1, the Hugging Face mark of an unlabeled example")])
def test_an_example_the_data_fails_is_refused_naming_file_line_and_field(templates_dir, tmp_path, bad, field,
                                                                          says):
  template = templates.load_dataset_templates(templates_dir, "super_glue", "rte")["GPT-3 style"]
  (tmp_path / "super_glue" / "rte").mkdir(parents=True)
  broken = {k: v for k, v in {"premise": "p", "hypothesis": "h", "label": 1, **bad}.items() if v != "DELETE"}
  rows = [{"premise": "p", "hypothesis": "h", "label": 0}, broken, {"premise": "q", "hypothesis": "h2", "label": 1}]
  split = tmp_path / "super_glue" / "rte" / "validation.jsonl"
  split.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
  task = prompted.PromptsourceTask(catalog.HELD_OUT_DATASETS[0], template, data_root=tmp_path)
  with pytest.raises(ValueError) as raised:
    list(task.examples("validation"))
  message = str(raised.value)
  assert message.startswith(f"{split}: line 3: ")  # the blank line 2 is counted: the file's own line number
  assert says in message and repr(field) in message and "\n" not in message
  assert "super_glue/rte:'GPT-3 style'" in message


def test_a_template_that_skips_an_example_by_design_counts_it(templates_dir, data_dir):
  template = templates.load_dataset_templates(templates_dir, "super_glue", "copa")["…What could happen next, C1 or C2?"]
  task = prompted.PromptsourceTask(catalog.HELD_OUT_DATASETS[5], template, data_root=data_dir)
  assert task.skipped() == 0
  assert [e.idx for e in task.examples("validation")] == [1]
  assert task.skipped() == 1  # record 0 asks for a cause: promptsource renders nothing, T0 drops it


def test_example_without_choices_is_counted(tmp_path):
  (template,) = templates.parse_templates_yaml(
      "dataset: demo\ntemplates:\n  a: !Template\n    name: pick\n"
      "    answer_choices: '{{ options | join(\"|||\") }}'\n    jinja: '{{ q }} ||| {{ answer }}'\n").values()
  (tmp_path / "demo").mkdir()
  (tmp_path / "demo" / "validation.jsonl").write_text(
      json.dumps({"q": "one", "options": [], "answer": "x"}) + "\n" +
      json.dumps({"q": "two", "options": ["x", "y"], "answer": "y"}) + "\n")
  task = prompted.PromptsourceTask(catalog.DatasetSpec("demo"), template, data_root=tmp_path)
  (ex,) = task.examples("validation")
  assert ex.idx == 1 and ex.is_correct == (False, True)
  assert "example 0: the example has no answer choices" in task.report.summary()


def test_missing_data_is_reported_before_iteration(templates_dir, tmp_path):
  template = templates.load_dataset_templates(templates_dir, "hellaswag")["complete_first_then"]
  task = prompted.PromptsourceTask(catalog.HELD_OUT_DATASETS[6], template, data_root=tmp_path)
  with pytest.raises(records.DatasetNotFoundError, match="no data for hellaswag split 'validation'"):
    task.examples("validation")


def test_bigbench_rank_rows(bigbench_folder):
  store = bigbench.BigBenchStore(bigbench_folder)
  task = prompted.BigBenchTask(store, "novel_concepts")
  first = next(iter(task.examples("all")))
  raw = store.parts("novel_concepts")[0][1]["examples"][0]
  assert first.idx == 0 and list(first.answer_choices) == [k.strip() for k in raw["target_scores"]]
  assert first.inputs.startswith("Let's do some find-the-common-concept problems.")
  rows = list(task.rank_rows())
  assert len(rows) == sum(len(e["target_scores"]) for e in store.parts("novel_concepts")[0][1]["examples"])
  assert [r.idx for r in rows[:len(first.answer_choices)]] == [(0, c) for c in range(len(first.answer_choices))]
  assert sum(r.is_correct for r in rows) >= 32
  validation = list(task.examples("validation"))
  train = list(task.examples("train"))
  assert [e.idx for e in validation] == list(range(16)) and [e.idx for e in train] == list(range(16))
  assert not {e.inputs for e in validation} & {e.inputs for e in train}  # a cut of "all" into two
  assert {e.inputs for e in validation + train} == {e.inputs for e in task.examples("all")}
  picked = list(task.examples("train", positions={3, 11}))
  assert [(e.idx, e.inputs) for e in picked] == [(3, train[3].inputs), (11, train[11].inputs)]
  counts = prompted.split_counts(task)
  assert counts == {"all": 32, "train": 16, "validation": 16}

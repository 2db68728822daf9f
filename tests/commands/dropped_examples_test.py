"""No number from a silently dropped example: an example whose data the template cannot render is
refused in one line naming the file, line and field; one the template skips by design is counted and
reported as `skipped` beside n. Run through `rospr evaluate`, where a user meets them."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from cli_runner import run_rospr
from rospr_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTE = "super_glue_rte_GPT_3_style"
COPA = "super_glue_copa__What_could_happen_next_C1_or_C2_"  # only for `question == "effect"`


def _argv(checkpoint, out, data_dir, target=RTE):
  return ["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/held_out_targets.gin",
          f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{out}'", "--gin.METHODS=['T0']",
          f"--gin.TARGETS=['{target}']", f"--gin.DATA_DIR='{data_dir}'", "--gin.BATCH_SIZE=8"]


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rte(data: pathlib.Path, rows) -> pathlib.Path:
  split = data / "super_glue" / "rte" / "validation.jsonl"
  split.parent.mkdir(parents=True, exist_ok=True)
  split.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return split


GOOD = [{"premise": f"The cat {i} sat on the mat.", "hypothesis": "A cat sat.", "idx": i, "label": i % 2}
        for i in range(3)]


@pytest.mark.parametrize("bad, shown, subprocess_", [
    ({"label": 5}, "field 'label' is 5, not an index into the template's 2 answer choices (True | False)", True),
    ({"premise": None}, "field 'premise' that the template reads is null", True),
    ({"label": -1}, "field 'label' is -1, the Hugging Face mark of an unlabeled example", False),
    ({"label": "entailment"}, "field 'label' is 'entailment', not an index into the template's 2", False)])
def test_an_example_the_data_fails_is_refused_in_one_line(tiny_model, tmp_path, capsys, bad, shown, subprocess_):
  data, out = tmp_path / "data", tmp_path / "eval"
  split = _rte(data, GOOD)
  assert cli.main(_argv(tiny_model.checkpoint, out, data)) == 0  # a finished run the refusal must not touch
  before = _snapshot(out)
  _rte(data, GOOD[:2] + [{**GOOD[2], **bad}])
  code, err = run_rospr(_argv(tiny_model.checkpoint, out, data), capsys, in_subprocess=subprocess_)
  assert code == 2, err[-2000:]
  assert "Traceback" not in err
  (line,) = [l for l in err.splitlines() if l.startswith("rospr evaluate: error: ")]
  assert line.startswith(f"rospr evaluate: error: {split}: line 3: {shown}")
  assert "super_glue/rte:'GPT-3 style', validation split" in line
  assert _snapshot(out) == before  # nothing already written was changed or removed


def test_examples_a_template_skips_by_design_are_counted_beside_n(tiny_model, tmp_path):
  data, out = tmp_path / "data", tmp_path / "eval"
  copa = data / "super_glue" / "copa" / "validation.jsonl"
  copa.parent.mkdir(parents=True)
  rows = [{"premise": f"Event {i} happened.", "choice1": "One thing.", "choice2": "Another thing.",
           "question": "cause" if i % 3 == 0 else "effect", "idx": i, "label": i % 2} for i in range(6)]
  copa.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert cli.main(_argv(tiny_model.checkpoint, out, data, target=COPA)) == 0
  (record,) = json.loads((out / "results.json").read_text())["per_template"]
  assert record["examples"] == 4 and record["skipped"] == 2  # n + skipped = the file's 6 lines
  summary = json.loads((out / "results.json").read_text())["summary"]
  assert summary["examples"] == {"super_glue/copa": 4} and summary["skipped"] == {"super_glue/copa": 2}
  table = (out / "results.md").read_text()
  assert "| n | 4 | 4 |\n| skipped | 2 | 2 |" in table
  (written,) = (out / "records").rglob("*.json")
  assert json.loads(written.read_text())["skipped"] == 2


@pytest.mark.parametrize("answer", ["", "1"])
def test_an_unlabeled_winogrande_example_is_refused_not_scored_against_a_made_up_target(tiny_model, tmp_path,
                                                                                         answer):
  """Hugging Face marks Winogrande's (and HellaSwag's) unlabeled examples with "" where a label goes;
  `{% if answer == '1' %}` would make option2 the target of such an example."""
  data, out = tmp_path / "data", tmp_path / "eval"
  split = data / "winogrande" / "winogrande_xl" / "validation.jsonl"
  split.parent.mkdir(parents=True)
  rows = [{"sentence": f"The cup {i} did not fit in the bag because _ was too big.", "option1": "cup",
           "option2": "bag", "answer": "1"} for i in range(2)]
  split.write_text("".join(json.dumps(r) + "\n" for r in rows + [{**rows[0], "answer": answer}]))
  code, err = run_rospr(_argv(tiny_model.checkpoint, out, data,
                              target="winogrande_winogrande_xl_does_underscore_refer_to"), None, in_subprocess=True)
  if answer:
    assert code == 0, err[-2000:]
    return
  assert code == 2 and "Traceback" not in err, err[-2000:]
  (line,) = [l for l in err.splitlines() if l.startswith("rospr evaluate: error: ")]
  assert line.startswith(f"rospr evaluate: error: {split}: line 3: field 'answer' is empty, the Hugging Face "
                         "mark of an unlabeled example"), line
  assert not (out / "records").exists()

"""Report aggregation against a hand-computed case, and the files a person opens."""

from __future__ import annotations

import json

import pytest

from rospr_jax.eval import report

RECORDS = [
    {"method": "T0", "dataset": "rte", "template": "a", "accuracy": 0.50, "examples": 10},
    {"method": "T0", "dataset": "rte", "template": "b", "accuracy": 0.70, "examples": 10},
    {"method": "T0", "dataset": "rte", "template": "c", "accuracy": 0.90, "examples": 10},
    {"method": "T0", "dataset": "cb", "template": "a", "accuracy": 0.20, "examples": 5},
    {"method": "T0", "dataset": "cb", "template": "b", "accuracy": 0.40, "examples": 5},
    {"method": "RoSPr", "dataset": "rte", "template": "a", "accuracy": 0.60, "examples": 10},
    {"method": "RoSPr", "dataset": "cb", "template": "a", "accuracy": 0.50, "examples": 5},
]


def test_summary_hand_computed():
  s = report.summarize(RECORDS)
  assert s["methods"] == ["T0", "RoSPr"] and s["datasets"] == ["rte", "cb"]
  assert s["mean"]["T0"] == pytest.approx({"rte": 0.70, "cb": 0.30})
  assert s["median"]["T0"] == pytest.approx({"rte": 0.70, "cb": 0.30})
  assert s["average_mean"]["T0"] == pytest.approx(0.50)
  assert s["average_mean"]["RoSPr"] == pytest.approx(0.55)


def test_median_differs_from_mean():
  records = [dict(r, accuracy=a) for r, a in zip(RECORDS[:3], (0.1, 0.2, 0.9))]
  s = report.summarize(records)
  assert s["mean"]["T0"]["rte"] == pytest.approx(0.4) and s["median"]["T0"]["rte"] == pytest.approx(0.2)


def test_markdown_table_layout():
  table = report.markdown_table(report.summarize(RECORDS))
  assert table.splitlines()[0] == "| method | rte | cb | average |"
  assert table.splitlines()[2] == "| T0 | 70.00 | 30.00 | 50.00 |"
  assert table.splitlines()[3] == "| RoSPr | 60.00 | 50.00 | 55.00 |"


def test_write_report_files(tmp_path):
  retrieval = {"rte/a": {"src1": 7, "src2": 3}, "cb/a": {"src2": 10}}
  report.write_report(str(tmp_path), RECORDS, retrieval=retrieval, preamble="# Demo")
  payload = json.loads((tmp_path / "results.json").read_text())
  assert payload["summary"]["average_mean"]["RoSPr"] == pytest.approx(0.55)
  assert payload["retrieval_frequencies"] == retrieval
  md = (tmp_path / "results.md").read_text()
  assert md.startswith("# Demo") and "| RoSPr | 60.00 | 50.00 | 55.00 |" in md
  for name in ("accuracy.png", "retrieval.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]

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


def test_tables_show_n_and_wilson_intervals_hand_checked():
  summary = report.summarize(RECORDS)
  assert summary["examples"] == {"rte": 30, "cb": 10}  # summed over templates, counted once per method
  lines = report.markdown_table(summary).splitlines()
  assert lines[-1] == "| n | 30 | 10 | 40 |"
  with_intervals = report.markdown_table(summary, intervals=True).splitlines()
  # T0 on rte: 0.70 of 30 examples -> Wilson 95% [0.5212, 0.8334]; on cb: 0.30 of 10 -> [0.1078, 0.6032].
  assert with_intervals[2] == "| T0 | 70.0 [52, 83] | 30.0 [11, 60] | 50.00 |"
  low, high = report.interval(0.7, 30)
  assert (round(low, 4), round(high, 4)) == (0.5212, 0.8334)
  low, high = report.interval(0.8, 10)  # the textbook case: 8 of 10
  assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def _captured_figure(monkeypatch):
  figures = []
  monkeypatch.setattr(report, "_save_figure", lambda fig, path: figures.append(fig))
  return figures


def test_accuracy_plot_draws_chance_as_a_tick_with_title_and_labels(monkeypatch):
  figures = _captured_figure(monkeypatch)
  records = RECORDS + [dict(r, method="chance", accuracy=0.5) for r in RECORDS if r["method"] == "T0"]
  report.plot_accuracy(report.summarize(records), "unused.png", title="Held-out", ticks=("chance",))
  (ax,) = figures[0].axes
  assert len(ax.containers) == 2  # bars for T0 and RoSPr only
  assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["RoSPr", "T0", "chance"]
  assert len(ax.collections) == 1  # chance: one tick per dataset, not a bar
  assert ax.get_title() == "Held-out" and ax.get_xlabel().startswith("dataset")
  assert [t.get_text() for t in ax.get_xticklabels()] == ["rte\n(n=30)", "cb\n(n=10)"]
  assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 8


def test_retrieval_heatmap_puts_own_sources_on_the_diagonal_and_names_the_never_retrieved(monkeypatch):
  figures = _captured_figure(monkeypatch)
  frequencies = {"b": {"b": 6, "a": 2}, "a": {"a": 5, "b": 1}, "c": {"a": 2}}
  report.plot_retrieval_heatmap(frequencies, "unused.png", sources=["a", "b", "c", "d"])
  ax = figures[0].axes[0]
  assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a", "c"]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a", "c"]  # same order as the rows
  grid = ax.images[0].get_array()
  assert grid[0, 0] == 0.75 and grid[1, 1] == 5 / 6 and grid[2, 2] == 0.0
  assert "never retrieved (2): c, d" in ax.get_xlabel()

"""The offline end-to-end run on a shrunk configuration (Flax examples' train_test style): real BIG-bench
sources and targets from the cached archive, every step, and the report a person opens, published to
a URL (file://, fsspec's local driver used as an object store) as `rospr demo --output_dir gs://...`
publishes it."""

from __future__ import annotations

import json

import pytest

from rospr_jax import paths
from rospr_jax.commands import demo as pipeline


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
  url, published = f"file://{tmp_path}/bucket/demo", tmp_path / "bucket" / "demo"
  settings = pipeline.DemoSettings(
      num_sources=3, max_train_per_source=48, backbone_steps=20, prompt_steps=6, prompt_length=4,
      library_n=8, max_eval_examples=8, max_held_in_examples=8, input_length=64, target_length=16,
      batch_size=8, held_out_tasks=("strategyqa", "winowhy"))
  summaries = pipeline.run(url, settings)
  marker = json.loads((published / paths.COMMIT_MARKER).read_text())
  assert "partial" not in marker and {"report.md", "demo.json", "library/manifest.json"} <= set(marker["files"])
  tmp_path = published  # what the user reads there

  assert set(summaries) == {"held_out", "held_in"}
  assert summaries["held_out"]["datasets"] == ["bigbench/strategyqa", "bigbench/winowhy"]
  assert summaries["held_out"]["methods"] == ["chance", "T0", "RoSPr", "INTER", "VAR", "INTER+VAR"]
  assert len(summaries["held_in"]["datasets"]) == 3
  for summary in summaries.values():
    for method, average in summary["average_mean"].items():
      assert 0.0 <= average <= 1.0, (method, average)

  report = (tmp_path / "report.md").read_text()
  assert "## Held-out: the 14 BIG-bench tasks" in report and "| strategyqa | winowhy | average |" in report
  assert "rospr evaluate --gin_file=models/t0_3b.gin --gin_file=eval/paper.gin" in report
  facts = json.loads((tmp_path / "demo.json").read_text())["facts"]
  assert len(facts["sources"]) == 3 and facts["library"]["rows"] == 3 * 8
  for name in ("held_out", "held_in"):
    assert (tmp_path / name / "accuracy.png").stat().st_size > 0
    assert (tmp_path / name / "retrieval.png").stat().st_size > 0
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert {r["method"] for r in results["per_template"]} == set(summaries[name]["methods"])
  assert (tmp_path / "backbone" / "spiece.model").exists()
  assert (tmp_path / "library" / "manifest.json").exists()


def test_the_reports_sentences_come_from_the_numbers():
  records = []
  for method, accs in [("chance", (0.25, 0.50)), ("T0", (0.24, 0.80)), ("RoSPr", (0.30, 0.70))]:
    for dataset, acc in zip(("bigbench/a", "bigbench/b"), accs):
      records.append({"method": method, "dataset": dataset, "template": "t", "accuracy": acc, "examples": 50})
  summary = pipeline.report.summarize(records)
  claims = pipeline._claims({"held_out": summary, "held_in": summary})
  # T0 0.24 on 50 examples: Wilson [0.143, 0.374] holds chance 0.25; 0.80: [0.670, 0.888] misses 0.50.
  assert "chance lies inside the 95% interval of T0's accuracy on 1 of them" in claims["held_out_sentence"]
  assert "the largest gap is b (80.0% vs chance 50.0%)" in claims["held_out_sentence"]
  # RoSPr - T0: +6.0 and -10.0 points; 0.30 lies in T0's [0.143, 0.374], 0.70 in [0.670, 0.888].
  assert "from -10.0 to +6.0 points, and for 2 of 2 sources" in claims["held_in_sentence"]
  assert "-2.00 points" in claims["held_in_sentence"]
  assert claims["n_range"] == "50-50" and claims["one_example_points"] == "2.0-2.0 points"

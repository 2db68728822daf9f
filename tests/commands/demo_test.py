"""`rospr demo --quick` as a user runs it (a subprocess, published to a file:// URL as `--output_dir
gs://...` publishes it), and the report's sentences written from hand-computed numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rospr_jax import storage
from rospr_jax.commands import demo_analysis
from rospr_jax.data.generated import Template


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_publishes_its_report(tmp_path):
  url, published = f"file://{tmp_path}/bucket/demo", tmp_path / "bucket" / "demo"
  env = dict(os.environ, ROSPR_CACHE=str(tmp_path / "cache"))
  killed = subprocess.Popen(["true"])  # a demo killed midway left its temporary folder: swept
  killed.wait()
  leftover = tmp_path / "bucket" / storage.tmp_prefix("demo").replace(f"-{os.getpid()}-", f"-{killed.pid}-")
  (leftover.parent / (leftover.name + "abcd1234")).mkdir(parents=True)
  demo = [sys.executable, "-m", "rospr_jax.cli", "demo", "--quick", "--output_dir", url]
  done = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Traceback" not in done.stderr and os.listdir(tmp_path / "bucket") == ["demo"]
  again = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=600)  # refused at once
  assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
      f"rospr demo: --output_dir {url} already holds a rospr_demo; pass --overwrite to replace it."), again.stderr
  assert "Demo finished in" in done.stdout and "pooled over held-out targets: T0 " in done.stdout
  for stage in ("generate data", "train backbone", "train soft prompts", "train the multitask prompt",
                "build library", "evaluate"):
    assert f"demo: {stage} done in" in done.stderr  # progress per stage
  listed = storage.ManifestKind("demo output").read(published).files  # committed whole, manifest last
  assert {"report.md", "demo.json", "library/manifest.json"} <= set(listed)

  report = (published / "report.md").read_text()
  assert "| new formats (6) | 144 |" in report  # 6 format targets x 24 examples (--quick)
  assert "Factor analysis" in report and "Retrieval quality" in report
  assert "rospr evaluate --gin_file=models/t0_3b.gin --gin_file=eval/paper.gin" in report
  saved = json.loads((published / "demo.json").read_text())
  rows = saved["per_target"]
  assert len(rows) == 12 and {r["kind"] for r in rows} == {"format", "cross", "template"}
  assert saved["pooled"]["all"]["examples"] == 12 * 24
  for row in rows:  # every method scored every target, each accuracy k / 24
    assert set(row["accuracy"]) == {"T0", "RoSPr", "INTER", "VAR", "INTER+VAR", "Random", "Oracle (labels)",
                                    "MT prompt", "Fine-tuned (16 labels, from RoSPr)", "Fine-tuned (16 labels)"}
    for accuracy in row["accuracy"].values():
      assert abs(accuracy * 24 - round(accuracy * 24)) < 1e-9
    assert row["accuracy"]["Oracle (labels)"] >= max(row["accuracy"]["RoSPr"], row["accuracy"]["Random"]) - 1e-9
  assert saved["facts"]["verdict"] == demo_analysis.verdict(saved["pooled"])
  assert saved["facts"]["baselines"] == demo_analysis.baselines_sentence(saved["pooled"])
  assert "Against the baselines, RoSPr's pooled" in report and "MT prompt's interval" in report
  # The library is named where it was published, not the temporary folder it was built in.
  selections = json.loads((published / "results.json").read_text())["selections"]
  named = {chosen["params"]["library"] for target in selections.values() for chosen in target.values()
           if "library" in chosen["params"]}
  assert named == {saved["facts"]["library"]["library"]} == {str(published / "library")}  # file:// is local
  assert (published / "accuracy.png").stat().st_size > 0 and (published / "retrieval.png").stat().st_size > 0
  assert (published / "backbone" / "spiece.model").exists()


def _row(name, kind, t0, rospr, n=100, rospr_source=None, relation=None):
  row = {"target": name, "kind": kind, "examples": n, "accuracy": {"T0": t0, "RoSPr": rospr}}
  if rospr_source:
    target, source = Template.from_name(name), Template.from_name(rospr_source)
    row.update(rospr_same_skill=source.skill == target.skill, rospr_same_format=source.format == target.format)
  if relation:
    row["prompt_accuracy_by_relation"] = relation
  return row


def test_pooled_accuracies_intervals_and_sentences_by_hand():
  rows = [_row("generated_sentiment_truefalse_f0", "format", 0.50, 0.70, rospr_source="generated_weather_truefalse_f1",
               relation={"other skill, same format": 0.7, "same skill, other format": 0.5}),
          _row("generated_weather_yesno_f5", "template", 0.90, 0.80, rospr_source="generated_weather_yesno_f0",
               relation={"other skill, same format": 0.6, "same skill, other format": 0.4})]
  pooled = demo_analysis.pooled(rows, ["T0", "RoSPr"])
  # T0: (50 + 90) / 200 = 0.70; RoSPr: (70 + 80) / 200 = 0.75.
  assert pooled["all"]["accuracy"] == pytest.approx({"T0": 0.70, "RoSPr": 0.75})
  # Wilson 95% of 140 / 200: centre (0.7 + z^2/400) / (1 + z^2/200), half-width computed by hand below.
  z, n, p = 1.959963984540054, 200, 0.70
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
  assert pooled["all"]["interval"]["T0"] == pytest.approx((centre - half, centre + half))
  assert pooled["format"]["rospr_same_format"] == 1.0 and pooled["all"]["rospr_same_skill"] == 0.5
  # 0.75 lies inside [0.633, 0.759]: inside T0's interval.
  assert demo_analysis.verdict(pooled) == (
      "Pooled over the 2 held-out targets (200 examples), RoSPr scored 75.0% against 70.0% for T0 (the hard "
      f"prompt alone), inside T0's 95% interval [{100 * (centre - half):.1f}, {100 * (centre + half):.1f}].")
  assert demo_analysis.factor_sentence(pooled) == (
      "A library prompt of the target's answer format (other skill) scored 65.0% on average, one of its skill "
      "(other format) 45.0%: here the answer format matters more.")
  assert demo_analysis.cell(0.7, 200) == f"70.0 [{100 * (centre - half):.0f}, {100 * (centre + half):.0f}]"

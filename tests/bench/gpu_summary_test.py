"""bench/gpu_summary.py: the GPU issue's figures from section JSONs shaped as a device run writes them
(the CPU dry run of bench/gpu.sh cannot give the 64 x 3 peer row or a measured peak), and null with a
reason for what is missing."""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import gpu_summary  # noqa: E402  pylint: disable=wrong-import-position


def write(folder: pathlib.Path, name: str, content: dict) -> None:
  (folder / name).write_text(json.dumps(content))


def device_run(folder: pathlib.Path) -> None:
  """Section JSONs with the fields the scripts write, at the issue's shapes."""
  write(folder, "scoring.json", {"device": "NVIDIA H100 80GB HBM3", "results": [
      {"scorer": "encode-once", "attention": "cudnn", "examples": 64, "choices": 3, "inputs": 256, "targets": 8,
       "median_s": 0.1, "examples_per_s": 640.0},
      {"scorer": "encode-once", "attention": "cudnn", "examples": 64, "choices": 2, "inputs": 256, "targets": 8,
       "median_s": 0.08, "examples_per_s": 800.0}]})
  write(folder, "prompt_tuning.json", {"device": "NVIDIA H100 80GB HBM3", "rows": [
      {"attention": "cudnn", "dropout": 0.1, "S": 1, "B": 32, "T": 256, "P": 100, "L": 16, "step_s": 0.2,
       "compile_s": 40.0, "joint_over_single": 1.0},
      {"attention": "cudnn", "dropout": 0.1, "S": 32, "B": 32, "T": 256, "P": 100, "L": 16, "step_s": 0.21,
       "compile_s": 41.0, "joint_over_single": 1.05}]})
  write(folder, "anchor_hf_xl.json", {"device": "NVIDIA H100 80GB HBM3", "results": [
      {"kind": "prompt_tune_step", "B": 32, "S": 256, "prompt": 100, "T": 16, "median_s": 0.5},
      {"kind": "prompt_tune_step", "B": 8, "S": 512, "prompt": 100, "T": 64, "median_s": 0.35},
      {"kind": "rank_classification", "examples": 64, "choices": 3, "S": 256, "T": 8, "median_s": 0.7,
       "examples_per_s": 80.0},
      {"kind": "rank_classification", "examples": 64, "choices": 2, "S": 256, "T": 8, "median_s": 0.47,
       "examples_per_s": 136.0}]})
  write(folder, "evaluate.json", {"device": "NVIDIA H100 80GB HBM3", "examples": 4800, "median_s": 4.0,
                                  "examples_per_s": 1200.0, "bench": {"examples_per_s": 1600.0},
                                  "over_bench": 0.75, "profile": None})
  write(folder, "plan_train.json", {"plan_total_bytes": 20 * 2**30, "peak_bytes": 16 * 2**30, "plan_over_peak": 1.25})
  write(folder, "plan_scoring.json", {"plan_total_bytes": 9 * 2**30, "peak_bytes": 10 * 2**30, "plan_over_peak": 0.9})


def test_figures_of_a_device_run(tmp_path):
  device_run(tmp_path)
  summary = gpu_summary.summarize(str(tmp_path))
  assert summary["card"] == "NVIDIA H100 80GB HBM3"
  assert summary["prompt_step_dropout_speedup"] == 0.5 / 0.2  # the peer's B 32 step, not its B 8 one
  assert summary["joint32_over_single"] == 1.05
  assert summary["scoring_speedup_64x3"] == 640.0 / 80.0
  assert summary["evaluate_end_to_end_over_bench"] == 0.75
  assert summary["plan_over_measured_peak"] == 0.9  # the smaller over the steps: scoring's plan fell short
  assert summary["goals"] == {"prompt_step_dropout_speedup": False, "joint32_over_single": True,
                              "scoring_speedup_64x3": True, "evaluate_end_to_end_over_bench": False,
                              "plan_over_measured_peak": False}
  assert summary["reasons"] == {}
  assert summary["raw"]["prompt_step"]["peer_s"] == 0.5
  assert summary["raw"]["plan_train"]["peak_bytes"] == 16 * 2**30


def test_missing_sections_give_null_and_a_reason(tmp_path):
  device_run(tmp_path)
  (tmp_path / "evaluate.json").unlink()
  (tmp_path / "plan_train.json").unlink()
  write(tmp_path, "plan_scoring.json", {"unmeasured": "the cpu backend reports no memory stats"})
  rows = json.loads((tmp_path / "prompt_tuning.json").read_text())["rows"]
  write(tmp_path, "prompt_tuning.json", {"rows": [dict(rows[0], B=16)]})  # no joint row, another batch
  summary = gpu_summary.summarize(str(tmp_path))
  for key in ["prompt_step_dropout_speedup", "joint32_over_single", "evaluate_end_to_end_over_bench",
              "plan_over_measured_peak"]:
    assert summary[key] is None and summary["goals"][key] is None, key
  assert summary["scoring_speedup_64x3"] == 8.0
  reasons = summary["reasons"]
  assert "shapes differ" in reasons["prompt_step_dropout_speedup"]
  assert "no joint row" in reasons["joint32_over_single"]
  assert "evaluate.json was not written" in reasons["evaluate_end_to_end_over_bench"]
  assert "plan_train.json was not written" in reasons["plan_over_measured_peak"]
  assert "no memory stats" in reasons["plan_over_measured_peak"]


def test_main_writes_the_summary_and_the_bundle(tmp_path, monkeypatch, capsys):
  sections = tmp_path / "sections"
  sections.mkdir()
  device_run(sections)
  monkeypatch.setattr(sys, "argv", ["gpu_summary.py", str(sections), "--write", str(tmp_path / "gpu-x.json"),
                                    "--bundle", str(tmp_path / "sections.json")])
  gpu_summary.main()
  assert json.loads((tmp_path / "gpu-x.json").read_text())["scoring_speedup_64x3"] == 8.0
  bundle = json.loads((tmp_path / "sections.json").read_text())
  assert sorted(bundle) == sorted(p.name for p in sections.iterdir())
  assert bundle["evaluate.json"]["over_bench"] == 0.75
  assert "written to" in capsys.readouterr().out

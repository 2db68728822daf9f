"""bench/gpu.sh runs end to end: a dry run on the CPU at the tiny size (the plumbing of the one GPU call
a session gets: every section starts, prints its table and writes its JSON; the summary of the issue's
figures is written, and the section JSONs bundled into one file)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
  # The prompt step at the peer's tiny shape (B 2, inputs 32, targets 4), so that the summary's speedup
  # is computed; section 7b's variant is section 2's (compiled already: the JAX cache the tests share);
  # one cheap scoring shape for the plan.
  env = dict(os.environ, OUT=str(tmp_path), SIZE="tiny", DTYPE="float32", JAX_PLATFORMS="cpu",
             SCORING_ATTENTION="xla einsum", MORE_SCORING_ATTENTION="einsum", PROMPT_SHAPES="2x32x4",
             PROMPT_VARIANT="xla:0.1:minimal", MORE_PROMPT_VARIANT="xla:0.1:minimal", ATTENTION="xla",
             PLAN_SCORING_SHAPE="4x32x2x4", SKIP_CARD_TESTS="1",
             EVAL_ARGS="--vocab_size 2000 --max_examples 4 --reps 1 --profile_below 2",
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  env.pop("XLA_FLAGS", None)  # one CPU device, as on the card
  done = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  log = (tmp_path / "log.txt").read_text()
  assert done.returncode == 0, log[-3000:]
  assert "failed or timed out" not in log, log[-3000:]
  assert ": failed: " not in log, log[-3000:]  # a variant that failed on the card and was skipped
  # Three files come back (a device call brings back 8 at most): the log, the summary, the sections.
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["log.txt", "sections.json", summary_name(log)])
  sections = json.loads((tmp_path / "sections.json").read_text())
  check_sections(sections, log)
  check_summary(json.loads((tmp_path / summary_name(log)).read_text()), sections)
  assert "== done" in log


def summary_name(log: str) -> str:
  found = re.search(r"written to \S*/(gpu-\d{4}-\d\d-\d\d\.json)", log)
  assert found, log[-3000:]
  return found.group(1)


def check_sections(sections: dict, log: str) -> None:
  """Every section wrote its rows."""
  peer = sections["anchor_hf_tiny.json"]
  assert {r["kind"] for r in peer["results"]} == {"prompt_tune_step", "rank_classification"}
  scoring = sections["scoring.json"]
  assert [(r["scorer"], r["attention"], r["choices"]) for r in scoring["results"]] == [
      ("encode-once", "xla", 3), ("encode-once", "xla", 2), ("encode-once", "einsum", 3)]
  assert all(r["median_s"] > 0 and r["examples_per_s"] > 0 for r in scoring["results"])
  more = sections["scoring_more.json"]
  assert [r["scorer"] for r in more["results"]] == ["encode-once", "encoder alone", "bare matmul", "bare matmul"]
  agreement = re.search(r"einsum vs xla \(3 choices\): max \|score diff\| / max \|score\| = (\S+),", log)
  assert agreement and float(agreement.group(1)) < 1e-4
  tuning = sections["prompt_tuning.json"]
  assert [(r["attention"], r["dropout"], r["remat"], r["S"]) for r in tuning["rows"]] == [
      ("xla", 0.1, "minimal", 1), ("xla", 0.1, "minimal", 32)]
  lengths = sections["prompt_lengths.json"]
  assert [(r["attention"], r["dropout"], r["S"]) for r in lengths["rows"]] == [("xla", 0.1, 1)]
  assert "padding as lengths" in log
  more = sections["prompt_more.json"]
  assert [(r["attention"], r["dropout"], r["remat"], r["S"]) for r in more["rows"]] == [
      ("xla", 0.1, "minimal", 1), ("xla", 0.1, "minimal", 32)]
  evaluation = sections["evaluate.json"]
  assert evaluation["targets"] == 12 and evaluation["examples"] == 48, evaluation
  assert sum(s["batches"] for s in evaluation["bench"]["shapes"]) >= 12  # one batch per target at least
  assert evaluation["profile"] and all(r["calls"] > 0 for r in evaluation["profile"])  # --profile_below 2
  for step in ("train", "scoring"):
    plan = sections[f"plan_{step}.json"]
    assert plan["plan"]["step"] == step and plan["plan_total_bytes"] > plan["plan"]["arguments"] > 0, plan
    assert plan["unmeasured"] == "the cpu backend reports no memory stats"


def check_summary(summary: dict, sections: dict) -> None:
  """The issue's figures: finite where their sections ran, null with a reason where the CPU cannot say."""
  figures = ["prompt_step_dropout_speedup", "joint32_over_single", "scoring_speedup_64x3",
             "evaluate_end_to_end_over_bench", "plan_over_measured_peak"]
  assert set(figures) <= set(summary) and summary["card"] == "cpu"
  for key in ["prompt_step_dropout_speedup", "joint32_over_single", "evaluate_end_to_end_over_bench"]:
    assert isinstance(summary[key], float) and math.isfinite(summary[key]) and summary[key] > 0, (key, summary)
    assert isinstance(summary["goals"][key], bool)
  peer_step = [r for r in sections["anchor_hf_tiny.json"]["results"] if r["kind"] == "prompt_tune_step"][0]
  ours = sections["prompt_tuning.json"]["rows"]
  assert math.isclose(summary["prompt_step_dropout_speedup"], peer_step["median_s"] / ours[0]["step_s"])
  assert summary["joint32_over_single"] == ours[1]["joint_over_single"]
  assert summary["evaluate_end_to_end_over_bench"] == sections["evaluate.json"]["over_bench"]
  # The tiny peer scores 2 x 2 at other lengths; the CPU reports no peak memory.
  assert summary["scoring_speedup_64x3"] is None and "64 x 3" in summary["reasons"]["scoring_speedup_64x3"]
  assert summary["plan_over_measured_peak"] is None
  assert "no memory stats" in summary["reasons"]["plan_over_measured_peak"]
  assert summary["goals"]["plan_over_measured_peak"] is None

"""bench/gpu.sh runs end to end: a dry run on the CPU at the tiny size (the plumbing of the one GPU call
a session gets: every section starts, prints its table and writes its JSON)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path), SIZE="tiny", DTYPE="float32", JAX_PLATFORMS="cpu",
             SCORING_ATTENTION="xla einsum", MORE_SCORING_ATTENTION="einsum", PROMPT_SHAPES="4x64x8",
             PROMPT_VARIANT="xla:0.1:minimal", MORE_PROMPT_VARIANT="xla:0 einsum:0.1:none", SKIP_CARD_TESTS="1", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  env.pop("XLA_FLAGS", None)  # one CPU device, as on the card
  done = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  log = (tmp_path / "log.txt").read_text()
  assert done.returncode == 0, log[-3000:]
  assert "failed or timed out" not in log, log[-3000:]
  assert ": failed: " not in log, log[-3000:]  # a variant that failed on the card and was skipped
  peer = json.loads((tmp_path / "anchor_hf_tiny.json").read_text())
  assert {r["kind"] for r in peer["results"]} == {"prompt_tune_step", "rank_classification"}
  scoring = json.loads((tmp_path / "scoring.json").read_text())
  assert [(r["scorer"], r["attention"], r["choices"]) for r in scoring["results"]] == [
      ("encode-once", "xla", 3), ("encode-once", "xla", 2), ("encode-once", "einsum", 3)]
  assert all(r["median_s"] > 0 and r["examples_per_s"] > 0 for r in scoring["results"])
  more = json.loads((tmp_path / "scoring_more.json").read_text())
  assert [r["scorer"] for r in more["results"]] == ["encode-once", "encoder alone", "bare matmul", "bare matmul"]
  agreement = re.search(r"einsum vs xla \(3 choices\): max \|score diff\| / max \|score\| = (\S+),", log)
  assert agreement and float(agreement.group(1)) < 1e-4
  tuning = json.loads((tmp_path / "prompt_tuning.json").read_text())
  assert [(r["attention"], r["dropout"], r["remat"], r["S"]) for r in tuning["rows"]] == [
      ("xla", 0.1, "minimal", 1), ("xla", 0.1, "minimal", 32)]
  lengths = json.loads((tmp_path / "prompt_lengths.json").read_text())
  assert [(r["attention"], r["dropout"], r["S"]) for r in lengths["rows"]] == [("xla", 0.1, 1)]
  assert "padding as lengths" in log
  more = json.loads((tmp_path / "prompt_more.json").read_text())
  assert [(r["attention"], r["dropout"], r["remat"], r["S"]) for r in more["rows"]] == [
      ("xla", 0.0, "minimal", 1), ("xla", 0.0, "minimal", 32), ("einsum", 0.1, "none", 1)]
  assert "== done" in log

"""A multi-process run never hangs: a killed worker or coordinator (while compiling or training), a
worker that fails alone and a worker whose peers never arrive end every other process with one line
within bounded time."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from mp_workers import describe, load_test_module

from rospr_jax.data import vocabulary

pytestmark = pytest.mark.slow

train_cli = load_test_module("prompt/train_cli_test.py")


def _train_until(rospr, tmp_path, phase, **env):
  """Starts an endless 2-process train-prompts and returns its workers once they reach `phase`:
  "compile" (the processes have met in their first collective and compile step 1) or "step"
  (checkpoint 2 is saved and training goes on)."""
  examples = tmp_path / "ex.jsonl"
  train_cli._write_examples(examples)
  model_dir = tmp_path / "run"
  workers = rospr.start(["train-prompts", *train_cli._argv(examples, model_dir, 100_000, 2)], **env)
  deadline = time.time() + 180
  while not (model_dir / "checkpoints" / "2").is_dir() if phase == "step" else \
      "connected to 1 peer" not in workers[0].out:
    assert all(w.process.poll() is None for w in workers), describe(workers)
    assert time.time() < deadline, f"no {phase} within 180 s:\n" + describe(workers)
    time.sleep(0.05)
  if phase == "compile":
    time.sleep(2)  # step 1 compiles for about 7 s on 2 cores
    assert "Step 1 compiled" not in workers[0].err, describe(workers)
  return workers


def _stops_with_one_line(rospr, workers, victim, within=30):
  """Kills process `victim`; the other must exit 1 within `within` s, its last words one rospr line
  naming the lost process, with no native abort or stack trace. Returns that line."""
  workers[victim].process.send_signal(signal.SIGKILL)
  killed = time.time()
  survivor = workers[1 - victim]
  rospr.wait([survivor], timeout=within + 30)
  assert workers[victim].process.wait() == -signal.SIGKILL
  assert survivor.code == 1 and time.time() - killed < within, describe(workers)
  ours = [l for l in survivor.err.splitlines() if l.startswith("rospr train-prompts:")]
  assert len(ours) == 1, describe(workers)
  assert ours[0].startswith(f"rospr train-prompts: process {1 - victim} of 2 lost process {victim}")
  assert ours[0].endswith(f"stopping process {1 - victim} too. Rerun the same command on every process "
                          "to resume."), describe(workers)
  assert not any(s in survivor.err for s in ("Terminating process", "Check failure", "Traceback"))
  return ours[0]


def test_a_worker_killed_while_the_others_compile_is_named_within_30_s_by_default(rospr, tmp_path):
  # the default heartbeat timeout, 20 s; no compilation cache, so that step 1 compiles for seconds
  workers = _train_until(rospr, tmp_path, "compile", ROSPR_HEARTBEAT_TIMEOUT="", JAX_COMPILATION_CACHE_DIR="")
  line = _stops_with_one_line(rospr, workers, victim=1)
  assert "(no heartbeat for ROSPR_HEARTBEAT_TIMEOUT=20 s: killed, out of memory" in line


def test_a_worker_killed_while_training_is_named_at_once(rospr, tmp_path):
  workers = _train_until(rospr, tmp_path, "step")
  line = _stops_with_one_line(rospr, workers, victim=1, within=15)
  # A collective with the dead peer fails at once, or the heartbeats (10 s in these tests) tell.
  assert "(a computation with it failed: " in line or "(no heartbeat for " in line


def test_a_killed_coordinator_is_named_at_once(rospr, tmp_path):
  workers = _train_until(rospr, tmp_path, "step")
  line = _stops_with_one_line(rospr, workers, victim=0, within=15)
  assert "lost process 0, the coordinator (its coordination service" in line or \
      "(a computation with it failed: " in line


def test_a_worker_that_fails_alone_stops_the_others_with_its_message(rospr, tmp_path):
  """Process 0 refuses to overwrite a library (only it writes) while process 1 goes on embedding."""
  vocab = vocabulary.offline_vocabulary_path()
  (tmp_path / "all.jsonl").write_text("".join(json.dumps({"source": s, "text": f"{s} text {i}"}) + "\n"
                                              for s in ("a", "b") for i in range(4)))
  (tmp_path / "names.txt").write_text("a\nb\n")
  np.save(tmp_path / "prompts.npy", np.zeros((2, 3, 64), np.float32))
  (tmp_path / "library").mkdir()
  (tmp_path / "library" / "keep.txt").write_text("not a library")
  workers = rospr.wait(rospr.start(
      ["build-library", "--out", tmp_path / "library", "--prompts", tmp_path / "prompts.npy",
       "--instances", tmp_path / "all.jsonl", "--source-names", tmp_path / "names.txt",
       "--random-retriever", "tiny", "--vocab", vocab, "--n", "4", "--index", "exact"]), timeout=120)
  assert [w.code for w in workers] == [2, 1], describe(workers)
  refusal = f"--out {tmp_path / 'library'} holds files that are not a rospr_library (keep.txt)"
  assert workers[0].err.strip().splitlines()[-1].startswith(f"rospr build-library: {refusal}")
  # The survivor's one rospr line (the runtime may print a gRPC "CANCELLED" line after it as it goes).
  (last,) = [l for l in workers[1].err.strip().splitlines() if l.startswith("rospr build-library:")]
  assert last.startswith(f"rospr build-library: process 0 of 2 stopped (exit code 2: {refusal}")
  assert last.endswith("stopping process 1 too.")
  assert (tmp_path / "library" / "keep.txt").read_text() == "not a library"


def test_processes_given_other_settings_stop_at_once_naming_the_difference(rospr, tmp_path):
  """Process 1 given another TRAIN_STEPS would train on while process 0 waits in a collective: the run
  facts and step settings are compared with process 0's before any step."""
  examples = tmp_path / "ex.jsonl"
  train_cli._write_examples(examples)
  argv = lambda index: ["train-prompts", *train_cli._argv(examples, tmp_path / "run", 8 if index else 12, 2)]
  workers = rospr.wait(rospr.start(argv), timeout=120)
  assert [w.code for w in workers] == [1, 2], describe(workers)
  mine = workers[1].err.strip().splitlines()[-1]
  assert mine == ("rospr train-prompts: error: train-prompts: process 1 of 2 runs with other settings than "
                  "process 0 (num_steps: process 0 12, this process 8); give every process the same command "
                  "line."), describe(workers)
  assert "process 1 of 2 stopped (exit code 2: " in workers[0].err and "num_steps" in workers[0].err
  assert not (tmp_path / "run" / "checkpoints" / "2").exists()  # stopped before any step


def test_a_peer_that_never_arrives_ends_the_wait_with_one_line(rospr):
  (worker,) = rospr.start(["score", "--checkpoint", "unused", "--input", "x", "--choice", "y"],
                          processes=1, JAX_COORDINATOR_ADDRESS="127.0.0.1:1", ROSPR_NUM_PROCESSES="2",
                          ROSPR_PROCESS_ID="1", ROSPR_INIT_TIMEOUT="3")
  rospr.wait([worker], timeout=60)
  assert worker.code == 2
  assert worker.err.strip().splitlines()[-1] == (
      "rospr score: process 1 of 2, coordinator 127.0.0.1:1: not every process arrived within "
      "ROSPR_INIT_TIMEOUT=3 s (a process that never started or stopped early, or another "
      "JAX_COORDINATOR_ADDRESS or ROSPR_NUM_PROCESSES on some process).")

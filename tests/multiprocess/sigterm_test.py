"""Preemption of a 2-process `train-prompts` (rospr_jax/preemption.py): SIGTERM to one process's
supervisor at a random step reaches JAX's preemption service, and every process stops at the step it
agreed on, checkpointed there, with one line and exit code 75; the rerun ends with the prompts of an
uninterrupted run, byte for byte. (One process: tests/preemption_test.py.)"""

from __future__ import annotations

import random
import signal
import time

import pytest

from mp_workers import describe, load_test_module

pytestmark = pytest.mark.slow

train_cli = load_test_module("prompt/train_cli_test.py")
one_process = load_test_module("preemption_test.py")  # its line and export comparison
STEPS = 200  # 2 s or more of steps after the signal, whatever the machine: JAX's notifier polls every 1 s


def _wait_for_step(workers, step: int, timeout: float = 180) -> None:
  """Returns once process 0 logged training step `step` (LOG_EVERY=2: an even one)."""
  deadline = time.time() + timeout
  while f"] [{step}] loss=" not in workers[0].err:
    assert all(w.process.poll() is None for w in workers), describe(workers)
    assert time.time() < deadline, f"no step {step} within {timeout} s:\n" + describe(workers)
    time.sleep(0.02)


def test_sigterm_at_a_random_step_stops_both_at_one_saved_step_and_the_rerun_ends_as_uninterrupted(
    rospr, tmp_path):
  seed = random.randrange(2**32)
  rng = random.Random(seed)
  victim, after = rng.randrange(2), 2 * rng.randint(1, 20)
  train_cli._write_examples(tmp_path / "ex.jsonl")
  argv = lambda run: ["train-prompts", *train_cli._argv(tmp_path / "ex.jsonl", tmp_path / run, STEPS, 50)]
  rospr.run(argv("uninterrupted"))
  workers = rospr.start(argv("preempted"))
  _wait_for_step(workers, after)
  workers[victim].process.send_signal(signal.SIGTERM)  # the supervisor: it passes it on to its child
  rospr.wait(workers, timeout=120)
  said = f"seed {seed}: SIGTERM to process {victim} after step {after}\n" + describe(workers)
  assert [w.code for w in workers] == [75, 75], said
  lines = [[l for l in w.err.splitlines() if l.startswith("rospr ")] for w in workers]
  step = int(lines[0][0].split("preempted at step ")[1].split(":")[0]) if lines[0] else -1
  line = one_process.LINE.format(command="train-prompts", where=f"step {step}", saved="checkpoint saved")
  assert lines == [[line], [line]] and after < step < STEPS, said  # one step, agreed by both
  assert not any("Traceback" in w.err for w in workers), said
  assert (tmp_path / "preempted" / "checkpoints" / str(step)).is_dir(), said
  assert not (tmp_path / "preempted" / "export" / f"checkpoint_{STEPS}").exists(), said
  resumed = rospr.run(argv("preempted"))
  assert f"Resuming from checkpoint {step} in " in resumed[0].err, said
  ours, theirs = tmp_path / "preempted" / "export", tmp_path / "uninterrupted" / "export"
  assert one_process.files(ours) == one_process.files(theirs), said  # the same files, byte for byte
  assert one_process.manifests(ours) == one_process.manifests(theirs), said

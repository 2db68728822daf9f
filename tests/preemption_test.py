"""SIGTERM and SIGINT stop `train-prompts` and `evaluate` at a saved point (rospr_jax/preemption.py):
one line, exit code 75, and the rerun ends where an uninterrupted run ends, byte for byte. Here one
process: the command runs in this process and a real signal is sent to it from inside a step or a
record, chosen at random; two real processes: tests/multiprocess/sigterm_test.py."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import pytest

from rospr_jax import cli, preemption
from rospr_jax.prompt import trainer
from rospr_jax.eval import batching

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompt"))
from train_cli_test import _argv as _train_argv, _write_examples  # noqa: E402

STEPS = 12  # training steps; checkpoints every 5
LINE = "rospr {command}: preempted at {where}: {saved}; rerun the same command to resume."


@pytest.fixture
def guarded():
  """A SIGTERM or SIGINT that rospr does not take fails the test instead of ending pytest."""
  def fail(signum, _frame):
    raise AssertionError(f"{signal.Signals(signum).name} reached the test: rospr did not take it")
  earlier = {signum: signal.signal(signum, fail) for signum in (signal.SIGTERM, signal.SIGINT)}
  yield fail
  for signum, handler in earlier.items():
    signal.signal(signum, handler)


def _rospr(argv, capsys) -> tuple[int, str]:
  capsys.readouterr()
  code = cli.main([str(a) for a in argv])
  return code, capsys.readouterr().err


def _signalling(function, call: int, signum: int):
  """`function`, sending `signum` to this process when it is called for the `call`-th time, before its
  work."""
  calls = [0]

  def signalling(*args, **kwargs):
    calls[0] += 1
    if calls[0] == call:
      os.kill(os.getpid(), signum)
    return function(*args, **kwargs)
  return signalling


def _signal_in_step(monkeypatch, step: int, signum: int) -> None:
  """The `step`-th training step of the run sends `signum` to this process before it computes."""
  real = trainer.make_train_step
  monkeypatch.setattr(trainer, "make_train_step", lambda *a, **k: _signalling(real(*a, **k), step, signum))


def files(folder) -> dict[str, bytes]:
  """{relative path: bytes} of every file under `folder` but the manifests, whose `created` differs."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file() and p.name != "manifest.json"}


def manifests(folder) -> dict[str, dict]:
  """{relative path: content but `created` (and the digest over it)} of every manifest under `folder`."""
  return {str(p.relative_to(folder)): {k: v for k, v in json.loads(p.read_text()).items()
                                       if k not in ("created", "facts_sha256")}
          for p in sorted(folder.rglob("manifest.json"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The examples and an uninterrupted run of STEPS steps (its export)."""
  root = tmp_path_factory.mktemp("uninterrupted")
  _write_examples(root / "ex.jsonl")
  assert cli.main(["train-prompts", *_train_argv(root / "ex.jsonl", root / "run", STEPS, 5)]) == 0
  return root


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_train_prompts_stops_after_the_step_of_the_signal_and_resumes_to_the_same_prompts(
    uninterrupted, tmp_path, capsys, monkeypatch, guarded, signum):
  step = random.Random().randint(1, STEPS - 1)
  argv = ["train-prompts", *_train_argv(uninterrupted / "ex.jsonl", tmp_path / "run", STEPS, 5)]
  with monkeypatch.context() as patch:
    _signal_in_step(patch, step, signum)
    code, err = _rospr(argv, capsys)
  said = f"{signal.Signals(signum).name} in step {step}:\n{err[-3000:]}"
  assert code == preemption.EXIT_CODE == 75, said
  assert [line for line in err.splitlines() if line.startswith("rospr ")] == [
      LINE.format(command="train-prompts", where=f"step {step}", saved="checkpoint saved")], said
  assert "Traceback" not in err and err.endswith(" to resume.\n"), said
  assert (tmp_path / "run" / "checkpoints" / str(step)).is_dir(), said
  assert signal.getsignal(signum) is guarded  # the command gave the handlers back
  code, err = _rospr(argv, capsys)
  assert code == 0 and f"Resuming from checkpoint {step} in " in err, said
  ours, theirs = tmp_path / "run" / "export", uninterrupted / "run" / "export"
  assert files(ours) == files(theirs), said  # the same files (no export at the preempted step), bytes
  assert manifests(ours) == manifests(theirs), said


class _NoticeInTheGap:
  """JAX's preemption service and coordination client as one process sees them after a notice that came
  while no process had reported a step yet (the backbone loading): the sync point is 1."""

  def __init__(self):
    self.counts = []

  def reached_sync_point(self, count: int) -> bool:
    self.counts.append(count)
    return count == 1

  def key_value_try_get(self, key: str) -> str:
    if key != "RECEIVED_PREEMPTION_NOTICE":
      raise KeyError(key)  # JAX's: NOT_FOUND
    return "2026-12-07T23:27:03.676095066+00:00"


def test_a_notice_before_a_resumed_run_begins_stops_it_after_its_first_step(uninterrupted, tmp_path, capsys,
                                                                            monkeypatch):
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  argv = lambda steps: ["train-prompts", *_train_argv(uninterrupted / "ex.jsonl", tmp_path / "run", steps, 5)]
  assert _rospr(argv(5), capsys)[0] == 0
  service = _NoticeInTheGap()
  monkeypatch.setattr(jax_distributed.global_state, "client", service)
  monkeypatch.setattr(jax_distributed.global_state, "preemption_sync_manager", service)
  code, err = _rospr(argv(STEPS), capsys)
  assert code == 75 and err.endswith(
      LINE.format(command="train-prompts", where="step 6", saved="checkpoint saved") + "\n"), err[-3000:]
  assert service.counts[:2] == [5, 6]  # where it began, then its first step
  assert (tmp_path / "run" / "checkpoints" / "6").is_dir()


def _evaluate_argv(checkpoint, output_dir) -> list[str]:
  """T0 on the 12 held-out targets of the generated family: 12 records."""
  return ["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
          f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{output_dir}'", "--gin.METHODS=['T0']",
          "--gin.MAX_EXAMPLES=4", "--gin.BATCH_SIZE=4"]


def test_evaluate_finishes_the_record_in_progress_then_stops_and_resumes_to_the_same_results(
    tiny_model, tmp_path, capsys, monkeypatch, guarded):
  assert _rospr(_evaluate_argv(tiny_model.checkpoint, tmp_path / "uninterrupted"), capsys)[0] == 0
  record = random.Random().randint(1, 11)
  argv = _evaluate_argv(tiny_model.checkpoint, tmp_path / "eval")
  with monkeypatch.context() as patch:
    # One scoring per T0 record: the signal comes while record `record` is scored.
    patch.setattr(batching, "score_examples", _signalling(batching.score_examples, record, signal.SIGTERM))
    code, err = _rospr(argv, capsys)
  said = f"SIGTERM while scoring record {record}:\n{err[-3000:]}"
  assert code == 75, said
  assert [line for line in err.splitlines() if line.startswith("rospr ")] == [
      LINE.format(command="evaluate", where=f"record {record} of 12", saved="records saved")], said
  assert len(list((tmp_path / "eval" / "records").rglob("*.json"))) == record, said  # the one in progress too
  assert not (tmp_path / "eval" / "results.json").exists(), said
  code, err = _rospr(argv, capsys)
  assert code == 0, err[-3000:]
  results = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("eval", "uninterrupted")]
  assert results[0]["per_template"] == results[1]["per_template"] and len(results[0]["per_template"]) == 12
  assert results[0]["summary"] == results[1]["summary"]


def test_sigint_ends_another_command_with_one_line(tiny_model, capsys, monkeypatch):
  """A command that does not stop at a saved point ends at once on SIGINT: one line, exit code 130."""
  from rospr_jax.commands import score  # pylint: disable=g-import-not-at-top

  def interrupted(argv):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)  # the signal's KeyboardInterrupt ends this at once
    raise AssertionError("SIGINT did not interrupt the command")
  monkeypatch.setattr(score, "main", interrupted)
  earlier = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in `rospr`
  try:
    code, err = _rospr(["score", "--checkpoint", tiny_model.checkpoint, "--input", "x", "--choice", "y"], capsys)
  finally:
    signal.signal(signal.SIGINT, earlier)
  assert code == preemption.INTERRUPTED_EXIT_CODE == 130
  assert err == "rospr score: interrupted (SIGINT); rerun the same command to start again.\n"


@pytest.fixture
def jax_runtime(monkeypatch):
  """As if JAX's distributed runtime had started its preemption service in this process; the SIGTERM
  handler it installs is stood for by one that records the signals; every handler is given back."""
  monkeypatch.setattr(preemption, "_sync_manager", lambda: object())
  earlier = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
  received = []
  yield received, lambda: signal.signal(signal.SIGTERM, lambda signum, _: received.append(signum))
  for signum, handler in earlier.items():
    signal.signal(signum, handler)


def test_with_jax_runtime_sigint_and_an_early_signal_go_to_its_preemption_service(jax_runtime):
  received, runtime_starts = jax_runtime
  with preemption.listening(True):
    os.kill(os.getpid(), signal.SIGINT)  # before the runtime started: noted
    runtime_starts()  # jax.distributed.initialize: its notifier takes SIGTERM
    preemption.after_initialize(True)
    assert received == [signal.SIGTERM]  # the noted signal, passed on
    os.kill(os.getpid(), signal.SIGINT)
    assert received == [signal.SIGTERM, signal.SIGTERM]  # Ctrl-C: the same notice


def test_with_jax_runtime_sigterm_ends_another_command_as_without_it(jax_runtime):
  _, runtime_starts = jax_runtime
  runtime_starts()
  preemption.after_initialize(False)
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_listening_notes_the_signals_and_gives_the_handlers_back(guarded):
  with preemption.listening(True):
    assert not preemption.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.reached(2) and preemption.reached(3)
  assert not preemption.reached(4)
  assert signal.getsignal(signal.SIGTERM) is guarded and signal.getsignal(signal.SIGINT) is guarded

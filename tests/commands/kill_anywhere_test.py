"""Kill anywhere (issue 14): `rospr train-prompts`, `build-library` and `evaluate`, SIGKILLed at seeded
random moments of an uninterrupted run's span, never leave an artifact that loads half-written (the
export, the library, the records and the report are absent or whole after every kill), and rerun to
the end they equal the uninterrupted run: the same prompts bit for bit, the same library files, the
same records and summaries. The reruns remove what the kills left."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rospr_jax import cli
from rospr_jax.eval import report
from rospr_jax.library import store
from rospr_jax.prompt import export

from integrity_test import RTE, ROOT, _evaluate_argv, world  # noqa: F401  (world: a fixture)

sys.path.insert(0, os.path.join(ROOT, "tests", "prompt"))
from train_cli_test import _argv as _train_argv, _write_examples  # noqa: E402

KILLS = 5  # per command


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The subprocesses' environment: compiled steps cached on disk, so a rerun starts in seconds."""
  return dict(os.environ, PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


@pytest.fixture(scope="module")
def sources(world, tmp_path_factory):
  """A [2, 3, H] prompt table and its two sources' instances, as build-library flags."""
  _, checkpoint, config = world
  root = tmp_path_factory.mktemp("kill_sources")
  np.save(root / "prompts.npy", np.random.default_rng(0).normal(size=(2, 3, config.emb_dim)).astype(np.float32))
  for name, text in [("a", "the cat sat on the mat"), ("b", "print the list of numbers")]:
    (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{text} {i}"}) + "\n" for i in range(12)))
  return ["--prompts", str(root / "prompts.npy"), "--source", f"a={root / 'a.jsonl'}",
          "--source", f"b={root / 'b.jsonl'}", "--retriever", checkpoint,
          "--vocab", os.path.join(checkpoint, "spiece.model"), "--index", "exact", "--overwrite"]


def _command(*argv) -> list[str]:
  return [sys.executable, "-m", "rospr_jax.cli", *map(str, argv)]


def _uninterrupted(command, env, watch) -> tuple[float, float]:
  """Runs `command` to its end; returns (seconds until `watch` (a path, or a test) first held, seconds
  in all)."""
  appeared = watch if callable(watch) else lambda: os.path.exists(watch)
  start, first = time.monotonic(), None
  with open(os.devnull, "w") as sink:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.PIPE)
  while process.poll() is None:
    if first is None and appeared():
      first = time.monotonic() - start
    time.sleep(0.005)
  total = time.monotonic() - start
  assert process.returncode == 0, process.stderr.read().decode()[-3000:]
  return (total / 2 if first is None else first), total


def _killed_at(command, env, moment: float) -> bool:
  """Starts `command`, SIGKILLs it `moment` seconds later; returns whether it was still running."""
  process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    time.sleep(moment)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
  finally:
    process.kill()
    process.wait()
  return running


def _kill_anywhere(whole, killed, env, watch, check, seed, warm=None, left=lambda: 1.0,
                   reset=lambda: None) -> list[float]:
  """Runs the command `whole` uninterrupted and times it, then kills the command `killed` at seeded
  moments within that span (after `watch` first appeared) until KILLS kills hit a running process,
  calling `check()` after each, and finally reruns `killed` to its end. Returns the moments that hit.

  A kill that comes after the run ended (timings vary on a shared machine) does not count: `reset()`
  then removes what that run wrote, so the next one has the whole span of work to be killed in, and
  the later moments are drawn 0.8 times as late.

  `warm`, a shorter command, runs first to fill the compilation cache, so that `whole` is timed as
  fast as the killed runs go (they find the cache filled). `left()` is the share of the work a
  resuming command has left: its kill is drawn within that share of the span."""
  if warm is not None:
    assert subprocess.run(warm, cwd=ROOT, env=env, capture_output=True).returncode == 0
  first, total = _uninterrupted(whole, env, watch)
  rng, hits, misses, scale = random.Random(seed), [], 0, 1.0
  while len(hits) < KILLS and misses < 2 * KILLS:
    moment = scale * (first + rng.random() * (total - first) * left())
    if _killed_at(killed, env, moment):
      hits.append(moment)
      check()
    else:  # this run was faster than the timed one (a warmer cache, a quieter machine): draw earlier
      misses += 1
      scale *= 0.8
      check()
      reset()
  print(f"uninterrupted: {first:.1f} s until it wrote, {total:.1f} s in all; kills that hit: {hits}; "
        f"runs that ended first: {misses}")
  assert len(hits) == KILLS, f"{misses} kills within ({first:.1f} s, {total:.1f} s) came after the run ended"
  done = subprocess.run(killed, cwd=ROOT, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  return hits


def _leftovers(directory) -> list[str]:
  """What a killed run may leave: temporaries and unfinished checkpoints (the lock file stays, held by
  no one once its holder is gone)."""
  return [os.path.join(folder, name) for folder, subdirs, files in os.walk(directory) for name in subdirs + files
          if ".tmp-" in name or ".orbax-checkpoint-tmp" in name]


def _records(output_dir) -> list:
  return sorted((output_dir / "records").rglob("*.json")) if (output_dir / "records").exists() else []


@pytest.mark.slow
def test_train_prompts_killed_anywhere_resumes_to_the_same_prompts_bit_for_bit(tmp_path, env):
  examples = tmp_path / "ex.jsonl"
  _write_examples(examples, seed=3)
  argv = lambda model_dir, steps=16: _command("train-prompts", *_train_argv(examples, model_dir, steps, 2))
  whole, killed = tmp_path / "whole", tmp_path / "killed"

  def check():  # every export table present loads and matches its manifest; none is half there
    for step in export.export_steps(str(killed / "export")):
      loaded = export.load_prompts(str(killed / "export" / f"checkpoint_{step}"))
      for source in loaded.manifest["sources"]:
        prompt = export.read_source_prompt(str(killed / "export" / source["file"]))
        assert prompt.shape == loaded.prompts.shape[1:]

  def left():  # the share of the 16 steps a resumed run has still to train
    folder = killed / "checkpoints"
    saved = [int(s) for s in os.listdir(folder) if s.isdigit()] if folder.is_dir() else []
    return 1 - max(saved, default=0) / 16

  _kill_anywhere(argv(whole), argv(killed), env, whole / "checkpoints", check, seed=14,
                 warm=argv(tmp_path / "warm", steps=2), left=left,
                 reset=lambda: shutil.rmtree(killed, ignore_errors=True))
  steps = export.export_steps(str(whole / "export"))
  assert export.export_steps(str(killed / "export")) == steps and steps[-1] == 16
  for step in steps:  # every export, each bit for bit
    a = export.load_prompts(str(whole / "export" / f"checkpoint_{step}"))
    b = export.load_prompts(str(killed / "export" / f"checkpoint_{step}"))
    np.testing.assert_array_equal(b.prompts, a.prompts)
    assert [s["steps"] for s in b.manifest["sources"]] == [s["steps"] for s in a.manifest["sources"]]
  assert _leftovers(killed) == []


@pytest.mark.slow
def test_build_library_killed_anywhere_rebuilds_the_same_library_files(tmp_path, env, sources):
  whole, killed = tmp_path / "whole" / "lib", tmp_path / "killed" / "lib"

  def check():  # the library is absent or whole
    if killed.exists():
      store.Library.open(str(killed), verify=True)

  whole.parent.mkdir()
  killed.parent.mkdir()
  (tmp_path / "warm").mkdir()
  _kill_anywhere(_command("build-library", "--out", whole, *sources),
                 _command("build-library", "--out", killed, *sources), env,
                 lambda: bool(os.listdir(whole.parent)), check, seed=15,  # its temporary folder
                 warm=_command("build-library", "--out", tmp_path / "warm" / "lib", *sources),
                 reset=lambda: shutil.rmtree(killed, ignore_errors=True))
  files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
  assert files(killed) == files(whole)
  for name in files(whole):
    if name != store.MANIFEST:
      assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
  manifest = lambda root: json.loads((root / store.MANIFEST).read_text())
  same = lambda m: {**m, "extra": None, "facts_sha256": None}  # extra: the argv (in the facts' digest)
  assert same(manifest(killed)) == same(manifest(whole))
  assert _leftovers(killed.parent) == []


@pytest.mark.slow
def test_evaluate_killed_anywhere_reports_the_same_records_and_summaries(world, tmp_path, env, sources):
  root, checkpoint, _ = world
  library = tmp_path / "lib"
  assert cli.main(["build-library", "--out", str(library), *sources]) == 0
  argv = lambda out: _command(*_evaluate_argv(
      checkpoint, out, root / "data", f"--gin.LIBRARY_DIR='{library}'",
      f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'", "--gin.METHODS=['T0', 'RoSPr']", "--gin.NUM_QUERIES=4",
      "--gin.NUM_NEIGHBORS=3"))
  whole, killed = tmp_path / "whole", tmp_path / "killed"

  def check():  # every record and the report are absent or whole
    for path in _records(killed):
      assert 0 <= json.loads(path.read_text())["accuracy"] <= 1, path
    if (killed / "results.json").exists():
      summary = json.loads((killed / "results.json").read_text())["summary"]
      assert report.markdown_table(summary) in (killed / "results.md").read_text()
      assert (killed / "accuracy.png").stat().st_size > 0

  def left():  # scoring T0, then RoSPr, then the report: a resumed run skips what is recorded
    return 1 - 0.4 * len(_records(killed))

  _kill_anywhere(argv(whole), argv(killed), env, whole / "run.json", check, seed=16,
                 warm=argv(tmp_path / "warm"), left=left, reset=lambda: shutil.rmtree(killed, ignore_errors=True))
  records = lambda out: {str(p.relative_to(out)): json.loads(p.read_text()) for p in _records(out)}
  assert records(killed) == records(whole) and len(records(whole)) == 2
  results = lambda out: {k: v for k, v in json.loads((out / "results.json").read_text()).items()
                         if k in ("summary", "per_template", "retrieval_frequencies")}
  assert results(killed) == results(whole)
  assert (killed / "results.md").read_bytes() == (whole / "results.md").read_bytes()
  assert _leftovers(killed) == []

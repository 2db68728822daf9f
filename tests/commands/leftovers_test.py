"""No folder is lost and nothing half-written stays (issue 14): a killed or failed command's
temporaries are removed by the next run of it, by name; a full disk names the path and leaves the
previous report whole. Each case through the `rospr` command where a user meets it."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rospr_jax import cli, storage
from rospr_jax.model import t5x_checkpoint
from rospr_jax.model.checkpoints import load_checkpoint

from integrity_test import ROOT, _evaluate_argv, _save, world  # noqa: F401  (world: a fixture)

ENOSPC = 'raise OSError(errno.ENOSPC, "No space left on device")'


def _dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def _stale(name: str) -> str:
  """A temporary name of `name` as a killed writer of this host would have left it."""
  return storage.tmp_prefix(name).replace(f"-{os.getpid()}-", f"-{_dead_pid()}-") + "abcd1234"


def _rospr(argv, patch: str = "") -> subprocess.CompletedProcess:
  """`rospr ARGV` in a fresh process, with `patch` (Python) run first to inject a failure."""
  code = f"import errno, sys\n{patch}\nfrom rospr_jax import cli\nsys.exit(cli.main({list(map(str, argv))!r}))"
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))


def _no_traceback(done: subprocess.CompletedProcess) -> str:
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  return done.stderr.strip().splitlines()[-1]


def test_the_next_build_removes_a_killed_builds_folder_and_nothing_else(world, tmp_path):
  _, checkpoint, config = world
  np.save(tmp_path / "prompts.npy", np.ones((2, 3, config.emb_dim), np.float32))
  (tmp_path / "a.jsonl").write_text(json.dumps({"text": "hello there"}) + "\n")
  (tmp_path / "b.jsonl").write_text(json.dumps({"text": "print the list"}) + "\n")
  dead = tmp_path / _stale("lib")
  (dead / "shards").mkdir(parents=True)
  live = tmp_path / (storage.tmp_prefix("lib") + "live0000")  # this process is alive: kept
  live.mkdir()
  kept = [live, tmp_path / ".lib.tmp-legacy01", tmp_path / _stale("other")]  # not provably ours or stale
  for path in kept[1:]:
    path.mkdir()
  done = _rospr(["build-library", "--out", tmp_path / "lib", "--prompts", tmp_path / "prompts.npy",
                 "--source", f"a={tmp_path / 'a.jsonl'}", "--source", f"b={tmp_path / 'b.jsonl'}",
                 "--retriever", checkpoint, "--vocab", os.path.join(checkpoint, "spiece.model"), "--index", "exact"])
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"Removed 1 leftovers of interrupted runs (their writers are gone): {dead}" in done.stderr
  assert not dead.exists() and all(path.is_dir() for path in kept)
  assert (tmp_path / "lib" / "manifest.json").is_file()


def test_convert_on_a_full_disk_waits_for_its_writes_leaves_nothing_and_names_the_path(world, tmp_path):
  _, checkpoint, _ = world
  config, params = load_checkpoint(checkpoint)
  started = []
  write = t5x_checkpoint._write_zarr

  def second_write_fails(directory, array):
    if started:
      raise OSError(errno.ENOSPC, "No space left on device")
    started.append(write(directory, array))
    return started[-1]

  dest = tmp_path / "t5x"
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(t5x_checkpoint, "_write_zarr", second_write_fails)
    with pytest.raises(OSError, match=f"No space left on device: '{dest / 'checkpoint_0'}'"):
      t5x_checkpoint.save_t5x(dest, config, params)
  assert started and started[0].done()  # waited for before the folder was removed
  assert os.listdir(dest) == []

  stale = tmp_path / _stale("t5x")  # a killed conversion's folder, beside its destination
  (stale / "checkpoint_0" / "target.encoder.layers_0.mlp.wo.kernel").mkdir(parents=True)
  patch = f"from rospr_jax.model import t5x_checkpoint\ndef full(*a):\n  {ENOSPC}\nt5x_checkpoint._write_zarr = full"
  done = _rospr(["convert", "--from", checkpoint, "--to", dest, "--format", "t5x"], patch)
  assert done.returncode == 2
  assert _no_traceback(done) == (f"rospr convert: [Errno 28] No space left on device: "
                                 f"'{dest / 'checkpoint_0'}'")
  assert f"Removed 1 leftovers of interrupted runs (their writers are gone): {stale}" in done.stderr
  assert os.listdir(dest) == []


def test_an_evaluation_out_of_space_names_the_file_and_keeps_the_old_report_whole(world, tmp_path):
  root, checkpoint, _ = world
  out = tmp_path / "eval"
  assert cli.main(_evaluate_argv(checkpoint, out, root / "data")) == 0
  report = {name: (out / name).read_bytes() for name in ("results.json", "results.md", "accuracy.png")}
  stale = out / "records" / "super_glue_rte_GPT_3_style" / _stale("RoSPr.json")
  stale.write_text('{"accura')
  patch = f"import matplotlib.figure\ndef full(*a, **k):\n  {ENOSPC}\nmatplotlib.figure.Figure.savefig = full"
  done = _rospr(_evaluate_argv(checkpoint, out, root / "data"), patch)
  assert done.returncode == 2
  last = _no_traceback(done)
  assert last == f"rospr evaluate: error: [Errno 28] No space left on device: '{out}/accuracy.png'", last
  assert f"Removed 1 leftovers of interrupted runs (their writers are gone): {stale}" in done.stderr
  assert {name: (out / name).read_bytes() for name in report} == report  # the old report, whole
  assert not [name for name in os.listdir(out) if ".tmp-" in name]

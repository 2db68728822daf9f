"""Artifacts (issue 14): a failed write names its path; a unit of files is replaced together, a move
killed half-way is rolled forward; leftovers are removed only when provably ours and stale."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from rospr_jax import artifacts


def _dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "run.json"
  with pytest.raises(OSError, match=f"No space left on device: '{path}'") as raised:
    with artifacts.atomic_file(path) as f:
      f.write(b"{")
      raise OSError(errno.ENOSPC, "No space left on device")
  assert raised.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match=f"No space left on device: '{path}'"):
    artifacts.write_json(path, {"a": 1})
  with pytest.raises(OSError, match=f"No space left on device: '{tmp_path / 'lib'}'"):
    with artifacts.atomic_directory(tmp_path / "lib") as tmp:
      os.fsync(0)
  assert os.listdir(tmp_path) == []
  other = FileNotFoundError(errno.ENOENT, "No such file or directory", "/elsewhere")
  assert artifacts.with_path(other, path) is other  # an error that names its file keeps it


def _unit(directory, files):
  with artifacts.atomic_files(directory, "results", ["results.json", "results.md", "retrieval.png"]) as tmp:
    for name, text in files.items():
      (tmp / name).write_text(text)


def test_a_unit_of_files_is_replaced_together_or_not_at_all(tmp_path, monkeypatch):
  _unit(tmp_path, {"results.json": "1", "results.md": "1", "retrieval.png": "1"})
  with pytest.raises(OSError, match=f"No space left on device: '{tmp_path / 'results'}'"):
    with artifacts.atomic_files(tmp_path, "results", ["results.json", "results.md"]) as tmp:
      (tmp / "results.json").write_text("2")
      raise OSError(errno.ENOSPC, "No space left on device")
  assert sorted(os.listdir(tmp_path)) == ["results.json", "results.md", "retrieval.png"]
  assert {p.read_text() for p in tmp_path.iterdir()} == {"1"}

  moved = []
  move = artifacts._move_files

  def killed_after_the_first_file(directory, record):
    name = record["files"][0]
    os.replace(directory / record["tmp"] / name, directory / name)
    moved.append(name)
    raise KeyboardInterrupt  # stands for SIGKILL between two renames

  monkeypatch.setattr(artifacts, "_move_files", killed_after_the_first_file)
  with pytest.raises(KeyboardInterrupt):
    _unit(tmp_path, {"results.json": "2", "results.md": "2"})  # no retrieval.png this time
  monkeypatch.setattr(artifacts, "_move_files", move)
  assert moved == ["results.json"] and (tmp_path / ".results.swap").is_file()
  artifacts.recover_files(tmp_path, "results")  # what the next run (or a reader) does first
  assert sorted(os.listdir(tmp_path)) == ["results.json", "results.md"]
  assert {p.read_text() for p in tmp_path.iterdir()} == {"2"}
  with pytest.raises(ValueError, match=r"\['other.txt'\] are not files of the results unit"):
    _unit(tmp_path, {"other.txt": "x"})


def test_leftovers_are_removed_only_when_ours_stale_and_not_needed_by_a_swap(tmp_path):
  dead = _dead_pid()
  stale = lambda name: artifacts.tmp_prefix(name).replace(f"-{os.getpid()}-", f"-{dead}-") + "abcd1234"
  (tmp_path / stale("lib")).mkdir()
  (tmp_path / "records").mkdir()
  (tmp_path / "records" / stale("T0.json")).write_text("{")
  needed = tmp_path / stale("results")
  needed.mkdir()
  artifacts.write_json(tmp_path / ".results.swap", {"tmp": needed.name, "files": [], "remove": [],
                                                   "pid": dead, "host": "h"})
  mine = tmp_path / (artifacts.tmp_prefix("lib") + "mine0000")
  mine.mkdir()
  foreign = tmp_path / ".lib.tmp-0000ffff-1-abcd1234"  # another host's: cannot be asked
  foreign.mkdir()
  assert artifacts.remove_leftovers(tmp_path, names=["other"]) == []
  assert artifacts.remove_leftovers(tmp_path) == [str(tmp_path / stale("lib"))]
  assert artifacts.remove_leftovers(tmp_path, recursive=True) == [str(tmp_path / "records" / stale("T0.json"))]
  assert needed.is_dir() and mine.is_dir() and foreign.is_dir()

"""Artifacts: whole or nothing, modes under the user's umask, and directories swapped in one rename."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from rospr_jax import artifacts


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
  old = os.umask(request.param)
  yield request.param
  os.umask(old)


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_get_the_modes_open_and_mkdir_would_give(tmp_path, umask):
  reference_file, reference_dir = tmp_path / "plain.txt", tmp_path / "plain"
  reference_file.write_text("x")
  reference_dir.mkdir()
  artifacts.write_text(tmp_path / "a.txt", "hello")
  artifacts.save_npy(tmp_path / "a.npy", np.arange(3))
  with artifacts.atomic_directory(tmp_path / "run") as tmp:
    artifacts.write_json(tmp / "manifest.json", {"ok": 1})
  for path in (tmp_path / "a.txt", tmp_path / "a.npy", tmp_path / "run" / "manifest.json"):
    assert _mode(path) == _mode(reference_file) == 0o666 & ~umask, path
  assert _mode(tmp_path / "run") == _mode(reference_dir) == 0o777 & ~umask
  assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "results.json"
  artifacts.write_json(path, {"accuracy": 0.5})
  with pytest.raises(ValueError):
    artifacts.write_json(path, {"accuracy": float("nan")})  # not valid JSON: refused, not written
  assert json.loads(path.read_text()) == {"accuracy": 0.5}
  assert os.listdir(tmp_path) == ["results.json"]


def test_directories_replace_only_when_asked_and_never_half_way(tmp_path):
  final = tmp_path / "lib"
  with artifacts.atomic_directory(final) as tmp:
    (tmp / "v").write_text("1")
  with pytest.raises(FileExistsError, match="already exists"):
    with artifacts.atomic_directory(final):
      pass
  with pytest.raises(RuntimeError):
    with artifacts.atomic_directory(final, replace=True) as tmp:
      (tmp / "v").write_text("2")
      raise RuntimeError("killed while writing")
  assert (final / "v").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["lib"]
  with artifacts.atomic_directory(final, replace=True) as tmp:
    (tmp / "v").write_text("2")
  assert (final / "v").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["lib"]


def test_sha256_file_is_hashlibs(tmp_path):
  import hashlib
  data = os.urandom(3 << 20)
  (tmp_path / "blob").write_bytes(data)
  assert artifacts.sha256_file(tmp_path / "blob", chunk=1 << 20) == hashlib.sha256(data).hexdigest()

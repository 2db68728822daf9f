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


def _folder(path, value):
  path.mkdir()
  (path / "v").write_text(value)
  return path


def _replace_failing_from_call(monkeypatch, n):
  """os.replace renames the first n - 1 folders and then raises (a kill: nothing after runs, files
  included) until the returned `revive()` is called."""
  real, calls, state = os.replace, [], {"dead": False}

  def replace(a, b):
    if state["dead"]:
      raise OSError("killed")
    if not os.path.isdir(a):
      return real(a, b)  # the swap marker, written atomically
    calls.append((os.fspath(a), os.fspath(b)))
    if len(calls) >= n:
      state["dead"] = True
      raise OSError("killed")
    return real(a, b)

  monkeypatch.setattr(os, "replace", replace)
  return calls, lambda: monkeypatch.setattr(os, "replace", real)


def _no_exchange(monkeypatch):
  import errno

  def refuse(a, b):
    raise OSError(errno.EINVAL, "no exchange on this file system")

  monkeypatch.setattr(artifacts, "_rename_exchange", refuse)


def test_replacing_a_folder_exchanges_it_in_one_step(tmp_path, monkeypatch):
  final = _folder(tmp_path / "lib", "1")
  exchanged, real_exchange = [], artifacts._rename_exchange

  def spy(a, b):
    exchanged.append((os.fspath(a), os.fspath(b)))
    real_exchange(a, b)

  monkeypatch.setattr(artifacts, "_rename_exchange", spy)
  calls, _ = _replace_failing_from_call(monkeypatch, 1)  # any os.replace of the folders would fail
  with artifacts.atomic_directory(final, replace=True) as tmp:
    (tmp / "v").write_text("2")
    (tmp / "new").write_text("x")
  assert len(exchanged) == 1 and exchanged[0][1] == os.fspath(final) and calls == []
  assert sorted(os.listdir(final)) == ["new", "v"] and (final / "v").read_text() == "2"
  assert os.listdir(tmp_path) == ["lib"]


def test_a_swap_killed_between_the_renames_is_finished_by_recover_directory(tmp_path, monkeypatch,
                                                                            caplog):
  _no_exchange(monkeypatch)
  final = _folder(tmp_path / "lib", "1")
  new = _folder(tmp_path / ".lib.tmp-new", "2")
  calls, revive = _replace_failing_from_call(monkeypatch, 2)  # final -> old done, then killed
  with pytest.raises(OSError, match="killed"):
    artifacts.replace_directory(new, final, replace=True)
  assert calls[0][0] == os.fspath(final) and calls[1] == (os.fspath(new), os.fspath(final))
  assert not final.exists() and (tmp_path / ".lib.swap").is_file()
  revive()
  with caplog.at_level("WARNING"):
    artifacts.recover_directory(final)
  assert "finished an interrupted swap" in caplog.text
  assert (final / "v").read_text() == "2" and os.listdir(tmp_path) == ["lib"]
  artifacts.recover_directory(final)  # nothing left to do
  assert (final / "v").read_text() == "2" and os.listdir(tmp_path) == ["lib"]


def test_the_next_writer_finishes_a_killed_swap_before_its_own(tmp_path, monkeypatch):
  _no_exchange(monkeypatch)
  final = _folder(tmp_path / "lib", "1")
  new = _folder(tmp_path / ".lib.tmp-new", "2")
  _, revive = _replace_failing_from_call(monkeypatch, 2)
  with pytest.raises(OSError, match="killed"):
    artifacts.replace_directory(new, final, replace=True)
  revive()
  with pytest.raises(FileExistsError, match="already exists"):  # the recovered "2" is not taken over
    with artifacts.atomic_directory(final):
      pass
  assert (final / "v").read_text() == "2" and os.listdir(tmp_path) == ["lib"]
  with artifacts.atomic_directory(final, replace=True) as tmp:
    (tmp / "v").write_text("3")
  assert (final / "v").read_text() == "3" and os.listdir(tmp_path) == ["lib"]


def test_a_killed_swap_whose_new_folder_is_gone_gets_the_old_folder_back(tmp_path, monkeypatch):
  _no_exchange(monkeypatch)
  final = _folder(tmp_path / "lib", "1")
  _, revive = _replace_failing_from_call(monkeypatch, 2)
  with pytest.raises(OSError, match="killed"):  # atomic_directory removes its folder on the error
    with artifacts.atomic_directory(final, replace=True) as tmp:
      (tmp / "v").write_text("2")
  revive()
  assert not final.exists()
  artifacts.recover_directory(final)
  assert (final / "v").read_text() == "1" and os.listdir(tmp_path) == ["lib"]


def test_a_failed_second_rename_puts_the_old_folder_back_at_once(tmp_path, monkeypatch):
  _no_exchange(monkeypatch)
  final = _folder(tmp_path / "lib", "1")
  real, calls = os.replace, []

  def replace(a, b):  # only the new folder's rename fails; moving the old one back works
    if os.path.isdir(a):
      calls.append(os.fspath(a))
    if os.path.isdir(a) and len(calls) == 2:
      raise OSError("no space")
    return real(a, b)

  monkeypatch.setattr(os, "replace", replace)
  with pytest.raises(OSError, match="no space"):
    with artifacts.atomic_directory(final, replace=True) as tmp:
      (tmp / "v").write_text("2")
  assert (final / "v").read_text() == "1" and os.listdir(tmp_path) == ["lib"]


def test_a_reader_leaves_a_live_writers_marker_alone(tmp_path):
  import socket
  import subprocess
  import sys
  final = _folder(tmp_path / "lib", "1")
  writer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
  try:
    artifacts.write_json(tmp_path / ".lib.swap", {"final": "lib", "old": ".lib.old-x",
                                                  "new": ".lib.tmp-x", "pid": writer.pid,
                                                  "host": socket.gethostname()})
    os.rename(final, tmp_path / ".lib.old-x")
    artifacts.recover_directory(final)  # the writer may be between its renames: not touched
    assert not final.exists() and (tmp_path / ".lib.swap").exists()
  finally:
    writer.communicate(b"")
  artifacts.recover_directory(final)  # its writer is gone: undone
  assert (final / "v").read_text() == "1" and os.listdir(tmp_path) == ["lib"]


def test_a_run_lock_refuses_a_second_run_and_takes_over_a_stale_one(tmp_path, caplog):
  import socket
  import subprocess
  import sys
  with artifacts.run_lock(tmp_path, "evaluate"):
    holder = json.loads((tmp_path / artifacts.LOCK_FILE).read_text())
    assert holder["command"] == "evaluate" and holder["pid"] == os.getpid()
    child = subprocess.run([sys.executable, "-c", "from rospr_jax import artifacts; "
                            f"artifacts.run_lock({str(tmp_path)!r}, 'train-prompts').__enter__()"],
                           capture_output=True, text=True)
    assert child.returncode != 0
    assert (f"{tmp_path} is in use by evaluate (pid {os.getpid()} on {socket.gethostname()}, since"
            in child.stderr)
  assert not (tmp_path / artifacts.LOCK_FILE).exists()  # released
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  (tmp_path / artifacts.LOCK_FILE).write_text(json.dumps(
      {"command": "evaluate", "host": socket.gethostname(), "pid": int(gone.stdout), "started": "then"}))
  with artifacts.run_lock(tmp_path, "evaluate"):
    assert json.loads((tmp_path / artifacts.LOCK_FILE).read_text())["pid"] == os.getpid()
  assert "Taking over the stale lock" in caplog.text

"""The storage rule: files whole, folder artifacts committed by their manifest (locally by a rename, on
an object store by the manifest written last), one lock per run folder, leftovers of killed writers
only, outputs that do not persist refused."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

from rospr_jax import storage


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
  old = os.umask(request.param)
  yield request.param
  os.umask(old)


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def _dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_files_and_folders_get_the_modes_open_and_mkdir_would_give(tmp_path, umask):
  reference_file, reference_dir = tmp_path / "plain.txt", tmp_path / "plain"
  reference_file.write_text("x")
  reference_dir.mkdir()
  storage.write_text(tmp_path / "a.txt", "hello")
  storage.save_npy(tmp_path / "a.npy", np.arange(3))
  with storage.output_folder(tmp_path / "run", "Run", kind="test_run") as tmp:
    storage.write_json(os.path.join(tmp, "v.json"), {"ok": 1})
  for path in (tmp_path / "a.txt", tmp_path / "a.npy", tmp_path / "run" / "v.json"):
    assert _mode(path) == _mode(reference_file) == 0o666 & ~umask, path
  assert _mode(tmp_path / "run") == _mode(reference_dir) == 0o777 & ~umask
  assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "results.json"
  storage.write_json(path, {"accuracy": 0.5})
  with pytest.raises(ValueError):
    storage.write_json(path, {"accuracy": float("nan")})  # not valid JSON: refused, not written
  assert json.loads(path.read_text()) == {"accuracy": 0.5}
  assert os.listdir(tmp_path) == ["results.json"]


def test_a_folder_is_committed_by_its_manifest_and_replaced_only_when_asked(tmp_path):
  final = tmp_path / "lib"
  with storage.output_folder(final, "Library", kind="test_library") as tmp:
    open(os.path.join(tmp, "v"), "w").write("1")
  manifest = storage.ManifestKind("Library", "test_library").read(final)  # written for a writer that wrote none
  assert manifest == storage.Manifest("test_library", {}, {"v": hashlib.sha256(b"1").hexdigest()})
  facts = {"files": {"v": hashlib.sha256(b"1").hexdigest()}, "kind": "test_library"}  # and their digest
  digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
  assert json.loads((final / "manifest.json").read_text()) == {**facts, "facts_sha256": digest}
  with pytest.raises(FileExistsError, match=f"Library {final} already holds a test_library; pass --overwrite"):
    with storage.output_folder(final, "Library", kind="test_library"):
      pass
  with pytest.raises(RuntimeError):
    with storage.output_folder(final, "Library", kind="test_library", overwrite=True) as tmp:
      open(os.path.join(tmp, "v"), "w").write("2")
      raise RuntimeError("killed while writing")
  assert (final / "v").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["lib"]
  with storage.output_folder(final, "Library", kind="test_library", overwrite=True) as tmp:
    open(os.path.join(tmp, "v"), "w").write("2")
  assert (final / "v").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["lib"]


def test_a_folder_without_its_manifest_is_refused_as_never_completed(tmp_path):
  """What a replace killed after removing the old manifest leaves: readers refuse it by name."""
  (tmp_path / "lib").mkdir()
  (tmp_path / "lib" / "v").write_text("1")
  with pytest.raises(FileNotFoundError, match=f"Library {tmp_path / 'lib'} has no manifest.json: it was "
                                              "never completed"):
    storage.ManifestKind("Library").read(tmp_path / "lib")


def test_sha256_file_is_hashlibs(tmp_path):
  data = os.urandom(3 << 20)
  (tmp_path / "blob").write_bytes(data)
  assert storage.sha256_file(tmp_path / "blob", chunk=1 << 20) == hashlib.sha256(data).hexdigest()


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "run.json"
  with pytest.raises(OSError, match=f"No space left on device: '{path}'") as raised:
    with storage.atomic_file(path) as f:
      f.write(b"{")
      raise OSError(errno.ENOSPC, "No space left on device")
  assert raised.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match=f"No space left on device: '{path}'"):
    storage.write_json(path, {"a": 1})
  with pytest.raises(OSError, match=f"No space left on device: '{tmp_path / 'lib' / 'x'}'"):
    with storage.output_folder(tmp_path / "lib", "Library", kind="test_library") as tmp:
      storage.write_text(os.path.join(tmp, "x"), "x")
  assert os.listdir(tmp_path) == []
  other = FileNotFoundError(errno.ENOENT, "No such file or directory", "/elsewhere")
  assert storage.with_path(other, path) is other  # an error that names its file keeps it


def test_a_run_lock_refuses_a_second_run_and_is_released_when_its_holder_dies(tmp_path):
  with storage.run_lock(tmp_path, "evaluate", "OUTPUT_DIR"):
    child = subprocess.run([sys.executable, "-c", "from rospr_jax import storage; "
                            f"storage.run_lock({str(tmp_path)!r}, 'evaluate', 'OUTPUT_DIR').__enter__()"],
                           capture_output=True, text=True)
    assert child.returncode != 0
    assert (f"{tmp_path} is in use by evaluate (pid {os.getpid()} on {socket.gethostname()}, since"
            in child.stderr)
  # A holder killed with -9 never releases by hand: the kernel drops its lock, the next run takes it.
  killed = subprocess.run([sys.executable, "-c", "import os, signal; from rospr_jax import storage; "
                           f"storage.run_lock({str(tmp_path)!r}, 'evaluate', 'OUTPUT_DIR').__enter__(); "
                           "os.kill(os.getpid(), signal.SIGKILL)"], capture_output=True, text=True)
  assert killed.returncode == -9
  with storage.run_lock(tmp_path, "evaluate", "OUTPUT_DIR"):
    assert storage.read_json(tmp_path / (storage.LOCK_FILE + ".json"))["pid"] == os.getpid()


def test_leftovers_are_removed_only_when_ours_and_stale(tmp_path):
  dead = _dead_pid()
  stale = lambda name: storage.tmp_prefix(name).replace(f"-{os.getpid()}-", f"-{dead}-") + "abcd1234"
  (tmp_path / stale("lib")).mkdir()
  (tmp_path / "records").mkdir()
  (tmp_path / "records" / stale("T0.json")).write_text("{")
  mine = tmp_path / (storage.tmp_prefix("lib") + "mine0000")
  mine.mkdir()
  foreign = tmp_path / ".lib.tmp-0000ffff-1-abcd1234"  # another host's: cannot be asked
  foreign.mkdir()
  assert storage.remove_leftovers(tmp_path, names=["other"]) == []
  assert storage.remove_leftovers(tmp_path) == [str(tmp_path / stale("lib"))]
  assert storage.remove_leftovers(tmp_path, recursive=True) == [str(tmp_path / "records" / stale("T0.json"))]
  assert mine.is_dir() and foreign.is_dir()


@pytest.mark.parametrize("url", ["memory://bucket/lib", "memory:///x"])
def test_outputs_that_do_not_outlive_the_process_are_refused(tmp_path, url):
  with pytest.raises(ValueError, match=f"--out {url}: memory:// objects vanish when the process ends"):
    with storage.output_folder(url, "--out", kind="test_library"):
      pass


def test_an_unknown_scheme_names_the_setting_and_file_urls_are_local_paths(tmp_path):
  with pytest.raises(ValueError, match=r"LIBRARY_DIR zz://b/lib: zz:// is not served here"):
    storage.as_path("zz://b/lib", "LIBRARY_DIR")
  storage.write_text(f"file://{tmp_path}/a.txt", "x")
  assert (tmp_path / "a.txt").read_text() == "x" and not storage.is_url(f"file://{tmp_path}")
  assert storage.absolute(f"file://{tmp_path}/a") == f"{tmp_path}/a" and storage.absolute("gs://b/x") == "gs://b/x"


def test_on_an_object_store_the_files_go_first_and_the_manifest_last(object_store, monkeypatch):
  order = []
  cls = type(storage.as_path("gs://bucket/x"))
  real = cls.open

  def recording_open(self, mode="r", *args, **kwargs):
    if "w" in mode:
      order.append(self.name)
    return real(self, mode, *args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(cls, "open", recording_open)
    with storage.output_folder("gs://bucket/lib", "Library", kind="test_library") as tmp:
      os.makedirs(os.path.join(tmp, "shards"))
      for name in ("b.npy", "shards/a.npy"):
        storage.save_npy(os.path.join(tmp, name), np.arange(3))
  assert order == ["b.npy", "a.npy", "manifest.json"]
  assert sorted(storage.ManifestKind("Library").read("gs://bucket/lib").files) == ["b.npy", "shards/a.npy"]
  assert storage.load_npy("gs://bucket/lib/shards/a.npy").tolist() == [0, 1, 2]
  # A replace stopped after the old manifest went (no rename exists there) leaves a folder readers refuse
  # and the next writer of its kind replaces.
  with monkeypatch.context() as patch:
    def interrupted_upload(self, mode="r", *args, **kwargs):
      if "w" in mode and os.fspath(self).startswith("gs://") and self.name != storage.MANIFEST:
        raise KeyboardInterrupt  # after the old manifest became the mark of an incomplete folder
      return real(self, mode, *args, **kwargs)

    patch.setattr(cls, "open", interrupted_upload)
    with pytest.raises(KeyboardInterrupt):
      with storage.output_folder("gs://bucket/lib", "Library", kind="test_library", overwrite=True) as tmp:
        open(os.path.join(tmp, "c.txt"), "w").write("c")
  with pytest.raises(FileNotFoundError, match=r"^Library (directory )?gs://bucket/lib (does not exist|has no manifest.json|was never completed)"):
    storage.ManifestKind("Library").read("gs://bucket/lib")
  with storage.output_folder("gs://bucket/lib", "Library", kind="test_library", overwrite=True) as tmp:  # the next writer
    open(os.path.join(tmp, "c.txt"), "w").write("c")
  assert list(storage.ManifestKind("Library").read("gs://bucket/lib").files) == ["c.txt"]
  storage.write_json("gs://bucket/run/records/T0.json", {"accuracy": 1.0})
  assert storage.read_json("gs://bucket/run/records/T0.json") == {"accuracy": 1.0}
  assert [n for n, _ in storage.text_lines("gs://bucket/run/records/T0.json")] == [1]


def test_a_destination_is_written_only_when_new_empty_or_of_the_writers_kind(tmp_path):
  """The destination rule (issue 33): an artifact of the writer's kind is replaced only with
  `overwrite`; a user's folder, a folder holding an input, a file, a link are refused, whatever the flag."""
  final = tmp_path / "sel"
  final.mkdir()  # empty: taken
  with storage.output_folder(final, "--out", kind="rospr_selection") as tmp:
    storage.write_text(os.path.join(tmp, "v"), "1")
  with pytest.raises(FileExistsError, match=f"--out {final} already holds a rospr_selection; pass --overwrite"):
    storage.check_destination(final, "--out", kind="rospr_selection")
  with pytest.raises(FileExistsError, match=r"holds files that are not a rospr_library \(manifest.json, v\)"):
    storage.check_destination(final, "--out", kind="rospr_library", overwrite=True)
  with storage.output_folder(final, "--out", kind="rospr_selection", overwrite=True) as tmp:
    storage.write_text(os.path.join(tmp, "v"), "2")
  assert (final / "v").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["sel"]  # nothing set aside stays
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "q.jsonl").write_text("{}")
  with pytest.raises(ValueError, match=f"--out {tmp_path} is or holds the input {tmp_path / 'in' / 'q.jsonl'}"):
    storage.check_destination(tmp_path, "--out", kind="rospr_selection", inputs=[tmp_path / "in" / "q.jsonl"])
  with pytest.raises(FileExistsError, match=f"--out {tmp_path / 'in' / 'q.jsonl'} is a file; give a new folder"):
    storage.check_destination(tmp_path / "in" / "q.jsonl", "--out", kind="rospr_selection", overwrite=True)
  (tmp_path / "link").symlink_to(final)
  with pytest.raises(ValueError, match=f"--out {tmp_path / 'link'} is a symbolic link \\(to {final}\\)"):
    storage.check_destination(tmp_path / "link", "--out", kind="rospr_selection", overwrite=True)


def test_a_run_folder_is_claimed_by_its_kind_and_resumed_only_by_it(tmp_path):
  run = tmp_path / "run"
  with storage.run_lock(run, "evaluate", "OUTPUT_DIR"):
    pass
  assert storage.read_json(run / storage.RUN_MARKER) == {"kind": "rospr_evaluate_run"}
  with storage.run_lock(run, "evaluate", "OUTPUT_DIR"):  # a rerun resumes it
    pass
  with pytest.raises(FileExistsError, match=f"MODEL_DIR {run} holds files that are not a rospr_train_prompts_run "
                                            r"\(.*; it is a rospr_evaluate_run\)"):
    with storage.run_lock(run, "train-prompts", "MODEL_DIR"):
      pass
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "thesis.tex").write_text("x")
  with pytest.raises(FileExistsError, match=r"holds files that are not a rospr_evaluate_run \(thesis.tex\)"):
    with storage.run_lock(tmp_path / "mine", "evaluate", "OUTPUT_DIR"):
      pass
  assert sorted(os.listdir(tmp_path / "mine")) == ["thesis.tex"]  # not even a lock file


def test_a_commit_landing_between_our_two_renames_is_moved_aside_and_the_last_rename_wins(tmp_path, monkeypatch):
  from rospr_jax.storage import folders  # pylint: disable=g-import-not-at-top
  final, theirs, ours = tmp_path / "store", tmp_path / "theirs", tmp_path / "ours"
  for folder in (theirs, ours):
    folder.mkdir()
    (folder / "x").write_text(folder.name)
  real, landed = os.replace, []

  def replace(src, dst):
    if os.fspath(src) == os.fspath(ours) and not landed:  # another process's commit lands first
      landed.append(real(theirs, final))
    return real(src, dst)
  monkeypatch.setattr(folders.os, "replace", replace)
  folders._replace_local(str(ours), final)  # pylint: disable=protected-access
  assert landed and (final / "x").read_text() == "ours"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # theirs moved aside, then removed

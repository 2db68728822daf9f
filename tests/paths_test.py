"""Folders and files at URLs (fsspec's memory:// object store here: no rename, no folders): published
with a commit marker, read only when committed, run folders mirrored and resumed; paths that do not
take URLs yet are refused where commands start, before any work (see rospr_jax/paths.py)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib

import pytest

from rospr_jax import multihost, paths


@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://b/x", "hf://bigscience/T0_3B", "GS://B/c"])
def test_urls_are_refused_with_the_mounted_path_to_use(url):
  with pytest.raises(ValueError, match=r"model_dir '.*' is a URL; .*gcsfuse") as raised:
    paths.require_local(url, "model_dir")
  assert "/gcs/" + url.split("://", 1)[1] in str(raised.value)


@pytest.mark.parametrize("path", ["/gcs/bucket/run", "runs/a", "./gs:/odd", "C:/x", None])
def test_local_paths_pass_unchanged(path):
  assert paths.require_local(path, "model_dir") == path


def test_command_arguments_are_checked_including_name_equals_file_values():
  ok = argparse.Namespace(out="/gcs/b/lib", source=["copa=/data/copa.jsonl"], n=100, target="rte:GPT-3 style")
  paths.require_local_args(ok)
  with pytest.raises(ValueError, match="--source 'gs://b/copa.jsonl' is a URL"):
    paths.require_local_args(argparse.Namespace(out="/x", source=["copa=gs://b/copa.jsonl"]))
  with pytest.raises(ValueError, match="--shard-dir 'gs://b' is a URL"):
    paths.require_local_args(argparse.Namespace(shard_dir="gs://b"))


def test_commands_refuse_urls_before_any_work(tmp_path, capsys):
  """A URL whose scheme has no driver here is named with the setting that gave it, before any work."""
  from rospr_jax.model import checkpoints
  with pytest.raises(ValueError, match="checkpoint nosuch://b/T0_3B: no file system for nosuch://"):
    checkpoints.load_checkpoint("nosuch://b/T0_3B")
  from rospr_jax.commands import demo as pipeline
  with pytest.raises(ValueError, match="--output_dir nosuch://b/demo: no file system for nosuch://"):
    pipeline.run("nosuch://b/demo")
  assert not (tmp_path / "nosuch:").exists() and not os.path.exists("nosuch:")


def test_on_other_hosts_library_and_retrieval_commands_compute_but_write_nothing(tmp_path, monkeypatch,
                                                                                  capsys):
  """Every process of a multi-process run embeds its share (tests/multiprocess run them for real);
  process 0 alone writes."""
  import json
  import jax
  import numpy as np
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  from rospr_jax.data import vocabulary
  vocab = vocabulary.offline_vocabulary_path()
  (tmp_path / "all.jsonl").write_text("".join(json.dumps({"source": s, "text": f"{s} text {i}"}) + "\n"
                                              for s in ("a", "b") for i in range(3)))
  (tmp_path / "names.txt").write_text("a\nb\n")
  np.save(tmp_path / "prompts.npy", np.zeros((2, 3, 64), np.float32))
  (tmp_path / "q.jsonl").write_text(json.dumps({"text": "a text"}) + "\n")
  flags = ["--random-retriever", "tiny", "--vocab", vocab, "--max-length", "16"]
  library = ["--prompts", str(tmp_path / "prompts.npy"), "--instances", str(tmp_path / "all.jsonl"),
             "--source-names", str(tmp_path / "names.txt"), "--n", "3", "--index", "exact", *flags]
  assert build.main(["--out", str(tmp_path / "lib"), *library]) == 0  # process 0 writes
  before = sorted(tmp_path.iterdir())
  assert multihost.is_writer()
  monkeypatch.setattr(jax, "process_index", lambda: 2)
  assert not multihost.is_writer()
  capsys.readouterr()
  assert build.main(["--out", str(tmp_path / "lib2"), *library]) == 0
  assert select_cli.main(["--library", str(tmp_path / "lib"), "--queries", str(tmp_path / "q.jsonl"),
                          "--out", str(tmp_path / "sel"), "--num-neighbors", "3", *flags]) == 0
  out = capsys.readouterr().out
  assert "did its share; process 0 wrote the library" in out and "process 0 wrote the selection" in out
  assert sorted(tmp_path.iterdir()) == before


def _library_inputs(tmp_path):
  import json
  import numpy as np
  from rospr_jax.data import vocabulary
  (tmp_path / "all.jsonl").write_text("".join(json.dumps({"source": s, "text": f"{s} text {i}"}) + "\n"
                                              for s in ("a", "b") for i in range(3)))
  (tmp_path / "names.txt").write_text("a\nb\n")
  np.save(tmp_path / "prompts.npy", np.arange(2 * 3 * 64, dtype=np.float32).reshape(2, 3, 64))
  (tmp_path / "q.jsonl").write_text(json.dumps({"text": "b text"}) + "\n")
  flags = ["--random-retriever", "tiny", "--vocab", vocabulary.offline_vocabulary_path(), "--max-length", "16"]
  library = ["--prompts", str(tmp_path / "prompts.npy"), "--instances", str(tmp_path / "all.jsonl"),
             "--source-names", str(tmp_path / "names.txt"), "--n", "3", "--index", "exact", *flags]
  return library, flags


def test_library_and_selection_folders_at_a_url_match_local_ones(tmp_path, monkeypatch, capsys):
  """build-library and retrieve on memory:// (fsspec's in-memory object store: no rename, no folders)
  give what they give on local folders, byte for byte; a folder is read only once committed."""
  import fsspec
  import numpy as np
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  from rospr_jax.retrieval import retrieve
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  library, flags = _library_inputs(tmp_path)
  assert build.main(["--out", str(tmp_path / "lib"), *library]) == 0
  assert build.main(["--out", "memory://bucket/lib", *library]) == 0
  memory = fsspec.filesystem("memory")
  published = {p.split("/bucket/lib/", 1)[1] for p in memory.find("/bucket/lib")}
  local = {str(p.relative_to(tmp_path / "lib")) for p in (tmp_path / "lib").rglob("*") if p.is_file()}
  assert published == local | {paths.COMMIT_MARKER}
  for name in local:
    if name != "manifest.json":  # the manifest records the argv, which names the --out given
      assert memory.cat_file(f"/bucket/lib/{name}") == (tmp_path / "lib" / name).read_bytes(), name
  capsys.readouterr()

  # A published library refuses a second build without --overwrite, before any work.
  assert build.main(["--out", "memory://bucket/lib", *library]) == 2
  assert "memory://bucket/lib already holds a published folder" in capsys.readouterr().err
  assert build.main(["--out", "memory://bucket/lib", "--overwrite", *library]) == 0

  query = ["--queries", str(tmp_path / "q.jsonl"), "--num-neighbors", "3", *flags]
  assert select_cli.main(["--library", str(tmp_path / "lib"), "--out", str(tmp_path / "sel"), *query]) == 0
  assert select_cli.main(["--library", "memory://bucket/lib", "--out", "memory://bucket/sel", *query]) == 0
  assert memory.exists(f"/bucket/sel/{paths.COMMIT_MARKER}")
  local_choice, local_prompt = retrieve.load_selection(str(tmp_path / "sel"))
  url_choice, url_prompt = retrieve.load_selection(paths.fetch_directory("memory://bucket/sel", "selection"))
  assert url_choice.chosen == local_choice.chosen and url_choice.names == local_choice.names
  np.testing.assert_array_equal(url_prompt, local_prompt)
  capsys.readouterr()

  # A changed object, or a folder whose writer stopped before its marker, is refused by name.
  memory.pipe_file("/bucket/lib/manifest.json", b"{}")
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies2"))  # a fresh machine: no local copy
  assert select_cli.main(["--library", "memory://bucket/lib", "--out", "memory://bucket/sel", *query]) == 2
  assert "library memory://bucket/lib: manifest.json does not match _COMMITTED.json" in capsys.readouterr().err
  memory.rm_file(f"/bucket/lib/{paths.COMMIT_MARKER}")
  assert select_cli.main(["--library", "memory://bucket/lib", "--out", "memory://bucket/sel", *query]) == 2
  assert "library memory://bucket/lib has no commit marker _COMMITTED.json" in capsys.readouterr().err
  memory.rm("/bucket", recursive=True)


def test_a_damaged_or_escaping_commit_marker_is_refused_by_name(tmp_path, monkeypatch):
  import fsspec
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  (tmp_path / "folder").mkdir()
  (tmp_path / "folder" / "a.txt").write_text("a")
  paths.publish_directory(tmp_path / "folder", "memory://m/f", replace=False)
  copy = paths.fetch_directory("memory://m/f", "library")
  assert open(os.path.join(copy, "a.txt")).read() == "a"
  memory = fsspec.filesystem("memory")
  marker = f"/m/f/{paths.COMMIT_MARKER}"
  memory.pipe_file(marker, b'{"files": {"a.txt": 3}}')
  with pytest.raises(ValueError, match=r"library memory://m/f: its commit marker _COMMITTED.json is damaged"):
    paths.fetch_directory("memory://m/f", "library")
  memory.pipe_file(marker, b'{"files": {"../../escape": {"size": 1, "sha256": "x"}}}')
  with pytest.raises(ValueError, match=r"lists '../../escape', not a name inside the folder"):
    paths.fetch_directory("memory://m/f", "library")
  assert not (tmp_path / "escape").exists()
  memory.rm("/m", recursive=True)


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_a_url_scheme_without_a_driver_is_named():
  with pytest.raises(ValueError, match=r"gs://b/lib: no file system for gs:// .*gcsfs"):
    paths.is_committed("gs://b/lib")


def _files(folder) -> dict:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_republish_sends_only_what_changed_and_one_that_stops_leaves_a_partial_marker(tmp_path, monkeypatch):
  import fsspec
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  memory = fsspec.filesystem("memory")
  run, url = tmp_path / "run", "memory://republish/run"
  (run / "checkpoints" / "4").mkdir(parents=True)
  (run / "checkpoints" / "4" / "state").write_bytes(b"s4")
  (run / "report.json").write_text("r1")
  (run / ".rospr.lock").write_text("held")  # the run lock and writers' temporaries stay local
  (run / "checkpoints" / "8.orbax-checkpoint-tmp-1").mkdir()
  (run / "checkpoints" / "8.orbax-checkpoint-tmp-1" / "state").write_bytes(b"half")
  assert paths.publish_directory(run, url, replace=False) == 2
  assert sorted(memory.find("/republish/run")) == [f"/republish/run/{n}" for n in
                                                   (paths.COMMIT_MARKER, "checkpoints/4/state", "report.json")]
  assert paths.publish_directory(run, url, replace=True) == 0  # nothing changed: nothing sent
  (run / "checkpoints" / "8").mkdir()
  (run / "checkpoints" / "8" / "state").write_bytes(b"s8")
  (run / "report.json").write_text("r2")

  real = type(memory).put_file

  def reset_on_the_report(self, lpath, rpath, *args, **kwargs):
    if rpath.endswith("report.json"):
      raise OSError("connection reset")
    return real(self, lpath, rpath, *args, **kwargs)

  with monkeypatch.context() as patch:  # the upload of the changed report fails
    patch.setattr(type(memory), "put_file", reset_on_the_report)
    with pytest.raises(OSError, match="connection reset"):
      paths.publish_directory(run, url, replace=True)
  # Readers refuse the folder meanwhile; a run resumed from it keeps exactly what the marker lists.
  with pytest.raises(FileNotFoundError, match=r"library memory://republish/run: the commit marker of "
                                              r"memory://republish/run is partial"):
    paths.fetch_directory(url, "library")
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "fresh_machine"))
  with paths.run_directory(url, "model_dir") as folder:
    assert _files(pathlib.Path(folder.local)) == {"checkpoints/4/state": b"s4"}
    (pathlib.Path(folder.local) / "checkpoints" / "12").mkdir()  # ahead of what was published
    (pathlib.Path(folder.local) / "checkpoints" / "12" / "state").write_bytes(b"s12")
    with pytest.raises(FileExistsError, match=r"model_dir memory://republish/run: its working copy .* is in "
                                              r"use by another run on this machine"):
      with paths.run_directory(url, "model_dir"):
        pass
    folder.publish()
  assert paths.publish_directory(run, url, replace=True) == 2  # the report and step 8 again; 12 goes
  published = {k: v for k, v in _files(run).items() if not k.startswith((".", "checkpoints/8."))}
  copy = _files(pathlib.Path(paths.fetch_directory(url, "library")))
  assert copy.pop(paths.COMMIT_MARKER) and copy == published
  with paths.run_directory(url, "model_dir") as folder:  # the working copy follows the URL: 12 is gone
    assert _files(pathlib.Path(folder.local)) == published
    assert sorted(os.listdir(os.path.join(folder.local, "checkpoints"))) == ["4", "8"]
  # A folder inside a published one is read through its marker.
  inside = paths.fetch_directory(f"{url}/checkpoints", "checkpoints")
  assert sorted(os.listdir(inside)) == ["4", "8", paths.COMMIT_MARKER]
  memory.rm("/republish", recursive=True)


def test_data_files_at_urls_give_the_library_local_files_give(tmp_path, monkeypatch, capsys):
  """--prompts (a .npy table), --instances and --source-names as objects; a missing one is named."""
  import fsspec
  from rospr_jax.commands import build_library as build
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  memory = fsspec.filesystem("memory")
  library, _ = _library_inputs(tmp_path)
  assert build.main(["--out", str(tmp_path / "lib"), *library]) == 0
  for name in ("prompts.npy", "all.jsonl", "names.txt"):
    memory.pipe_file(f"/data/{name}", (tmp_path / name).read_bytes())
  at_urls = [a.replace(str(tmp_path), "memory://data") for a in library]
  assert build.main(["--out", str(tmp_path / "lib2"), *at_urls]) == 0
  built, from_urls = _files(tmp_path / "lib"), _files(tmp_path / "lib2")
  assert sorted(built) == sorted(from_urls)
  for name in built:
    if name != "manifest.json":  # the manifest records the argv
      assert from_urls[name] == built[name], name
  capsys.readouterr()
  missing = [a.replace(str(tmp_path / "all.jsonl"), "memory://data/gone.jsonl") for a in library]
  assert build.main(["--out", str(tmp_path / "lib3"), *missing]) == 2
  err = capsys.readouterr().err
  assert "--instances memory://data/gone.jsonl does not exist (no such object)" in err and "Traceback" not in err
  assert not (tmp_path / "lib3").exists()
  memory.rm("/data", recursive=True)


def test_a_folder_without_a_marker_is_copied_as_listed_and_again_once_an_object_changes(tmp_path, monkeypatch):
  """Checkpoints another tool wrote (gsutil, a hub download) have no commit marker: `input_tree`
  copies what is listed, keyed by names, sizes and the store's object versions."""
  import fsspec
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  memory = fsspec.filesystem("memory")
  memory.pipe_file("/tree/ckpt/config.json", b"{}")
  memory.pipe_file("/tree/ckpt/sub/w.bin", b"123")
  first = paths.input_tree("memory://tree/ckpt", "checkpoint")
  assert _files(pathlib.Path(first)) == {"config.json": b"{}", "sub/w.bin": b"123"}
  assert paths.input_tree("memory://tree/ckpt", "checkpoint") == first  # reused, not copied again
  memory.pipe_file("/tree/ckpt/sub/w.bin", b"1234")
  second = paths.input_tree("memory://tree/ckpt", "checkpoint")
  assert second != first and _files(pathlib.Path(second))["sub/w.bin"] == b"1234"
  assert paths.input_tree(str(tmp_path), "checkpoint") == str(tmp_path)  # local paths pass unchanged
  with pytest.raises(FileNotFoundError, match="checkpoint memory://tree/none: no such folder"):
    paths.input_tree("memory://tree/none", "checkpoint")
  memory.rm("/tree", recursive=True)


def test_what_a_red_team_found_stays_fixed(tmp_path, monkeypatch):
  """Dot-named data (zarr's .zarray) is published, writers' scratch is not; a publish never removes
  objects it did not publish; the working directory never stands in for a marker; a damaged marker
  is replaced by the next publish; two spellings of a URL share one working copy and its lock."""
  import fsspec
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  memory = fsspec.filesystem("memory")
  folder = tmp_path / "ckpt"
  (folder / "target.encoder").mkdir(parents=True)
  (folder / "target.encoder" / ".zarray").write_text("{}")
  (folder / "target.encoder" / "0.0").write_bytes(b"w")
  for scratch in (".rospr.lock", ".lib.tmp-host-1-x", "a.part-7", ".units.swap"):
    (folder / scratch).write_text("scratch")
  memory.pipe_file("/redteam/bucket/someone_else.bin", b"keep me")
  paths.publish_directory(folder, "memory://redteam/bucket", replace=False)
  assert sorted(memory.find("/redteam/bucket")) == [
      f"/redteam/bucket/{n}" for n in (paths.COMMIT_MARKER, "someone_else.bin", "target.encoder/.zarray",
                                       "target.encoder/0.0")]
  copy = paths.fetch_directory("memory://redteam/bucket", "checkpoint")
  assert open(os.path.join(copy, "target.encoder", ".zarray")).read() == "{}"

  marker_here = tmp_path / "cwd"
  marker_here.mkdir()
  (marker_here / paths.COMMIT_MARKER).write_text('{"files": {}}')
  monkeypatch.chdir(marker_here)
  (tmp_path / "plain").mkdir()
  (tmp_path / "plain" / "w.bin").write_bytes(b"123")
  tree = paths.input_tree(f"file://{tmp_path / 'plain'}", "checkpoint")  # not "file:// holds nothing"
  assert open(os.path.join(tree, "w.bin"), "rb").read() == b"123"

  memory.pipe_file(f"/redteam/bucket/{paths.COMMIT_MARKER}", b'{"files": {"target.enc')  # a killed write
  with pytest.raises(ValueError, match="commit marker _COMMITTED.json is damaged"):
    paths.fetch_directory("memory://redteam/bucket", "checkpoint")
  paths.publish_directory(folder, "memory://redteam/bucket", replace=True)
  assert paths.fetch_directory("memory://redteam/bucket", "checkpoint")

  with paths.run_directory("memory://redteam/run", "OUTPUT_DIR"):
    with pytest.raises(FileExistsError, match="in use by another run on this machine"):
      with paths.run_directory("memory://redteam//run/", "OUTPUT_DIR"):
        pass
  memory.rm("/redteam", recursive=True)


def test_what_a_killed_copy_left_is_removed_by_the_next_one(tmp_path, monkeypatch):
  import subprocess
  import sys
  import fsspec
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  memory = fsspec.filesystem("memory")
  (tmp_path / "f").mkdir()
  (tmp_path / "f" / "a.txt").write_text("a")
  paths.publish_directory(tmp_path / "f", "memory://leak/f", replace=False)
  copy = paths.fetch_directory("memory://leak/f", "library")
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                        text=True, check=True).stdout.strip()  # a pid that has ended
  parent = os.path.dirname(copy)
  left = [os.path.join(parent, f".abc.tmp-{dead}-x1"), os.path.join(parent, f".abc.tmp-{os.getppid()}-x2")]
  for folder in left:
    os.makedirs(os.path.join(folder, "big"))
  memory.pipe_file("/leak/f/b.txt", b"b")  # not listed: the marker stays the same, so republish
  (tmp_path / "f" / "b.txt").write_text("b")
  paths.publish_directory(tmp_path / "f", "memory://leak/f", replace=True)
  paths.fetch_directory("memory://leak/f", "library")
  assert not os.path.exists(left[0]) and os.path.isdir(left[1])  # the live writer's stays
  memory.rm("/leak", recursive=True)


def test_a_damaged_local_copy_is_dropped_and_fetched_again_from_its_source(tmp_path, monkeypatch, caplog):
  """A local copy of a published folder, of a folder without a marker or of one object, changed after
  it was made (a file truncated by a full disk, edited by hand, removed), is not trusted on later runs
  (it used to be refused on every run and never fetched again): it is dropped, fetched again whole
  from the intact source, and a line says so."""
  import fsspec
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  memory = fsspec.filesystem("memory")
  (tmp_path / "f").mkdir()
  (tmp_path / "f" / "a.txt").write_text("abc")
  paths.publish_directory(tmp_path / "f", "memory://damaged/f", replace=False)
  memory.pipe_file("/damaged/tree/w.bin", b"123")
  memory.pipe_file("/damaged/one.jsonl", b'{"x": 1}\n')
  copies = {"published": lambda: paths.fetch_directory("memory://damaged/f", "library"),
            "tree": lambda: paths.input_tree("memory://damaged/tree", "checkpoint"),
            "object": lambda: paths.input_file("memory://damaged/one.jsonl", "--queries")}
  for name, make in copies.items():
    first = make()
    victim = pathlib.Path(first) if name == "object" else next(p for p in pathlib.Path(first).rglob("*") if p.is_file())
    intact = victim.read_bytes()
    victim.write_bytes(intact[:1])  # truncated, as a full disk leaves it
    caplog.clear()
    with caplog.at_level("WARNING"):
      again = make()
    assert again == first and pathlib.Path(again if name == "object" else victim).read_bytes() == intact, name
    assert any("is damaged" in r.getMessage() and "fetching it again" in r.getMessage() for r in caplog.records), name
    caplog.clear()
    with caplog.at_level("WARNING"):
      assert make() == first  # intact now: reused without a word
    assert not caplog.records, name
  victim = next(p for p in pathlib.Path(copies["tree"]()).rglob("*") if p.is_file())
  victim.unlink()  # removed by hand
  assert pathlib.Path(copies["tree"]()).joinpath("w.bin").read_bytes() == b"123"
  memory.rm("/damaged", recursive=True)

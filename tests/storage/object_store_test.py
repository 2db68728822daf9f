"""Commands on an object store (gs:// and s3:// served by local emulators, the `object_store` fixture,
through the drivers a real bucket takes): folder artifacts written in place with their manifest last
and read only once committed, inputs read through checked local copies (a damaged copy fetched
again), flags that read local files only refused before any work, processes other than 0 writing
nothing."""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np
import pytest

from rospr_jax import multihost, storage
from rospr_jax.commands import common
from rospr_jax.storage import copies


def _library_inputs(tmp_path):
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


def _files(folder) -> dict:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_flags_that_read_local_files_only_refuse_urls_with_the_mounted_path():
  ok = argparse.Namespace(out="/gcs/b/lib", source=["copa=/data/copa.jsonl"], n=100, target="rte:GPT-3 style")
  common.require_local_args(ok)
  with pytest.raises(ValueError, match="--source 'gs://b/copa.jsonl' is a URL.*gcsfuse --implicit-dirs b"):
    common.require_local_args(argparse.Namespace(out="/x", source=["copa=gs://b/copa.jsonl"]))
  with pytest.raises(ValueError, match="--shard-dir 'gs://b' is a URL"):
    common.require_local_args(argparse.Namespace(shard_dir="gs://b"))
  common.require_local_args(argparse.Namespace(shard_dir="gs://b"), urls=("shard_dir",))


def test_a_scheme_without_a_driver_is_named_before_any_work(tmp_path):
  import gin
  from rospr_jax import gin_cli
  from rospr_jax.backbone import load_backbone
  from rospr_jax.commands import demo_run as demo
  gin_cli.parse_gin(["models/tiny.gin"], ["CHECKPOINT = 'nosuch://b/T0_3B'"], [])
  try:  # the model file's edge makes the checkpoint local when the backbone loads
    with pytest.raises(ValueError, match="CHECKPOINT nosuch://b/T0_3B: nosuch:// is not served here"):
      load_backbone()
  finally:
    gin.clear_config()
  with pytest.raises(ValueError, match="load_backbone reads local files; CHECKPOINT nosuch://b/T0_3B is a URL"):
    load_backbone("nosuch://b/T0_3B")  # called by hand, past the edges: refused, naming the setting
  with pytest.raises(ValueError, match="--output_dir nosuch://b/demo: nosuch:// is not served here"):
    demo.run("nosuch://b/demo")
  assert not os.path.exists("nosuch:")


def test_on_other_hosts_library_and_retrieval_commands_compute_but_write_nothing(tmp_path, monkeypatch, capsys):
  """Every process of a multi-process run embeds its share (tests/multiprocess runs them for real);
  process 0 alone writes."""
  import jax
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  library, flags = _library_inputs(tmp_path)
  assert build.main(["--out", str(tmp_path / "lib"), *library]) == 0  # process 0 writes
  before = sorted(tmp_path.iterdir())
  monkeypatch.setattr(jax, "process_index", lambda: 2)
  assert not multihost.is_writer()
  capsys.readouterr()
  assert build.main(["--out", str(tmp_path / "lib2"), *library]) == 0
  assert select_cli.main(["--library", str(tmp_path / "lib"), "--queries", str(tmp_path / "q.jsonl"),
                          "--out", str(tmp_path / "sel"), "--num-neighbors", "3", *flags]) == 0
  out = capsys.readouterr().out
  assert "did its share; process 0 wrote the library" in out and "process 0 wrote the selection" in out
  assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("object_store", ["gs", "s3"], indirect=True)
def test_library_and_selection_at_a_url_match_local_ones(object_store, tmp_path, monkeypatch, capsys):
  """At either bucket kind (gs://, s3://), through the drivers users run."""
  scheme = object_store.protocol[0]
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  from rospr_jax.retrieval import retrieve
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  library, flags = _library_inputs(tmp_path)
  assert build.main(["--out", str(tmp_path / "lib"), *library]) == 0
  capsys.readouterr()
  assert build.main(["--out", f"{scheme}://bucket/lib", *library]) == 0
  assert json.loads(capsys.readouterr().out)["library"] == f"{scheme}://bucket/lib"
  at_url = {p.split("bucket/lib/", 1)[1] for p in object_store.find("bucket/lib")}
  local = _files(tmp_path / "lib")
  assert at_url == set(local)
  for name in local:
    if name != storage.MANIFEST:  # the manifest records the argv, which names the --out given
      assert object_store.cat_file(f"{scheme}://bucket/lib/{name}") == local[name], name

  assert build.main(["--out", f"{scheme}://bucket/lib", *library]) == 2  # refused before any work
  assert f"--out {scheme}://bucket/lib already holds a rospr_library; pass --overwrite" in capsys.readouterr().err
  assert build.main(["--out", f"{scheme}://bucket/lib", "--overwrite", *library]) == 0

  query = ["--queries", str(tmp_path / "q.jsonl"), "--num-neighbors", "3", *flags]
  assert select_cli.main(["--library", str(tmp_path / "lib"), "--out", str(tmp_path / "sel"), *query]) == 0
  assert select_cli.main(["--library", f"{scheme}://bucket/lib", "--out", f"{scheme}://bucket/sel", *query]) == 0
  local_choice, local_prompt = retrieve.load_selection(str(tmp_path / "sel"))
  url_choice, url_prompt = retrieve.load_selection(f"{scheme}://bucket/sel")
  assert url_choice.chosen == local_choice.chosen and url_choice.names == local_choice.names
  assert url_choice.to_dict()["params"]["library"] == f"{scheme}://bucket/lib"
  np.testing.assert_array_equal(url_prompt, local_prompt)
  capsys.readouterr()
  other = [*query, "--retriever-seed", "1"]  # another retriever: named with the library's URL, not its copy
  assert select_cli.main(["--library", f"{scheme}://bucket/lib", "--out", str(tmp_path / "sel3"), *other]) == 2
  assert f"Library {scheme}://bucket/lib was built with retriever" in capsys.readouterr().err

  # A changed object, or a folder whose writer stopped before its manifest, is refused by name.
  shard = next(n for n in local if n.endswith(".npy") and n.startswith("shards/"))
  object_store.pipe_file(f"{scheme}://bucket/lib/{shard}", b"\x93NUMPY damaged")
  assert select_cli.main(["--library", f"{scheme}://bucket/lib", "--out", f"{scheme}://bucket/sel2", *query]) == 2
  err = capsys.readouterr().err
  assert f"Library file {shard} in " in err and "is corrupted" in err
  object_store.rm_file(f"{scheme}://bucket/lib/{storage.MANIFEST}")
  assert select_cli.main(["--library", f"{scheme}://bucket/lib", "--out", f"{scheme}://bucket/sel2", *query]) == 2
  assert "has no manifest.json: it was never completed" in capsys.readouterr().err


def test_data_files_at_urls_give_the_library_local_files_give(object_store, tmp_path, monkeypatch, capsys):
  """--prompts (a .npy table), --instances and --source-names as objects; a missing one is named."""
  from rospr_jax.commands import build_library as build
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  library, _ = _library_inputs(tmp_path)
  assert build.main(["--out", str(tmp_path / "lib"), *library]) == 0
  for name in ("prompts.npy", "all.jsonl", "names.txt"):
    object_store.pipe_file(f"gs://data/{name}", (tmp_path / name).read_bytes())
  at_urls = [a.replace(str(tmp_path), "gs://data") for a in library]
  assert build.main(["--out", str(tmp_path / "lib2"), *at_urls]) == 0
  built, from_urls = _files(tmp_path / "lib"), _files(tmp_path / "lib2")
  assert sorted(built) == sorted(from_urls)
  for name in built:
    if name != storage.MANIFEST:  # the manifest records the argv
      assert from_urls[name] == built[name], name
  capsys.readouterr()
  missing = [a.replace(str(tmp_path / "all.jsonl"), "gs://data/gone.jsonl") for a in library]
  assert build.main(["--out", str(tmp_path / "lib3"), *missing]) == 2
  err = capsys.readouterr().err
  assert "--instances gs://data/gone.jsonl does not exist" in err and "Traceback" not in err
  assert not (tmp_path / "lib3").exists()


def test_inputs_at_urls_are_recorded_by_their_urls_and_an_export_table_folder_reads_as_a_local_one(
    object_store, tmp_path, monkeypatch, capsys):
  """What a library and a selection record of their inputs at URLs (a --prompts table or export, the
  --queries file) names the URLs, not the local copies read; a --prompts export's table folder
  (checkpoint_<step>) at a URL is read with the per-source files its manifest lists beside it."""
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  from rospr_jax.prompt import export
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  library, flags = _library_inputs(tmp_path)
  export.export_prompts(str(tmp_path / "export"), np.load(tmp_path / "prompts.npy"), ["a", "b"], 5,
                        backbone_fingerprint="f" * 16, seeds=[0, 0], source_steps=[5, 5])
  for path in [tmp_path / "prompts.npy", tmp_path / "q.jsonl", *(tmp_path / "export").rglob("*")]:
    if path.is_file():
      object_store.pipe_file(f"gs://data/{path.relative_to(tmp_path)}", path.read_bytes())
  at = library.index("--prompts") + 1
  per_source = {"gs://data/prompts.npy": ["gs://data/prompts.npy"] * 2,
                "gs://data/export/checkpoint_5": [export.source_prompt_path("gs://data/export", s, 5) for s in "ab"],
                str(tmp_path / "export" / "checkpoint_5"): [export.source_prompt_path(str(tmp_path / "export"), s, 5)
                                                            for s in "ab"]}
  for number, (prompts, recorded) in enumerate(per_source.items()):
    out = tmp_path / f"lib{number}"
    assert build.main(["--out", str(out), *library[:at], prompts, *library[at + 1:]]) == 0, capsys.readouterr().err
    assert [s["prompt_file"] for s in json.loads((out / storage.MANIFEST).read_text())["sources"]] == recorded
  assert _files(tmp_path / "lib1").keys() == _files(tmp_path / "lib2").keys()
  assert select_cli.main(["--library", str(tmp_path / "lib0"), "--queries", "gs://data/q.jsonl", "--out",
                          str(tmp_path / "sel"), "--num-neighbors", "3", *flags]) == 0, capsys.readouterr().err
  params = json.loads((tmp_path / "sel" / "selection.json").read_text())["params"]
  assert params["queries_file"] == "gs://data/q.jsonl" and params["library"] == str(tmp_path / "lib0")


def test_a_damaged_local_copy_is_dropped_and_fetched_again_from_its_source(object_store, tmp_path,
                                                                           monkeypatch, caplog):
  """A local copy changed after it was made (truncated by a full disk, edited, removed) is not trusted
  on later runs: it is dropped, fetched again whole from the intact source, and a line says so."""
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  object_store.pipe_file("gs://damaged/tree/w.bin", b"123")
  object_store.pipe_file("gs://damaged/tree/sub/v.bin", b"45")
  object_store.pipe_file("gs://damaged/one.jsonl", b'{"x": 1}\n')
  made = {"folder": lambda: copies.local_copy("gs://damaged/tree", "checkpoint"),
          "object": lambda: copies.local_copy("gs://damaged/one.jsonl", "--queries")}
  for name, make in made.items():
    first = make()
    victim = pathlib.Path(first) if name == "object" else pathlib.Path(first, "sub", "v.bin")
    intact = victim.read_bytes()
    victim.write_bytes(intact[:1])  # truncated, as a full disk leaves it
    caplog.clear()
    with caplog.at_level("WARNING"):
      assert make() == first and victim.read_bytes() == intact, name
    assert any("is damaged" in r.getMessage() and "fetching it again" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
      assert make() == first  # intact now: reused without a word
    assert not caplog.records, name
  pathlib.Path(made["folder"](), "w.bin").unlink()  # removed by hand
  assert pathlib.Path(made["folder"](), "w.bin").read_bytes() == b"123"
  object_store.pipe_file("gs://damaged/tree/w.bin", b"1234")  # the source changed: a new copy
  assert pathlib.Path(made["folder"](), "w.bin").read_bytes() == b"1234"
  with pytest.raises(FileNotFoundError, match="checkpoint gs://damaged/none does not exist"):
    copies.local_copy("gs://damaged/none", "checkpoint")

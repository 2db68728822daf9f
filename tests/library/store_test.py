"""The library directory: round trip, atomic writing, and one clear error per kind of mismatch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rospr_jax import storage
from rospr_jax.storage import manifests
from rospr_jax.library import search, store
from rospr_jax.library import writer as writer_lib

RETRIEVER = store.Retriever("f" * 64, {"size": "tiny"})
SOURCES = [store.SourceInfo("a", n=5, seed=1, prompt_file="prompts/a.npy"),
           store.SourceInfo("b", n=5, seed=1), store.SourceInfo("c", n=4, seed=2)]


def _rows(seed=0):
  rng = np.random.default_rng(seed)
  source_ids = np.array([0] * 5 + [1] * 5 + [2] * 4)
  rng.shuffle(source_ids)
  embeddings = rng.normal(size=(14, 6)).astype(np.float32)
  texts = [f"text {i} of {'abc'[s]} é" for i, s in enumerate(source_ids)]
  return embeddings, source_ids, texts


def _prompts():
  return np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)


def _build(directory, index="exact", shard_rows=4, **kwargs):
  embeddings, ids, texts = _rows()
  with writer_lib.LibraryWriter(str(directory), sources=SOURCES, prompts=_prompts(), dim=6,
                           retriever=RETRIEVER, shard_rows=shard_rows, **kwargs) as writer:
    # Uneven batches straddle the shard boundaries.
    for start, stop in [(0, 3), (3, 9), (9, 14)]:
      writer.add(embeddings[start:stop], ids[start:stop], texts[start:stop])
    return writer.finish(index=index)


def _edit_manifest(directory, edit, digest=True):
  """Edits a library's manifest; with `digest`, its facts' digest follows (a manifest consistent with
  itself that says something else), else the edit is one a reader must notice by that digest."""
  manifest = store.read_manifest(str(directory))
  edit(manifest)
  with open(os.path.join(directory, store.MANIFEST), "w") as f:
    json.dump({**manifest, storage.FACTS_KEY: storage.facts_sha256(manifest)} if digest else manifest, f)


@pytest.mark.parametrize("edit", [lambda m: m["sources"][0].update(name="z"), lambda m: m.update(metric="dot")],
                         ids=["source_name", "metric"])
def test_an_edited_manifest_is_refused_by_its_digest(tmp_path, edit):
  """Was: a source's name or the metric edited in manifest.json was read as it was."""
  _build(tmp_path / "lib")
  _edit_manifest(tmp_path / "lib", edit, digest=False)
  for verify in (True, False):
    with pytest.raises(ValueError, match=r"Library manifest .*lib/manifest.json was edited after it was written: "
                                         r"its facts have sha256 [0-9a-f]{16}\.\.\., not the [0-9a-f]{16}\.\.\. it "
                                         r"records\. Rebuild the library\."):
      store.Library.open(str(tmp_path / "lib"), verify=verify)


def test_round_trip(tmp_path):
  lib_dir = tmp_path / "lib"
  _build(lib_dir)
  assert sorted(os.listdir(tmp_path)) == ["lib"]  # no temporary directory left behind
  lib = store.Library.open(str(lib_dir), dim=6, retriever=RETRIEVER.fingerprint, metric="cosine")
  embeddings, ids, texts = _rows()
  assert [s.shape[0] for s in lib.embedding_shards()] == [4, 4, 4, 2]
  np.testing.assert_allclose(np.concatenate(lib.embedding_shards()), search.normalize(embeddings),
                             rtol=1e-6)
  np.testing.assert_array_equal(lib.source_ids(), ids)
  assert list(lib.texts()) == list(zip(ids.tolist(), texts))
  np.testing.assert_array_equal(lib.prompts(), _prompts())
  assert lib.source_names == ["a", "b", "c"]
  m = lib.manifest
  assert [s["n"] for s in m["sources"]] == [5, 5, 4]
  assert m["sources"][0]["prompt_file"] == "prompts/a.npy"
  assert m["num_rows"] == 14 and store.read_manifest(str(tmp_path / "lib"))["format_version"] == store.FORMAT_VERSION
  # Neighbours of a row's own embedding: the row itself first, reported as its source.
  source_ids, sims = lib.neighbors(embeddings[[0, 7]], 3)
  assert source_ids[:, 0].tolist() == [ids[0], ids[7]]
  np.testing.assert_allclose(sims[:, 0], 1.0, rtol=1e-5)


def test_scann_index_round_trip(tmp_path, clustered):
  db, queries = clustered(3000, 16, 30, 0.3, seed=3, num_queries=50)
  ids = np.arange(3000) % 3
  with writer_lib.LibraryWriter(str(tmp_path / "lib"), sources=SOURCES, prompts=_prompts(), dim=16,
                           retriever=RETRIEVER, shard_rows=1024) as writer:
    writer.add(db, ids, [str(i) for i in range(3000)])
    lib = writer.finish(index="scann", scann_config=search.ScannConfig(mode="ah"))
  lib = store.Library.open(str(tmp_path / "lib"))
  assert lib.manifest["index"]["settings"]["mode"] == "ah"
  assert any(f.startswith("index/") for f in lib.manifest["index"]["files"])
  approx, _ = lib.searcher().search(queries, 10)
  exact, _ = lib.searcher("exact").search(queries, 10)
  assert search.recall_at_k(approx, exact) >= 0.95
  # The build's own check: 200 library rows searched with the index and exactly.
  recorded = lib.manifest["index"]["recall"]
  assert (recorded["k"], recorded["queries"]) == (10, 200) and recorded["recall"] >= 0.95
  assert recorded["recall_with_ties"] >= recorded["recall"]


def test_writer_is_atomic_and_refuses_to_clobber(tmp_path):
  lib_dir = tmp_path / "lib"
  with pytest.raises(RuntimeError, match="boom"):
    with writer_lib.LibraryWriter(str(lib_dir), sources=SOURCES, prompts=_prompts(), dim=6,
                             retriever=RETRIEVER) as writer:
      writer.add(*_rows())
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []
  _build(lib_dir)
  with pytest.raises(FileExistsError, match="already holds a rospr_library; pass --overwrite"):
    _build(lib_dir)
  lib = _build(lib_dir, shard_rows=100, overwrite=True)
  assert len(lib.manifest["shards"]) == 1
  assert sorted(os.listdir(tmp_path)) == ["lib"]


def test_overwrite_replaces_libraries_only(tmp_path):
  """A folder that is no library (no manifest.json) is never deleted by --overwrite."""
  folder = tmp_path / "notes"
  (folder / "sub").mkdir(parents=True)
  (folder / "notes.txt").write_text("keep me")
  (folder / "sub" / "data.bin").write_bytes(b"\0" * 8)
  with pytest.raises(FileExistsError, match=f"{folder} holds files that are not a rospr_library .*give a new or empty folder"):
    _build(folder, overwrite=True)
  assert (folder / "notes.txt").read_text() == "keep me" and (folder / "sub" / "data.bin").exists()
  assert sorted(os.listdir(tmp_path)) == ["notes"]


def test_writer_input_errors(tmp_path):
  kwargs = dict(sources=SOURCES, prompts=_prompts(), dim=6, retriever=RETRIEVER)
  with pytest.raises(ValueError, match=r"prompts must be \[S, P, H\] with S = 3 sources"):
    writer_lib.LibraryWriter(str(tmp_path / "x"), **{**kwargs, "prompts": _prompts()[:2]})
  with pytest.raises(ValueError, match=r"Duplicate source names \['a'\]"):
    writer_lib.LibraryWriter(str(tmp_path / "x"), **{**kwargs, "sources": [SOURCES[0]] * 3})
  with writer_lib.LibraryWriter(str(tmp_path / "x"), **kwargs) as writer:
    with pytest.raises(ValueError, match=r"source ids must be integers in \[0, 3\)"):
      writer.add(np.ones((1, 6)), [3], ["t"])
    with pytest.raises(ValueError, match=r"embeddings must be \[B, 6\]"):
      writer.add(np.ones((1, 5)), [0], ["t"])
    with pytest.raises(ValueError,
                       match=r"embedding row 1 of this batch \(text 'bad'\) is not finite"):
      writer.add(np.array([[1.0] * 6, [np.nan] * 6]), [0, 0], ["good", "bad"])
    writer.add(np.ones((2, 6)), [0, 1], ["t", "u"])
    with pytest.raises(ValueError, match=r"Sources without any instance in the library: \['c'\]"):
      writer.finish()


def test_missing_directory_and_manifest(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    store.Library.open(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="has no manifest.json"):
    store.Library.open(str(tmp_path))
  (tmp_path / store.MANIFEST).write_text("{not json")
  with pytest.raises(ValueError, match="is not valid JSON"):
    store.Library.open(str(tmp_path))


@pytest.mark.parametrize("edit, kwargs, message", [
    (lambda m: m.update(format_version=99), {}, "has format version 99; this reader reads version 1"),
    (lambda m: m.pop("shards"), {}, r"lacks the keys \['shards'\]"),
    (None, {"dim": 512}, "embeddings of dimension 6; the retriever produces dimension 512"),
    (None, {"retriever": "0" * 64}, "was built with retriever ffff.*the given retriever is 0000"),
    (None, {"metric": "dot"}, "uses metric 'cosine'; expected 'dot'"),
    (lambda m: m.update(num_rows=15), {}, "shards hold 14 rows; the manifest says 15"),
    (lambda m: m["sources"][2].update(n=3), {}, "source 'c' has 4 rows; the manifest says 3"),
    (lambda m: m["shards"][0].update(rows=5), {},
     r"embeddings-00000.npy .* holds float32 \[4, 6\]; the manifest says float32 \[5, 6\]"),
], ids=["version", "key", "dim", "retriever", "metric", "num_rows", "source_n", "shard_rows"])
def test_manifest_mismatches(tmp_path, edit, kwargs, message):
  _build(tmp_path / "lib")
  if edit is not None:
    _edit_manifest(tmp_path / "lib", edit)
  with pytest.raises(ValueError, match=message):
    store.Library.open(str(tmp_path / "lib"), **kwargs)


def test_missing_file(tmp_path):
  _build(tmp_path / "lib")
  os.remove(tmp_path / "lib" / "shards" / "sources-00002.npy")
  with pytest.raises(FileNotFoundError, match="is missing shards/sources-00002.npy"):
    store.Library.open(str(tmp_path / "lib"))


def test_missing_index_file(tmp_path, clustered):
  db, _ = clustered(300, 6, 5, 0.3, seed=4)
  with writer_lib.LibraryWriter(str(tmp_path / "lib"), sources=SOURCES, prompts=_prompts(), dim=6,
                           retriever=RETRIEVER) as writer:
    writer.add(db, np.arange(300) % 3, ["t"] * 300)
    writer.finish(index="scann")
  os.remove(tmp_path / "lib" / "index" / "dataset.npy")
  with pytest.raises(FileNotFoundError, match="is missing index/dataset.npy"):
    store.Library.open(str(tmp_path / "lib"))


def test_corrupted_files(tmp_path):
  lib_dir = tmp_path / "lib"
  _build(lib_dir)
  path = lib_dir / "shards" / "embeddings-00001.npy"
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=r"shards/embeddings-00001.npy in .* is corrupted: sha256"):
    store.Library.open(str(lib_dir))
  # Without checksum verification, a truncated file is still caught when its shape is read.
  path.write_bytes(bytes(data[:-8]))
  with pytest.raises(ValueError, match="shards/embeddings-00001.npy in .* is corrupted"):
    store.Library.open(str(lib_dir), verify=False)


def test_a_library_of_another_retriever_is_refused_before_its_files_are_hashed(tmp_path, monkeypatch):
  lib_dir = tmp_path / "lib"
  _build(lib_dir)
  hashed = []
  monkeypatch.setattr(manifests, "sha256_file", lambda path: hashed.append(path) or "0" * 64)
  with pytest.raises(ValueError, match="was built with retriever"):
    store.Library.open(str(lib_dir), retriever="another-retriever")
  assert hashed == []
  with pytest.raises(ValueError, match="is corrupted: sha256"):  # the files are hashed once the facts fit
    store.Library.open(str(lib_dir), retriever=RETRIEVER.fingerprint)
  assert hashed


def test_corrupted_text_line(tmp_path):
  _build(tmp_path / "lib")
  path = tmp_path / "lib" / "shards" / "texts-00001.jsonl"
  lines = path.read_text().splitlines()
  lines[1] = "{broken"
  path.write_text("\n".join(lines) + "\n")
  lib = store.Library.open(str(tmp_path / "lib"), verify=False)
  with pytest.raises(ValueError, match="texts-00001.jsonl line 2"):
    list(lib.texts())


def test_prompt_row_checksum(tmp_path):
  lib_dir = tmp_path / "lib"
  _build(lib_dir)
  table = _prompts()
  table[1, 0, 0] += 1.0
  np.save(lib_dir / store.PROMPTS, table)
  # The table's file checksum is updated, so only the per-source row checksum can tell.
  _edit_manifest(lib_dir, lambda m: m["prompts"].update(
      sha256=storage.sha256_file(str(lib_dir / store.PROMPTS))))
  with pytest.raises(ValueError, match=r"the prompt of source 'b' \(row 1 of prompts.npy\) differs"):
    store.Library.open(str(lib_dir))


def test_exact_library_has_no_scann_searcher(tmp_path):
  lib = _build(tmp_path / "lib")
  with pytest.raises(ValueError, match="built without a ScaNN index"):
    lib.searcher("scann")

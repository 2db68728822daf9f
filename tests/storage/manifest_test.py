"""The one manifest type: every folder artifact writes a `storage.Manifest` and its kind's
`storage.ManifestKind` reads it back, so a damaged folder of any kind (library, prompt export, data
cache, BIG-bench store, a generic commit such as a written checkpoint) is refused with the same
message: the artifact, the manifest or the file, what is wrong and what to do."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pytest

from rospr_jax import storage
from rospr_jax.data import archives
from rospr_jax.data import bigbench
from rospr_jax.data import bigbench_sources
from rospr_jax.library import store
from rospr_jax.library import writer as writer_lib
from rospr_jax.prompt import export

THING = storage.ManifestKind("Thing", "thing", required=("a",), format_version=2, rebuild="Redo it.")


def _folder(tmp_path, manifest) -> str:
  directory = tmp_path / "artifact"
  directory.mkdir()
  (directory / "data.bin").write_bytes(b"abc")
  if manifest is not None:
    (directory / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
  return str(directory)


def _thing(tmp_path) -> tuple[str, dict]:
  """A committed folder of THING (data.bin, sub/more.bin listed) and its manifest's JSON."""
  directory = _folder(tmp_path, None)
  os.makedirs(os.path.join(directory, "sub"))
  open(os.path.join(directory, "sub", "more.bin"), "wb").write(b"more")
  THING.manifest({"a": [1, 2], "b": {"c": "d"}}, storage.listing(directory)).write(directory)
  return directory, json.loads(open(os.path.join(directory, "manifest.json")).read())


def test_a_manifest_round_trips_with_its_facts_digest_and_files(tmp_path):
  directory, record = _thing(tmp_path)
  files = {"data.bin": hashlib.sha256(b"abc").hexdigest(), "sub/more.bin": hashlib.sha256(b"more").hexdigest()}
  facts = {"a": [1, 2], "b": {"c": "d"}, "files": files, "kind": "thing", "format_version": 2}
  digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()  # JSON, keys sorted
  assert record == {**facts, "facts_sha256": digest}
  assert THING.read(directory) == storage.Manifest("thing", {"a": [1, 2], "b": {"c": "d"}}, files, 2)
  assert sorted(os.listdir(directory)) == ["data.bin", "manifest.json", "sub"]  # written whole, no temporary


def test_an_edited_fact_is_refused_naming_the_manifest(tmp_path):
  directory, record = _thing(tmp_path)
  storage.write_json(os.path.join(directory, "manifest.json"), {**record, "a": [1, 3]})
  for verify in (True, False):
    with pytest.raises(ValueError, match=r"^Thing manifest .*artifact/manifest.json was edited after it was written: "
                                         r"its facts have sha256 [0-9a-f]{16}\.\.\., not the "
                                         rf"{record['facts_sha256'][:16]}\.\.\. it records\. Redo it\.$"):
      THING.read(directory, verify=verify)


def test_a_tampered_listed_file_is_refused_naming_it_unless_not_verified(tmp_path):
  directory, record = _thing(tmp_path)
  open(os.path.join(directory, "sub", "more.bin"), "wb").write(b"mode")
  with pytest.raises(ValueError, match=r"^Thing file sub/more.bin in .*artifact is corrupted: sha256 "
                                       rf"{hashlib.sha256(b'mode').hexdigest()[:16]}\.\.\. differs from the "
                                       rf"manifest's {record['files']['sub/more.bin'][:16]}\.\.\.\. Redo it\.$"):
    THING.read(directory)
  assert THING.read(directory, verify=False).files == record["files"]  # presence only


def test_a_missing_listed_file_is_refused_verified_or_not(tmp_path):
  directory, _ = _thing(tmp_path)
  os.remove(os.path.join(directory, "sub", "more.bin"))
  for verify in (True, False):
    with pytest.raises(FileNotFoundError, match=r"^Thing .*artifact is missing sub/more.bin, which its "
                                                r"manifest.json lists\. Redo it\.$"):
      THING.read(directory, verify=verify)


def test_a_manifest_of_another_kind_is_refused(tmp_path):
  directory, _ = _thing(tmp_path)
  with pytest.raises(ValueError, match=r"^.*artifact is not a library: its manifest .*manifest.json is of kind "
                                       r"'thing', not 'rospr_library'\.$"):
    store.LIBRARY.read(directory)


def test_a_missing_folder_or_manifest_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"^Thing directory .*nowhere does not exist\.$"):
    THING.read(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=r"^Thing .*artifact has no manifest.json: it was never completed"):
    THING.read(_folder(tmp_path, None))


@pytest.mark.parametrize("text, message", [
    ('{"a": 1,', r"Thing manifest .*manifest.json is not valid JSON \(Expecting .* at line 1 column 9\)"),
    ("[1, 2]", r"Thing manifest .*manifest.json holds a JSON list, not an object"),
    ('{"kind": "thing", "format_version": 2}', r"manifest.json lacks the keys \['a'\]"),
    ('{"kind": "x", "a": 1}', r"manifest.json is of kind 'x', not 'thing'"),
    ('{"format_version": 3, "a": 1}', r"manifest.json has format version 3; this reader reads version 2\. Redo it\.$"),
])
def test_a_damaged_manifest_is_refused(tmp_path, text, message):
  with pytest.raises(ValueError, match=message):
    THING.read(_folder(tmp_path, text))


def test_facts_may_not_hold_the_manifests_own_keys():
  with pytest.raises(ValueError, match=r"facts may not hold its own keys \['facts_sha256', 'kind'\]"):
    storage.Manifest("thing", {"kind": "x", "facts_sha256": "0"}).record()


# --- Each kind's own reader refuses its tampered manifest -------------------------------------------------


def _library(tmp_path):
  """A three-row exact library; its reader."""
  sources = [store.SourceInfo("a", n=2, seed=1), store.SourceInfo("b", n=1, seed=1)]
  with writer_lib.LibraryWriter(str(tmp_path / "lib"), sources=sources, prompts=np.ones((2, 2, 4), np.float32),
                                dim=3, retriever=store.Retriever("f" * 64, {"size": "tiny"})) as writer:
    writer.add(np.eye(3, dtype=np.float32), np.array([0, 1, 0]), ["x", "y", "z"])
    writer.finish(index="exact")
  return tmp_path / "lib", lambda: store.Library.open(str(tmp_path / "lib"))


def _prompt_export(tmp_path):
  """A two-source prompt export; its reader."""
  final = export.export_prompts(str(tmp_path / "export"), np.zeros((2, 3, 4), np.float32), ["a", "b"], step=5,
                                backbone_fingerprint="f", seeds=[1, 2], source_steps=[5, 5])
  return final, lambda: export.load_prompts(final)


def _data_cache(tmp_path):
  """An extracted promptsource archive of one template file; its reader."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
    data = b"dataset: imdb\ntemplates: {}\n"
    member = tarfile.TarInfo("promptsource-0.2.3/promptsource/templates/imdb/templates.yaml")
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))
  (tmp_path / "ps.tar.gz").write_bytes(buffer.getvalue())
  folder = archives.extract_promptsource(tmp_path / "ps.tar.gz", tmp_path)
  return folder, lambda: archives.promptsource_dir(tmp_path)


def _bigbench_store(tmp_path):
  """A BIG-bench store of one multiple-choice task; its reader."""
  task = {"metrics": ["multiple_choice_grade"], "examples": [{"input": "q", "target_scores": {"y": 1, "n": 0}}]}
  raw = json.dumps(task).encode()
  folder = bigbench_sources.write_store(tmp_path, {"t": (task, raw)}, None, {"form": "checkout", "key": "k"})
  return folder, lambda: bigbench.BigBenchStore(folder)


def _checkpoint(tmp_path):
  """A tiny Hugging Face checkpoint (a generic commit: its files, `kind` and the weights' fingerprint);
  its fingerprinted reader."""
  from rospr_jax.model import checkpoints, get_config  # pylint: disable=g-import-not-at-top
  from rospr_jax.model.param_tree import param_shapes, unflatten  # pylint: disable=g-import-not-at-top
  config = get_config("tiny")
  params = unflatten({name: np.zeros(shape, np.float32) for name, shape in param_shapes(config).items()})
  folder = checkpoints.save_hf(tmp_path / "ckpt", config, params)
  return folder, lambda: checkpoints.checkpoint_fingerprint(folder)


@pytest.mark.parametrize("build, key, error, message", [
    (_library, "metric", ValueError, "Library manifest"),
    (_prompt_export, "step", ValueError, "Prompt export manifest"),
    (_data_cache, "archive", FileNotFoundError, "promptsource templates are not in the cache"),
    (_bigbench_store, "source", ValueError, "BIG-bench store manifest"),
    (_checkpoint, "weights_fingerprint", ValueError, "Checkpoint manifest"),
], ids=["library", "prompt_export", "data_cache", "bigbench_store", "checkpoint"])
def test_every_kind_reads_and_refuses_its_tampered_manifest(tmp_path, capsys, build, key, error, message):
  folder, read = build(tmp_path)
  read()  # as written: accepted
  path = os.path.join(folder, "manifest.json")
  record = json.loads(open(path).read())
  assert record["facts_sha256"] == storage.facts_sha256(record)  # every kind records its facts' digest
  storage.write_json(path, {**record, key: "edited"})
  with pytest.raises(error, match=message) as raised:
    read()
  said = str(raised.value) + capsys.readouterr().err  # the data cache says why on stderr, and rebuilds
  assert f"manifest {path} was edited after it was written" in said


@pytest.mark.parametrize("build, key, value, what", [
    (_library, "shards", 5, "Library"),
    (_library, "index", {"files": ["a"]}, "Library"),
    (_prompt_export, "sources", "a", "Prompt export"),
    (_checkpoint, "files", 5, "Checkpoint"),
], ids=["library_shards", "library_index", "prompt_export", "checkpoint"])
def test_a_listing_of_another_shape_is_refused_naming_the_manifest(tmp_path, build, key, value, what):
  """A manifest edited with its digest recomputed (or removed, as one written before digests) whose
  listing of files has another shape is refused as bad input naming it (a ValueError: one line from the
  commands), not a TypeError from the reader (a traceback)."""
  folder, read = build(tmp_path)
  path = os.path.join(folder, "manifest.json")
  record = {**json.loads(open(path).read()), key: value}
  for digest in ({"facts_sha256": storage.facts_sha256(record)}, {}):
    storage.write_json(path, {**{k: v for k, v in record.items() if k != "facts_sha256"}, **digest})
    with pytest.raises(ValueError, match=rf"^{what} manifest {path} does not list its files as a "
                                         rf"{what.lower()}'s manifest does\. "):
      read()


def test_a_damaged_data_cache_manifest_is_rebuilt_not_trusted(tmp_path, capsys):
  folder = tmp_path / "cache"
  folder.mkdir()
  (folder / "manifest.json").write_text("{not json")
  assert not archives._manifest_ok(folder, archives.PROMPTSOURCE)
  err = capsys.readouterr().err
  assert "Data cache manifest" in err and "manifest.json is not valid JSON" in err and "Extracting it again" in err
  (folder / "manifest.json").write_text(json.dumps({"sha256": archives.PROMPTSOURCE.sha256}))  # before kinds
  assert archives._manifest_ok(folder, archives.PROMPTSOURCE)
  (folder / "manifest.json").write_text(json.dumps({"sha256": "0" * 64}))
  assert not archives._manifest_ok(folder, archives.PROMPTSOURCE)

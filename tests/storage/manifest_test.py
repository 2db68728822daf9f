"""The one checked-manifest idiom: prompt exports, libraries and the data cache read their folders
through `storage.read_manifest` / `check_listed_file`, so a damaged folder of any kind is refused
with the same kind of message (the artifact, the file, what is wrong)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rospr_jax import storage
from rospr_jax.data import archives
from rospr_jax.prompt import export


def _folder(tmp_path, manifest) -> str:
  directory = tmp_path / "artifact"
  directory.mkdir()
  (directory / "data.bin").write_bytes(b"abc")
  if manifest is not None:
    (directory / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
  return str(directory)


def test_read_manifest_names_the_folder_the_file_and_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"^Thing directory .*nowhere does not exist\.$"):
    storage.read_manifest(tmp_path / "nowhere", "Thing")
  with pytest.raises(FileNotFoundError, match=r"^Thing .*artifact has no manifest.json: it was never completed"):
    storage.read_manifest(_folder(tmp_path, None), "Thing")


@pytest.mark.parametrize("text, kwargs, message", [
    ('{"a": 1,', {}, r"Thing manifest .*manifest.json is not valid JSON \(Expecting .* at line 1 column 9\)"),
    ("[1, 2]", {}, r"Thing manifest .*manifest.json holds a JSON list, not an object"),
    ('{"a": 1}', {"required": ("a", "b", "c")}, r"manifest.json lacks the keys \['b', 'c'\]"),
    ('{"kind": "x"}', {"kind": "y"}, r"manifest.json is of kind 'x', not 'y'"),
    ('{"format_version": 3}', {"format_version": 1, "rebuild": "Redo it."},
     r"manifest.json has format version 3; this reader reads version 1\. Redo it\.$"),
])
def test_read_manifest_refuses_a_damaged_manifest(tmp_path, text, kwargs, message):
  with pytest.raises(ValueError, match=message):
    storage.read_manifest(_folder(tmp_path, text), "Thing", **kwargs)


def test_listed_files_are_checked_for_presence_and_sha256(tmp_path):
  directory = _folder(tmp_path, {})
  good = storage.sha256_file(os.path.join(directory, "data.bin"))
  assert storage.check_listed_file(directory, "data.bin", good, "Thing").endswith("data.bin")
  with pytest.raises(ValueError, match=r"Thing file data.bin in .* is corrupted: sha256 ba7816bf8f01cfea\.\.\. "
                                       r"differs from the manifest's 0000000000000000\.\.\."):
    storage.check_listed_file(directory, "data.bin", "0" * 64, "Thing")
  storage.check_listed_file(directory, "data.bin", "0" * 64, "Thing", verify=False)  # presence only
  with pytest.raises(FileNotFoundError, match=r"Thing .*artifact is missing gone.bin, which its manifest.json lists"):
    storage.check_listed_file(directory, "gone.bin", good, "Thing", verify=False)


def test_write_manifest_round_trips_and_is_written_whole(tmp_path):
  directory = tmp_path / "d"
  directory.mkdir()
  storage.write_manifest(directory, {"b": 1, "a": [1, 2]})
  assert storage.read_manifest(directory, "Thing", required=("a", "b")) == {"a": [1, 2], "b": 1}
  assert [p.name for p in directory.iterdir()] == ["manifest.json"]  # no temporary left beside it


def test_a_prompt_export_is_read_through_the_same_checks(tmp_path):
  table = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  final = export.export_prompts(str(tmp_path / "export"), table, ["a", "b"], step=5, backbone_fingerprint="f",
                                 seeds=[1, 2], source_steps=[5, 5])
  manifest = json.loads(open(os.path.join(final, "manifest.json")).read())
  manifest["format_version"] = 99
  storage.write_json(os.path.join(final, "manifest.json"), manifest)
  with pytest.raises(ValueError, match=r"Prompt export manifest .* has format version 99; this reader reads "
                                       r"version \d+\. Export the prompts again"):
    export.load_prompts(final)


def test_a_damaged_data_cache_manifest_is_rebuilt_not_trusted(tmp_path, capsys):
  folder = tmp_path / "cache"
  folder.mkdir()
  (folder / "manifest.json").write_text("{not json")
  assert not archives._manifest_ok(folder, archives.PROMPTSOURCE)
  err = capsys.readouterr().err
  assert "Data cache manifest" in err and "manifest.json is not valid JSON" in err and "Extracting it again" in err
  (folder / "manifest.json").write_text(json.dumps({"sha256": archives.PROMPTSOURCE.sha256}))
  assert archives._manifest_ok(folder, archives.PROMPTSOURCE)
  (folder / "manifest.json").write_text(json.dumps({"sha256": "0" * 64}))
  assert not archives._manifest_ok(folder, archives.PROMPTSOURCE)

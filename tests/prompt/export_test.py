"""Exports: prompt-tuning's per-source layout, the table, and a reader that checks the manifest."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rospr_jax.prompt import export
from rospr_jax.prompt.prompts import from_file
from rospr_jax.storage import manifests

NAMES = ["super_glue/rte: GPT-3 style", "anli/r1:can we infer", "plain"]


def _export(tmp_path, step=40, table=None):
  table = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32) if table is None else table
  path = export.export_prompts(str(tmp_path / "export"), table, NAMES, step, backbone_fingerprint="abc123",
                               seeds=[11, 22, 33], source_steps=[40, 38, 12], source_examples=[100, 90, 7],
                               extra={"seed": 0})
  return table, path


def test_layout_is_prompt_tunings_and_rows_match(tmp_path):
  table, path = _export(tmp_path)
  root = tmp_path / "export"
  assert path == str(root / "checkpoint_40")
  for s, name in enumerate(NAMES):
    file = export.source_prompt_path(str(root), name, 40)
    assert file.endswith(os.path.join("numpy_checkpoints", "checkpoint_40", "encoder.prompt.prompt.prompt"))
    with open(file, "rb") as f:  # prompt-tuning reads it with np.load on an open file
      np.testing.assert_array_equal(np.load(f), table[s])
    np.testing.assert_array_equal(np.asarray(from_file(file)(None, (4, 5))), table[s])
  assert export.source_dir_name("super_glue/rte: GPT-3 style").startswith("super_glue_rte__GPT-3_style-")
  assert export.source_dir_name("a/b") != export.source_dir_name("a_b")
  leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
  assert not leftovers


def test_manifest_records_the_run(tmp_path):
  _, path = _export(tmp_path)
  manifest = json.loads((tmp_path / "export" / "checkpoint_40" / "manifest.json").read_text())
  assert manifest["backbone_fingerprint"] == "abc123" and manifest["step"] == 40 and manifest["seed"] == 0
  assert manifest["prompts"]["shape"] == [3, 4, 5]
  assert [(s["name"], s["seed"], s["steps"], s["examples"]) for s in manifest["sources"]] == [
      (NAMES[0], 11, 40, 100), (NAMES[1], 22, 38, 90), (NAMES[2], 33, 12, 7)]
  assert manifest["sources"][1]["file"] == os.path.relpath(
      export.source_prompt_path(str(tmp_path / "export"), NAMES[1], 40), str(tmp_path / "export"))


def test_reader_takes_the_latest_step_and_checks_expectations(tmp_path):
  _export(tmp_path, step=40)
  newer, _ = _export(tmp_path, step=80, table=np.ones((3, 4, 5), np.float32))
  loaded = export.load_prompts(str(tmp_path / "export"), expected_fingerprint="abc123",
                               expected_sources=NAMES)
  assert loaded.step == 80 and loaded.names == NAMES
  np.testing.assert_array_equal(loaded.prompts, newer)
  assert export.load_prompts(str(tmp_path / "export" / "checkpoint_40")).step == 40
  with pytest.raises(ValueError, match=r"trained on backbone abc123, not on the expected backbone ffff"):
    export.load_prompts(str(tmp_path / "export"), expected_fingerprint="ffff")
  with pytest.raises(ValueError, match=r"sources differ from the expected ones \(absent: \['other'\]"):
    export.load_prompts(str(tmp_path / "export"), expected_sources=["other"])


def test_an_export_for_another_backbone_is_refused_before_its_files_are_hashed(tmp_path, monkeypatch):
  _export(tmp_path)
  hashed = []
  monkeypatch.setattr(manifests, "sha256_file", lambda path: hashed.append(path) or "0" * 64)
  with pytest.raises(ValueError, match="not on the expected backbone ffff"):
    export.load_prompts(str(tmp_path / "export"), expected_fingerprint="ffff")
  assert hashed == []
  with pytest.raises(ValueError, match="is corrupted: sha256"):  # hashed once the facts fit
    export.load_prompts(str(tmp_path / "export"), expected_fingerprint="abc123")


def test_reader_refuses_a_changed_table(tmp_path):
  _, path = _export(tmp_path)
  np.save(os.path.join(path, "prompts.npy"), np.zeros((3, 4, 5), np.float32))
  with pytest.raises(ValueError, match=r"Prompt export file prompts.npy in .* is corrupted: sha256 .* differs from the manifest's"):
    export.load_prompts(path)
  np.save(os.path.join(path, "prompts.npy"), np.zeros((2, 4, 5), np.float32))
  with pytest.raises(ValueError,
                     match=r"has shape \[2, 4, 5\]; .*manifest.json says \[3, 4, 5\] for 3 sources"):
    export.load_prompts(path, verify=False)
  os.remove(os.path.join(path, "prompts.npy"))
  with pytest.raises(FileNotFoundError, match="Prompt export .* is missing prompts.npy, which its manifest.json lists"):
    export.load_prompts(path)
  with pytest.raises(FileNotFoundError, match="No prompt export at"):
    export.load_prompts(str(tmp_path / "nowhere"))


def test_reader_checks_every_per_source_file_and_the_manifests_facts(tmp_path):
  """Was: a per-source file changed after export, or a source renamed in the manifest, read as it was."""
  _, path = _export(tmp_path)
  file = export.source_prompt_path(str(tmp_path / "export"), NAMES[1], 40)
  saved = open(file, "rb").read()
  with open(file, "wb") as f:  # the name has no .npy: np.save on the path would write another file
    np.save(f, np.zeros((4, 5), np.float32))
  relative = os.path.relpath(file, str(tmp_path / "export"))
  with pytest.raises(ValueError, match=f"Prompt export file {relative} in .*export is corrupted: sha256"):
    export.load_prompts(path)
  os.remove(file)
  with pytest.raises(FileNotFoundError, match=f"is missing {relative}, which its manifest.json lists"):
    export.load_prompts(path, verify=False)
  open(file, "wb").write(saved)
  manifest_path = os.path.join(path, "manifest.json")
  manifest = json.loads(open(manifest_path).read())
  manifest["sources"][0]["name"] = "renamed"
  open(manifest_path, "w").write(json.dumps(manifest))
  with pytest.raises(ValueError, match=r"Prompt export manifest .*manifest.json was edited after it was written"):
    export.load_prompts(path, verify=False)


def test_reexport_of_a_step_replaces_it(tmp_path):
  _export(tmp_path, step=5)
  twice, _ = _export(tmp_path, step=5, table=np.full((3, 4, 5), 2.0, np.float32))
  np.testing.assert_array_equal(export.load_prompts(str(tmp_path / "export")).prompts, twice)
  assert export.export_steps(str(tmp_path / "export")) == [5]


def test_export_refuses_mismatched_rows(tmp_path):
  with pytest.raises(ValueError,
                     match=r"prompts must be \[S, P, H\] with S = 3 sources; got shape \(2, 4, 5\)"):
    export.export_prompts(str(tmp_path), np.zeros((2, 4, 5)), NAMES, 1, backbone_fingerprint="x",
                          seeds=[1, 2, 3], source_steps=[0, 0, 0])
  with pytest.raises(ValueError, match="seeds has 2 entries for 3 sources"):
    export.export_prompts(str(tmp_path), np.zeros((3, 4, 5)), NAMES, 1, backbone_fingerprint="x",
                          seeds=[1, 2], source_steps=[0, 0, 0])

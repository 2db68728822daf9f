"""Prompt initializers chosen by PROMPT_INIT: a registered name and a gin reference start from the same
prompts, a reference takes bindings of its own, exports record the initializer as they always did, and
bad settings are refused in one line naming their binding or PROMPT_INIT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rospr_jax import gin_cli
from rospr_jax.prompt import export, prompt_init, prompts, trainer
from rospr_jax.prompt.input_pipeline import Example, SourceExamples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN_DIR = os.path.join(ROOT, "gin")  # this checkout's run files, ahead of an installed copy
V, H, P = 64, 8, 4
EMBEDDINGS = np.random.default_rng(3).normal(size=(V, H)).astype(np.float32)  # [V, H]
# Source alpha's most frequent target is [7] (3 times), then [5, 6] (twice); beta's is [9, 10, 11].
TARGETS = {"alpha": [[7], [5, 6], [7], [12], [5, 6], [7]], "beta": [[9, 10, 11], [13], [9, 10, 11]]}
# What every export's manifest recorded as `prompt_init` (dataclasses.asdict of the former PromptInit).
RECORD = {"scale": 0.5, "population_size": 5000, "class_labels": None, "vocabulary": None, "file": None}


@pytest.fixture
def run_files(tmp_path):
  """Bindings of a run of two sources (examples file, model dir, P) and a [2, P, H] prompt file."""
  with open(tmp_path / "ex.jsonl", "w") as f:
    for source, targets in TARGETS.items():
      for i, target in enumerate(targets):
        f.write(json.dumps({"source": source, "inputs": [3 + i, 4], "targets": target + [1]}) + "\n")
  np.save(tmp_path / "start.npy", np.arange(2 * P * H, dtype=np.float32).reshape(2, P, H))
  return [f"EXAMPLES_FILE = '{tmp_path / 'ex.jsonl'}'", f"MODEL_DIR = '{tmp_path / 'run'}'", "TRAIN_STEPS = 2",
          f"PROMPT_LENGTH = {P}", f"prompt_init.FromFile.file = '{tmp_path / 'start.npy'}'"]


def _started(monkeypatch, bindings: list[str]) -> tuple[prompt_init.PromptInitializer, np.ndarray]:
  """(the initializer `trainer.train` gets from the run files and `bindings`, the [2, P, H] prompts it
  starts from with EMBEDDINGS as the backbone's table); the run stops before the backbone loads."""
  seen = {}
  monkeypatch.setattr(trainer, "_train_segment", lambda model_dir, data, backbone, settings, optimizer:
                      seen.update(data=data, settings=settings))
  gin_cli.parse_gin(["models/tiny.gin", "prompt_tuning/train_jsonl.gin"],
                    [*bindings, "trainer.train.backbone = None"], [GIN_DIR])
  trainer.train()
  data, settings = seen["data"], seen["settings"]
  table, _ = prompts.initial_table(data.names, P, H, settings.loop.seed,
                                   settings.prompt_init.initializers(EMBEDDINGS, data, P))
  return settings.prompt_init, table


def _expected(name: str, table: np.ndarray) -> None:
  """Checks `table` [2, P, H] against what initializer `name` makes, computed by hand."""
  if name == "random_uniform":
    assert np.all(np.abs(table) <= 0.5) and len(np.unique(table)) == table.size
  elif name == "sampled_vocab":  # each row one of the first 5000 (all 64) embeddings, none twice
    rows = [[int(np.flatnonzero((EMBEDDINGS == row).all(1))[0]) for row in prompt] for prompt in table]
    assert all(len(set(r)) == P for r in rows), rows
  elif name == "class_labels":
    np.testing.assert_allclose(table[0, :2], [EMBEDDINGS[7], EMBEDDINGS[5:7].mean(0)], rtol=1e-6)
    np.testing.assert_allclose(table[1, :2], [EMBEDDINGS[9:12].mean(0), EMBEDDINGS[13]], rtol=1e-6)
  else:
    np.testing.assert_array_equal(table, np.arange(2 * P * H, dtype=np.float32).reshape(2, P, H))


@pytest.mark.parametrize("name,reference", [("random_uniform", "RandomUniform"), ("sampled_vocab", "SampledVocab"),
                                            ("class_labels", "ClassLabels"), ("file", "FromFile")])
def test_a_name_and_a_gin_reference_start_from_the_same_prompts(monkeypatch, run_files, name, reference):
  by_name, table = _started(monkeypatch, [*run_files, f"PROMPT_INIT = '{name}'"])
  by_reference, same = _started(monkeypatch, [*run_files, f"PROMPT_INIT = @prompt_init.{reference}()"])
  np.testing.assert_array_equal(table, same)
  _expected(name, table)
  expected = {"method": name, **RECORD, **({"file": run_files[-1].split("'")[1]} if name == "file" else {})}
  assert by_name.record() == by_reference.record() == expected  # the export manifest's prompt_init


def test_a_reference_takes_its_own_bindings_and_a_name_the_class_bindings(monkeypatch, run_files):
  """With a population of 1, every row is the embedding of token 0 (sampled with replacement)."""
  first = np.broadcast_to(EMBEDDINGS[0], (2, P, H))
  one, scoped_one = "prompt_init.SampledVocab.population_size = 1", "small/prompt_init.SampledVocab.population_size = 1"
  for bindings in (["PROMPT_INIT = @small/prompt_init.SampledVocab()", scoped_one],
                   ["PROMPT_INIT = @prompt_init.SampledVocab()", one], ["PROMPT_INIT = 'sampled_vocab'", one]):
    init, table = _started(monkeypatch, [*run_files, *bindings])
    np.testing.assert_array_equal(table, first)
    assert init.record() == {"method": "sampled_vocab", **RECORD, "population_size": 1}
  init, table = _started(monkeypatch, [*run_files, "PROMPT_INIT = 'sampled_vocab'", scoped_one])  # another scope
  assert init.record()["population_size"] == 5000 and not np.array_equal(table, first)


def test_class_labels_from_data_and_a_prompt_export_by_source_name(tmp_path):
  data = SourceExamples(["a", "b"], [Example(0, [3], [7, 1]), Example(0, [3], [5, 6, 1]),
                                     Example(0, [4], [7, 1]), Example(1, [3], [9, 1])])
  table = EMBEDDINGS[:20, :4]
  assert prompt_init.most_frequent_targets(data, 0, 5) == [[7], [5, 6]]
  init = prompt_init.ClassLabels().initializers(table, data, length=3)
  prompt_a = np.asarray(init(0)(jax.random.PRNGKey(0), (3, 4)))
  np.testing.assert_allclose(prompt_a[0], table[7])
  np.testing.assert_allclose(prompt_a[1], (table[5] + table[6]) / 2)
  np.testing.assert_allclose(np.asarray(init(1)(jax.random.PRNGKey(0), (3, 4)))[0], table[9])
  exported = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
  export.export_prompts(str(tmp_path / "ex"), exported[::-1], ["b", "a"], 1, backbone_fingerprint="f",
                        seeds=[0, 0], source_steps=[1, 1])
  from_export = prompt_init.FromFile(file=str(tmp_path / "ex")).initializers(table, data, 3)
  np.testing.assert_array_equal(np.asarray(from_export(0)(None, (3, 4))), exported[0])  # by name, not row


def test_a_prompt_file_or_export_table_folder_at_a_url_starts_the_prompts_its_local_copy_does(
    object_store, tmp_path, monkeypatch):
  """prompt_init.FromFile.file at a URL (gs://) is read through its checked local copy: an export's table
  folder with the per-source files beside it, a .npy alone."""
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  data = SourceExamples(["a", "b"], [Example(0, [3], [7, 1]), Example(1, [3], [9, 1])])
  exported = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
  export.export_prompts(str(tmp_path / "ex"), exported[::-1], ["b", "a"], 1, backbone_fingerprint="f",
                        seeds=[0, 0], source_steps=[1, 1])
  np.save(tmp_path / "one.npy", exported[1])
  for path in [tmp_path / "one.npy", *(tmp_path / "ex").rglob("*")]:
    if path.is_file():
      object_store.pipe_file(f"gs://data/{path.relative_to(tmp_path)}", path.read_bytes())
  for given, row in (("ex/checkpoint_1", 0), ("ex", 0), ("one.npy", 1)):
    init = prompt_init.FromFile(file=f"gs://data/{given}").initializers(EMBEDDINGS[:20, :4], data, 3)
    np.testing.assert_array_equal(np.asarray(init(0)(jax.random.PRNGKey(0), (3, 4))), exported[row], given)


@pytest.mark.parametrize("make,message", [
    (lambda: prompt_init.resolve(["sampled_vocab"]), "prompt_init (PROMPT_INIT) must be one of 'random_uniform', "
     "'sampled_vocab', 'class_labels', 'file', or a gin reference such as @prompt_init.SampledVocab(), not "
     "['sampled_vocab']."),
    (lambda: prompt_init.RandomUniform(scale=0), "scale (prompt_init.RandomUniform.scale) must be a finite number "
     "> 0, not 0."),
    (lambda: prompt_init.SampledVocab(population_size=0), "population_size (prompt_init.SampledVocab.population_size) "
     "must be an integer >= 1, not 0."),
    (prompt_init.FromFile, "file (prompt_init.FromFile.file) must be a string, not None."),
    (lambda: prompt_init.ClassLabels(labels=["yes", "no"]), "prompt_init.ClassLabels.labels are texts: bind "
     "prompt_init.ClassLabels.vocabulary to the SentencePiece model that tokenizes them."),
])
def test_bad_settings_are_refused_naming_their_binding(make, message):
  with pytest.raises(ValueError) as refused:
    make()
  assert str(refused.value).splitlines()[0] == message  # then gin's note on the configurable called


def test_an_unknown_name_is_one_line_naming_prompt_init(tmp_path, run_files):
  """`rospr train-prompts` as a user runs it: exit code 2, one line, nothing written."""
  flags = [f"--gin.{binding.replace(' = ', '=')}" for binding in run_files[:4]]
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "train-prompts", f"--gin_search_paths={GIN_DIR}",
                         "--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin", *flags,
                         "--gin.PROMPT_INIT='sampled_vocabulary'"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 2 and done.stderr == (
      "rospr train-prompts: error: prompt_init (PROMPT_INIT) must be one of 'random_uniform', 'sampled_vocab', "
      "'class_labels', 'file', or a gin reference such as @prompt_init.SampledVocab(), not "
      "'sampled_vocabulary'.\n"), done.stderr[-3000:]
  assert not (tmp_path / "run").exists()

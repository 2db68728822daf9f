"""`rospr evaluate` end to end: gin run file, a Hugging Face checkpoint on disk, a library built by
`build_library`, a generated held-out target; what it writes; and multi-host runs writing from one process."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from rospr_jax import cli, tokenization
from rospr_jax.library import build, embed, sources as sources_lib
from rospr_jax.model import get_config, init_params, save_hf

TARGET = "generated_animal_truefalse_f0"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_model):
  """(checkpoint dir, library dir, vocabulary path): a tiny random T5 and a 2-source library."""
  root = tmp_path_factory.mktemp("evaluate_cli")
  vocab, checkpoint, config = tiny_model.vocab, tiny_model.checkpoint, tiny_model.config
  tokenizer = tokenization.Tokenizer(vocab)
  embedder = embed.load_embedder(checkpoint, max_length=64)
  rng = np.random.default_rng(0)
  sources = [sources_lib.SourceTexts(name, [" ".join(rng.permutation(text.split())) for _ in range(6)])
             for name, text in [("code", "def return print for while loop list if else python"),
                                ("talk", "hello how are you today fine thanks and you friend")]]
  prompts = rng.normal(size=(2, 3, config.emb_dim)).astype(np.float32)
  build.build_library(str(root / "library"), sources, prompts, embedder, tokenizer.encode_input,
                      draw=build.DrawConfig(6), index=build.IndexConfig("exact"))
  return checkpoint, str(root / "library"), vocab


def _evaluate(artifacts, output_dir) -> int:
  checkpoint, library, vocab = artifacts
  return cli.main(["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
                   f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{output_dir}'",
                   f"--gin.LIBRARY_DIR='{library}'", f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'",
                   f"--gin.VOCABULARY='{vocab}'", f"--gin.TARGETS=['{TARGET}']", "--gin.MAX_EXAMPLES=6",
                   "--gin.NUM_QUERIES=4", "--gin.NUM_NEIGHBORS=3", "--gin.NUM_PROMPTS=2", "--gin.TOP_K=3",
                   "--gin.BATCH_SIZE=4"])


def test_evaluate_writes_the_report_the_selections_and_the_operative_config(artifacts, tmp_path, capsys):
  out = tmp_path / "eval"
  assert _evaluate(artifacts, out) == 0
  captured = capsys.readouterr()
  printed = captured.out
  assert f"{TARGET} VAR: 100%" in captured.err  # a progress bar per (target, method)
  results = json.loads((out / "results.json").read_text())
  methods = ["T0", "RoSPr", "INTER", "VAR", "INTER+VAR"]
  assert results["summary"]["methods"] == methods
  (row,) = [r for r in results["per_template"] if r["method"] == "T0"]
  assert row["target"] == TARGET and row["examples"] == 6  # MAX_EXAMPLES reached the sampler
  assert abs(row["accuracy"] * 6 - round(row["accuracy"] * 6)) < 1e-9  # a share of the 6, no padding
  assert results["checkpoint"] == artifacts[0] and results["library"] == artifacts[1]
  for method in methods:
    accuracy = results["summary"]["average_mean"][method]
    assert f"{method}: average accuracy {100 * accuracy:.2f}%" in printed
  frequencies = results["retrieval_frequencies"][TARGET]
  assert set(frequencies) <= {"code", "talk"}
  assert sum(frequencies.values()) == 4 * 3  # NUM_QUERIES x NUM_NEIGHBORS
  selections = sorted(p.name for p in (out / "selections").iterdir())
  assert len(selections) == 1 and len(list((out / "selections" / selections[0]).iterdir())) == 4
  for name in ("results.md", "accuracy.png", "retrieval.png", "config.gin"):
    assert (out / name).stat().st_size > 0, name
  assert "| RoSPr |" in (out / "results.md").read_text()
  assert f"TARGETS = ['{TARGET}']" in (out / "config.gin").read_text()


def test_on_several_hosts_only_process_zero_writes(artifacts, tmp_path, monkeypatch, capsys):
  """Every process scores (the mesh spans all hosts), so every one runs the evaluation; process 0
  alone writes, so hosts sharing a mounted bucket never race on the same files."""
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  out = tmp_path / "eval"
  assert _evaluate(artifacts, out) == 0
  assert "RoSPr: average accuracy" in capsys.readouterr().out
  assert not out.exists() or not any(out.iterdir())


def test_a_checkpoint_smaller_than_the_vocabulary_is_refused(artifacts, tmp_path, capsys):
  """Token ids past the embedding table would score as NaN; the run stops before scoring."""
  small = str(tmp_path / "small")
  config = get_config("tiny")  # 512 embeddings; the vocabulary has 3,000 pieces
  save_hf(small, config, init_params(config, jax.random.PRNGKey(0)))
  assert _evaluate((small, *artifacts[1:]), tmp_path / "eval") == 2
  assert f"has 2000 pieces; the checkpoint {small} has 512 embeddings" in capsys.readouterr().err


def test_a_held_out_dataset_is_read_from_data_dir_and_scored(artifacts, tmp_path, object_store):
  """The paper's targets: a promptsource template over the dataset's JSONL split under DATA_DIR."""
  checkpoint, _, vocab = artifacts
  split = tmp_path / "data" / "super_glue" / "rte" / "validation.jsonl"
  split.parent.mkdir(parents=True)
  rows = [{"premise": f"The cat {i} sat on the mat.", "hypothesis": "A cat sat.", "idx": i, "label": i % 2}
          for i in range(5)]
  split.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "eval"
  assert cli.main(["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/held_out_targets.gin", f"--gin.CHECKPOINT='{checkpoint}'",
                   f"--gin.OUTPUT_DIR='{out}'", f"--gin.VOCABULARY='{vocab}'", "--gin.METHODS=['T0']",
                   "--gin.TARGETS=['super_glue_rte_GPT_3_style']", f"--gin.DATA_DIR='{tmp_path / 'data'}'",
                   "--gin.BATCH_SIZE=8"]) == 0
  (row,) = json.loads((out / "results.json").read_text())["per_template"]
  assert (row["dataset"], row["template"], row["examples"]) == ("super_glue/rte", "GPT-3 style", 5)
  assert abs(row["accuracy"] * 5 - round(row["accuracy"] * 5)) < 1e-9
  # DATA_DIR at a URL: the split's object is read from a local copy, scored alike.
  object_store.put_file(str(split), "gs://data-bucket/p3/super_glue/rte/validation.jsonl")
  assert cli.main(["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/held_out_targets.gin",
                   f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{tmp_path / 'eval_url'}'",
                   f"--gin.VOCABULARY='{vocab}'", "--gin.METHODS=['T0']",
                   "--gin.TARGETS=['super_glue_rte_GPT_3_style']", "--gin.DATA_DIR='gs://data-bucket/p3'",
                   "--gin.BATCH_SIZE=8"]) == 0
  (at_url,) = json.loads((tmp_path / "eval_url" / "results.json").read_text())["per_template"]
  assert at_url == row


def test_a_rerun_into_the_same_folder_resumes_and_other_settings_are_refused(artifacts, tmp_path, capsys):
  out = tmp_path / "eval"
  assert _evaluate(artifacts, out) == 0
  first = json.loads((out / "results.json").read_text())
  assert len(list((out / "records").rglob("*.json"))) == 5  # one per method
  capsys.readouterr()
  assert _evaluate(artifacts, out) == 0
  err = capsys.readouterr().err
  assert err.count("(resumed)") == 5  # the log lines, each saying which target of how many
  assert err.count(f"target 1 of 1: {TARGET} ") == 5
  again = json.loads((out / "results.json").read_text())
  assert again["per_template"] == first["per_template"] and again["selections"] == first["selections"]
  checkpoint, library, vocab = artifacts
  capsys.readouterr()
  assert cli.main(["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin", f"--gin.CHECKPOINT='{checkpoint}'",
                   f"--gin.OUTPUT_DIR='{out}'", f"--gin.VOCABULARY='{vocab}'", f"--gin.TARGETS=['{TARGET}']",
                   "--gin.METHODS=['T0']", "--gin.MAX_EXAMPLES=5"]) == 2
  assert "holds records scored with other settings ({'max_examples': (6, 5)" in capsys.readouterr().err


def test_an_output_dir_at_a_url_matches_a_local_one_and_resumes_on_a_fresh_machine(artifacts, tmp_path,
                                                                                   object_store, monkeypatch,
                                                                                   capsys):
  """OUTPUT_DIR, LIBRARY_DIR, CHECKPOINT and VOCABULARY on an object store: each record is written
  there as it is scored, and a rerun on a machine with nothing local resumes from the URL and writes
  the report a local run writes."""
  from rospr_jax.pipeline import methods as methods_lib
  assert _evaluate(artifacts, tmp_path / "local") == 0
  local = json.loads((tmp_path / "local" / "results.json").read_text())
  checkpoint, library, vocab = artifacts
  for source, url in ((library, "gs://evaluate-bucket/library"), (checkpoint, "gs://evaluate-bucket/t0")):
    object_store.put(str(source), url, recursive=True)  # as gsutil copies a folder
  object_store.put_file(vocab, "gs://evaluate-bucket/spiece.model")
  at_urls = ("gs://evaluate-bucket/t0", "gs://evaluate-bucket/library", "gs://evaluate-bucket/spiece.model")
  url = "gs://evaluate-bucket/eval"
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "machine1"))
  real, calls = methods_lib.accuracy_of, []

  def preempted_at_the_third_record(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise ValueError("simulated preemption")
    return real(*args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(methods_lib, "accuracy_of", preempted_at_the_third_record)  # the methods' scoring
    assert _evaluate(at_urls, url) == 2
  assert "simulated preemption" in capsys.readouterr().err
  assert sorted(p.split("eval/", 1)[1] for p in object_store.find(f"{url}/records")) == [
      f"records/{TARGET}/RoSPr.json", f"records/{TARGET}/T0.json"]
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "machine2"))
  assert _evaluate(at_urls, url) == 0  # the run settings name the URLs, not this machine's copies
  assert capsys.readouterr().err.count("(resumed)") == 2
  again = json.loads(object_store.cat_file(f"{url}/results.json"))
  assert again["per_template"] == local["per_template"]
  for method, chosen in again["selections"][TARGET].items():  # they name the library they read
    assert chosen["params"].pop("library") == "gs://evaluate-bucket/library", method
    local["selections"][TARGET][method]["params"].pop("library")
  assert again["selections"] == local["selections"]
  assert again["library"] == "gs://evaluate-bucket/library"
  assert again["checkpoint"] == "gs://evaluate-bucket/t0"
  assert json.loads(object_store.cat_file(f"{url}/run.json"))["vocabulary"] == at_urls[2]
  for name in ("results.md", "accuracy.png", "retrieval.png", "config.gin", "run.json"):
    assert object_store.size(f"{url}/{name}") > 0, name


def test_evaluate_refuses_a_scoring_step_over_the_device_memory(artifacts, tmp_path, capsys, monkeypatch):
  """On an accelerator (faked: its bytes_limit 1 MiB) the scoring step is compiled before it first runs
  and refused in one line naming BATCH_SIZE and NUM_PARTITIONS, exit 2 (`model.memory_check`)."""
  from rospr_jax.model import memory_check  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(memory_check, "accelerator_memory", lambda: (2**20, "a faked device"))
  assert _evaluate(artifacts, tmp_path / "eval") == 2
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line.startswith("rospr evaluate: error: A scoring batch (8 rows of ")  # BATCH_SIZE 4 over 8 devices
  assert line.endswith("of a faked device; lower BATCH_SIZE (4) or raise NUM_PARTITIONS (1) (`rospr plan` tries them).")
  assert not (tmp_path / "eval" / "results.json").exists()

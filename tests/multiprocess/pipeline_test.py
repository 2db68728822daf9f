"""The long commands as 2 real JAX processes (2 CPU devices each) against the same command as one
process with 4 devices: train-prompts, build-library, retrieve --rule var and evaluate give the same
prompts, library, selection and records; process 0 alone writes them. The 2-process train-prompts,
build-library and evaluate write to and read from URLs (file://, fsspec's local driver used as an
object store, which both processes see), the 1-process ones local folders."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from mp_workers import load_test_module

from rospr_jax import storage
from rospr_jax.library import store
from rospr_jax.prompt import export

pytestmark = pytest.mark.slow

train_cli = load_test_module("prompt/train_cli_test.py")  # its examples file and tiny run flags
TARGET = "generated_animal_truefalse_f0"  # as tests/eval/evaluate_cli_test.py
TEXTS = {"alpha": "def return print for while loop list if else python",
         "beta": "hello how are you today fine thanks and you friend",
         "gamma": "the cat sat on the mat and the dog ran in the park"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
  """A tiny random T5 (Hugging Face files, the offline vocabulary as spiece.model), training
  examples of 3 sources, their instance texts, and VAR's queries with answer choices."""
  root = tmp_path_factory.mktemp("world")
  vocab, checkpoint = tiny_model.vocab, pathlib.Path(tiny_model.checkpoint)
  train_cli._write_examples(root / "examples.jsonl")
  rng = np.random.default_rng(0)
  (root / "instances.jsonl").write_text("".join(
      json.dumps({"source": name, "text": " ".join(rng.permutation(text.split()))}) + "\n"
      for name, text in TEXTS.items() for _ in range(6)))
  (root / "queries.jsonl").write_text("".join(
      json.dumps({"text": text, "choices": ["yes", "no", "maybe"]}) + "\n"
      for text in ["print the list in python", "how are you my friend", "the dog in the park",
                   "while loop if else", "fine thanks"]))
  return {"root": root, "checkpoint": str(checkpoint), "vocab": vocab}


def _same_command(rospr, argv_for, timeout=240):
  """Runs `argv_for(tag)` as 2 processes and as 1; returns the workers of each."""
  two = rospr.run(argv_for("two"), processes=2, devices=2, timeout=timeout)
  one = rospr.run(argv_for("one"), processes=1, devices=4, timeout=timeout)
  return two, one


@pytest.fixture(scope="module")
def trained(world, rospr, tmp_path_factory):
  """4 steps as 1 process into a local MODEL_DIR, and as 2 processes into a file:// URL in two
  segments: 2 steps, then the rest resumed from what the URL holds on a "fresh machine" (an empty
  $ROSPR_REMOTE_CACHE)."""
  root = world["root"]
  url = f"file://{root}/bucket/prompts_two"

  def argv(model_dir, steps):
    flags = train_cli._argv(root / "examples.jsonl", model_dir, steps, 2)
    flags[0] = "--gin_file=models/checkpoint.gin"
    # A small learning rate: Adafactor's normalized steps would magnify the last-bit differences of
    # summing gradients over 2 processes rather than 4 devices of one.
    return ["train-prompts", *flags, f"--gin.CHECKPOINT='{world['checkpoint']}'", "--gin.LEARNING_RATE=0.01"]

  first = rospr.run(argv(url, 2), processes=2, devices=2)
  resumed = rospr.run(argv(url, 4), processes=2, devices=2,
                      ROSPR_REMOTE_CACHE=str(tmp_path_factory.mktemp("fresh_machine")))
  one = rospr.run(argv(root / "prompts_one", 4), processes=1, devices=4)
  return {"two": root / "bucket" / "prompts_two" / "export", "two_url": f"{url}/export",
          "one": root / "prompts_one" / "export", "workers": (first, resumed, one)}


@pytest.fixture(scope="module")
def libraries(world, rospr, trained):
  root = world["root"]

  def argv(tag):
    out = f"file://{root}/bucket/library_two" if tag == "two" else root / "library_one"
    return ["build-library", "--out", out, "--prompts", trained["two_url"],
            "--instances", root / "instances.jsonl", "--retriever", world["checkpoint"],
            "--vocab", world["vocab"], "--n", "5", "--index", "exact", "--max-length", "32"]

  two, one = _same_command(rospr, argv)
  return {"two": root / "bucket" / "library_two", "two_url": f"file://{root}/bucket/library_two",
          "one": root / "library_one", "workers": (two, one)}


def test_train_prompts_on_two_processes_trains_the_prompts_of_one(trained):
  """Resumed on 2 processes from a URL (process 0 reads the checkpoint, the other receives it), the
  prompts are those of one uninterrupted process."""
  two, one = (export.load_prompts(str(trained[tag])) for tag in ("two", "one"))
  assert two.names == one.names == ["alpha", "beta", "gamma"] and two.step == one.step == 4
  np.testing.assert_allclose(two.prompts, one.prompts, rtol=0, atol=1e-6)
  first = export.load_prompts(str(trained["two"] / "checkpoint_2"))
  assert np.abs(two.prompts - first.prompts).max() > 1e-3  # they did train
  assert [s["steps"] for s in two.manifest["sources"]] == [s["steps"] for s in one.manifest["sources"]]
  first_run, resumed, _ = trained["workers"]
  for worker in resumed:
    assert f"Resuming from checkpoint 2 in {trained['two'].parent / 'checkpoints'}" in worker.err  # file:// is local
  assert all("Trained 3 prompts for 2 steps" in w.out for w in first_run), first_run[0].out
  assert (trained["two"].parent / "checkpoints" / "4").is_dir()  # orbax wrote it in place


def test_build_library_on_two_processes_builds_the_library_of_one(libraries):
  two, one = (store.Library.open(str(libraries[tag])) for tag in ("two", "one"))
  assert two.source_names == one.source_names and two.num_rows == one.num_rows == 15
  assert list(two.texts()) == list(one.texts())
  np.testing.assert_array_equal(two.source_ids(), one.source_ids())
  np.testing.assert_allclose(np.concatenate(two.embedding_shards()), np.concatenate(one.embedding_shards()),
                             rtol=0, atol=1e-6)
  np.testing.assert_array_equal(two.prompts(), one.prompts())
  worker0, worker1 = libraries["workers"][0]
  assert json.loads(worker0.out.splitlines()[-1])["rows"] == 15
  assert "process 1 of 2 did its share; process 0 wrote the library" in worker1.out
  assert (libraries["two"] / storage.MANIFEST).is_file()  # committed at its URL


def test_retrieve_var_on_two_processes_selects_as_one(world, rospr, libraries):
  root = world["root"]

  def argv(tag):
    return ["retrieve", "--library", libraries["two"], "--queries", root / "queries.jsonl",
            "--out", root / f"selection_{tag}", "--rule", "var", "--backbone", world["checkpoint"],
            "--retriever", world["checkpoint"], "--vocab", world["vocab"], "--num-queries", "4",
            "--num-neighbors", "3", "--top-k", "3", "--batch-size", "4", "--max-length", "32"]

  (worker0, worker1), (single,) = _same_command(rospr, argv)
  two, one = (json.loads((root / f"selection_{tag}" / "selection.json").read_text()) for tag in ("two", "one"))
  for key in ("rule", "candidates", "freqs", "chosen", "weights", "names", "variances"):
    assert two[key] == one[key], key
  np.testing.assert_allclose(two["scores"], one["scores"], rtol=1e-6)
  np.testing.assert_array_equal(np.load(root / "selection_two" / "prompt.npy"),
                                np.load(root / "selection_one" / "prompt.npy"))
  assert json.loads(worker0.out.splitlines()[-1])["chosen"] == json.loads(single.out.splitlines()[-1])["chosen"]
  assert "process 1 of 2 did its share; process 0 wrote the selection" in worker1.out


def test_evaluate_on_two_processes_scores_as_one(world, rospr, libraries):
  root = world["root"]
  checkpoint = world["checkpoint"]

  def argv(tag):  # 2 processes: the library and OUTPUT_DIR at URLs
    output = f"file://{root}/bucket/eval_two" if tag == "two" else root / "eval_one"
    library = libraries["two_url"] if tag == "two" else libraries["two"]
    return ["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
            f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{output}'",
            f"--gin.LIBRARY_DIR='{library}'", f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'",
            f"--gin.TARGETS=['{TARGET}']", "--gin.METHODS=['T0', 'RoSPr', 'VAR', 'INTER+VAR']",
            "--gin.MAX_EXAMPLES=6", "--gin.NUM_QUERIES=4", "--gin.NUM_NEIGHBORS=3", "--gin.NUM_PROMPTS=2",
            "--gin.TOP_K=3", "--gin.BATCH_SIZE=4"]

  two_workers, (single,) = _same_command(rospr, argv)
  folders = {"two": root / "bucket" / "eval_two", "one": root / "eval_one"}
  two, one = (json.loads((folders[tag] / "results.json").read_text()) for tag in ("two", "one"))
  assert two["per_template"] == one["per_template"]
  for method, chosen in two["selections"][TARGET].items():  # each names the library it read
    assert chosen["params"].pop("library") == str(libraries["two"]), method  # file:// is local
    one["selections"][TARGET][method]["params"].pop("library")
  assert two["selections"] == one["selections"]
  assert [r["method"] for r in two["per_template"]] == ["T0", "RoSPr", "VAR", "INTER+VAR"]
  records = sorted(p.relative_to(folders["two"]) for p in (folders["two"] / "records").rglob("*.json"))
  assert len(records) == 4
  for record in records:
    assert json.loads((folders["two"] / record).read_text()) == json.loads((folders["one"] / record).read_text())
  for worker in two_workers:
    assert worker.out.splitlines()[-4:] == single.out.splitlines()[-4:]  # every process reports


def test_score_on_two_processes_prints_the_scores_of_one(world, rospr):
  argv = ["score", "--checkpoint", world["checkpoint"], "--input", "print the list", "--choice", "yes",
          "--choice", "no"]
  two, one = _same_command(rospr, lambda tag: argv, timeout=120)
  results = [json.loads(w.out.splitlines()[-1]) for w in two + one]
  assert results[0] == results[1] == results[2] and results[0]["choices"] == ["yes", "no"]

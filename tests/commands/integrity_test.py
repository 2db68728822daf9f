"""No stale, NaN or foreign result is reported (issue 14): each case through the `rospr` command where
a user meets it, with the message asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cli_runner import run_rospr
from rospr_jax import cli, tokenization
from rospr_jax.data import vocabulary
from rospr_jax.model import get_config, init_params, save_hf
from rospr_jax.model.t5x_checkpoint import flatten, unflatten
from rospr_jax.prompt import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTE = "super_glue_rte_GPT_3_style"


def _save(path, seed=0, poison=False):
  vocab = vocabulary.offline_vocabulary_path()
  config = get_config("tiny", vocab_size=-(-tokenization.Tokenizer(vocab).vocab_size // 128) * 128)
  params = jax.tree.map(np.asarray, init_params(config, jax.random.PRNGKey(seed)))
  if poison:  # one NaN weight in the middle of the encoder
    flat = flatten(params)
    flat["encoder/layers_0/mlp/wo/kernel"] = flat["encoder/layers_0/mlp/wo/kernel"].copy()
    flat["encoder/layers_0/mlp/wo/kernel"][3, 5] = np.nan
    params = unflatten(flat)
  save_hf(str(path), config, params)
  (path / "spiece.model").write_bytes(open(vocab, "rb").read())
  return str(path), config


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("integrity")
  checkpoint, config = _save(root / "t0")
  data = root / "data" / "super_glue" / "rte"
  data.mkdir(parents=True)
  rows = [{"premise": f"The cat {i} sat on the mat.", "hypothesis": "A cat sat.", "idx": i, "label": i % 2}
          for i in range(6)]
  (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return root, checkpoint, config


def _evaluate_argv(checkpoint, out, data_dir, *extra):
  return ["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/held_out_targets.gin",
          f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{out}'", "--gin.METHODS=['T0']",
          f"--gin.TARGETS=['{RTE}']", f"--gin.DATA_DIR='{data_dir}'", "--gin.BATCH_SIZE=8", *extra]


def test_changed_target_data_is_never_resumed(world, tmp_path):
  root, checkpoint, _ = world
  data = tmp_path / "data"
  (data / "super_glue" / "rte").mkdir(parents=True)
  split = data / "super_glue" / "rte" / "validation.jsonl"
  split.write_text((root / "data" / "super_glue" / "rte" / "validation.jsonl").read_text())
  out = tmp_path / "eval"
  assert cli.main(_evaluate_argv(checkpoint, out, data)) == 0
  rows = [json.loads(line) for line in split.read_text().splitlines()]
  split.write_text("".join(json.dumps({**r, "label": 1 - r["label"]}) + "\n" for r in rows))  # flip all
  command = [sys.executable, "-m", "rospr_jax.cli", *_evaluate_argv(checkpoint, out, data)]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert f"was scored on other examples of {RTE}" in done.stderr
  assert "the target data changed" in done.stderr


def test_records_without_their_run_file_and_corrupt_records_are_refused_by_name(world, tmp_path, capsys):
  root, checkpoint, _ = world
  out = tmp_path / "eval"
  assert cli.main(_evaluate_argv(checkpoint, out, root / "data")) == 0
  (out / "run.json").unlink()
  capsys.readouterr()
  assert cli.main(_evaluate_argv(checkpoint, out, root / "data")) == 2
  assert "holds records but no run.json" in capsys.readouterr().err
  assert cli.main(_evaluate_argv(checkpoint, tmp_path / "fresh", root / "data")) == 0
  (record,) = (tmp_path / "fresh" / "records").rglob("*.json")
  record.write_text('{"accuracy": 1.5')
  capsys.readouterr()
  assert cli.main(_evaluate_argv(checkpoint, tmp_path / "fresh", root / "data")) == 2
  assert f"Record {record} is unreadable" in capsys.readouterr().err
  record.write_text(json.dumps({"accuracy": 1.5}))
  assert cli.main(_evaluate_argv(checkpoint, tmp_path / "fresh", root / "data")) == 2
  assert "holds accuracy 1.5, outside [0, 1]" in capsys.readouterr().err


def test_a_nan_weight_stops_the_evaluation_and_the_score_command(world, tmp_path, capsys):
  root, _, _ = world
  poisoned, _ = _save(tmp_path / "nan", poison=True)
  assert cli.main(_evaluate_argv(poisoned, tmp_path / "eval", root / "data")) == 1
  err = capsys.readouterr().err
  assert f"{RTE} T0: " in err and " of 6 examples have NaN or infinite choice scores" in err
  assert not (tmp_path / "eval" / "results.json").exists()
  assert cli.main(["score", "--checkpoint", poisoned, "--input", "x", "--choice", "a", "--choice", "b"]) == 2
  captured = capsys.readouterr()
  assert captured.out == "" and "holds NaN or infinite weights" in captured.err


def test_non_finite_prompts_never_become_a_library(world, tmp_path, capsys):
  _, checkpoint, config = world
  table = np.zeros((2, 3, config.emb_dim), np.float32)
  table[1] = np.nan
  np.save(tmp_path / "prompts.npy", table)
  (tmp_path / "a.jsonl").write_text(json.dumps({"text": "hello there"}) + "\n")
  (tmp_path / "b.jsonl").write_text(json.dumps({"text": "print the list"}) + "\n")
  assert cli.main(["build-library", "--out", str(tmp_path / "lib"), "--prompts", str(tmp_path / "prompts.npy"),
                   "--source", f"a={tmp_path / 'a.jsonl'}", "--source", f"b={tmp_path / 'b.jsonl'}",
                   "--retriever", checkpoint, "--vocab", os.path.join(checkpoint, "spiece.model"),
                   "--index", "exact"]) == 2
  assert "The prompts of 1 sources hold NaN or infinite values: ['b']" in capsys.readouterr().err
  assert not (tmp_path / "lib").exists()


def test_prompts_of_another_backbone_are_refused_before_anything_is_scored(world, tmp_path, capsys):
  root, checkpoint, config = world
  other, _ = _save(tmp_path / "other", seed=1)
  table = np.random.default_rng(0).normal(size=(2, 3, config.emb_dim)).astype(np.float32)
  from rospr_jax.model import checkpoint_fingerprint
  export.export_prompts(str(tmp_path / "export"), table, ["a", "b"], 1,
                        backbone_fingerprint=checkpoint_fingerprint(other), seeds=[0, 0], source_steps=[1, 1])
  (tmp_path / "all.jsonl").write_text("".join(json.dumps({"source": s, "text": t}) + "\n"
                                              for s, t in [("a", "the cat sat"), ("b", "a dog ran")]))
  assert cli.main(["build-library", "--out", str(tmp_path / "lib"), "--prompts", str(tmp_path / "export"),
                   "--instances", str(tmp_path / "all.jsonl"), "--retriever", checkpoint,
                   "--vocab", os.path.join(checkpoint, "spiece.model"), "--index", "exact"]) == 0
  capsys.readouterr()
  argv = _evaluate_argv(checkpoint, tmp_path / "eval", root / "data", f"--gin.LIBRARY_DIR='{tmp_path / 'lib'}'",
                        f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'", "--gin.METHODS=['T0', 'RoSPr']")
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert f"holds prompts trained on backbone {checkpoint_fingerprint(other)}" in err
  assert f"this run's backbone is {checkpoint_fingerprint(checkpoint)}" in err
  assert not (tmp_path / "eval" / "records").exists()  # refused before the T0 row was scored


def test_meaningless_evaluation_settings_are_refused_before_the_backbone_loads(world, tmp_path, capsys):
  root, checkpoint, _ = world
  for flag, says in {"--gin.MAX_EXAMPLES=0": "max_examples (MAX_EXAMPLES) must be None or an integer >= 1, not 0.",
                     "--gin.BATCH_SIZE=0": "batch_size (BATCH_SIZE) must be an integer >= 1, not 0."}.items():
    assert cli.main(_evaluate_argv(checkpoint, tmp_path / "eval", root / "data", flag)) == 2
    assert capsys.readouterr().err == f"rospr evaluate: error: {says}\n"
  assert not (tmp_path / "eval").exists()


def test_a_second_evaluation_into_a_folder_in_use_is_refused(world, tmp_path, capsys):
  root, checkpoint, _ = world
  out = tmp_path / "eval"
  holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rospr_jax import storage\n"
                             f"with storage.run_lock({str(out)!r}, 'evaluate', 'OUTPUT_DIR'):\n"
                             "  print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    assert cli.main(_evaluate_argv(checkpoint, out, root / "data")) == 2
    assert f"{out} is in use by evaluate (pid {holder.pid}" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == [".rospr.lock", ".rospr.lock.json", ".rospr_run.json"]  # the holder's
  finally:
    holder.kill()  # -9: its lock goes with it
    holder.wait()
  assert cli.main(_evaluate_argv(checkpoint, out, root / "data")) == 0


def test_an_edited_record_is_refused_by_name_and_left_as_it_is(world, tmp_path, capsys):
  root, checkpoint, _ = world
  out = tmp_path / "eval"
  assert cli.main(_evaluate_argv(checkpoint, out, root / "data")) == 0
  (path,) = (out / "records").rglob("*.json")
  good = json.loads(path.read_text())
  assert good["examples"] == 6 and good["accuracy"] == good["correct"] / 6
  assert len(good["predictions"]) == 6 and len(good["predictions_sha256"]) == 64

  def refused(record, says, subprocess_=False):
    path.write_text(json.dumps(record))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = run_rospr(_evaluate_argv(checkpoint, out, root / "data"), capsys, in_subprocess=subprocess_)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    (line,) = [l for l in err.splitlines() if l.startswith("rospr evaluate: error: ")]
    assert line.startswith(f"rospr evaluate: error: Record {path} ") and says in line, line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing rewritten

  refused({**good, "accuracy": 0.93}, f"holds accuracy 0.93, not its {good['correct']} correct of 6 examples",
          subprocess_=True)
  flipped = [1 - p for p in good["predictions"][:1]] + good["predictions"][1:]
  refused({**good, "predictions": flipped}, "holds predictions whose sha256 is")
  refused({**good, "correct": good["correct"] + 1}, f"counts {good['correct'] + 1} correct examples")
  refused({k: v for k, v in good.items() if k != "predictions"}, "does not hold one choice index per example")
  path.write_text(json.dumps(good))
  assert cli.main(_evaluate_argv(checkpoint, out, root / "data")) == 0  # the intact record is resumed
  (resumed,) = json.loads((out / "results.json").read_text())["per_template"]
  assert resumed["accuracy"] == good["accuracy"] and resumed["correct"] == good["correct"]


def test_an_edited_selection_is_refused_by_its_record(world, tmp_path, capsys):
  """Was: INTER's weights edited in selection.json were resumed and copied into results.json. A record
  of a retrieval method carries the sha256 of the selection it was scored with."""
  from rospr_jax.library import build, embed, sources as sources_lib
  root, checkpoint, config = world
  embedder = embed.load_embedder(checkpoint, max_length=32)
  sources = [sources_lib.SourceTexts(name, [f"{name} sat on the mat {i}" for i in range(3)])
             for name in ("a", "b", "c")]
  prompts = np.random.default_rng(0).normal(size=(3, 2, config.emb_dim)).astype(np.float32)
  build.build_library(str(tmp_path / "library"), sources, prompts, embedder,
                      tokenization.Tokenizer(vocabulary.offline_vocabulary_path()).encode_input,
                      draw=build.DrawConfig(3), index=build.IndexConfig("exact"))
  out = tmp_path / "eval"
  argv = _evaluate_argv(checkpoint, out, root / "data", "--gin.METHODS=['INTER']",
                        f"--gin.LIBRARY_DIR='{tmp_path / 'library'}'", f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'",
                        "--gin.NUM_QUERIES=4", "--gin.NUM_NEIGHBORS=3", "--gin.NUM_PROMPTS=2")
  assert cli.main(argv) == 0
  (selection,) = (out / "selections").rglob("INTER/selection.json")
  (record,) = (out / "records").rglob("INTER.json")
  saved = selection.read_text()
  forged = json.loads(saved)
  forged["weights"] = [0.9, 0.05][:len(forged["weights"])]
  selection.write_text(json.dumps(forged))
  before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
  code, err = run_rospr(argv, capsys, in_subprocess=True)
  assert code == 2 and "Traceback" not in err, err[-2000:]
  (line,) = [l for l in err.splitlines() if l.startswith("rospr evaluate: error: ")]
  assert line.startswith(f"rospr evaluate: error: Record {record} was scored with the selection file {selection} "
                         "of sha256 "), line
  assert line.endswith(f": the selection was edited or damaged; delete it to score {RTE} INTER again."), line
  assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing rewritten
  selection.write_text(saved)
  assert cli.main(argv) == 0  # the intact selection is resumed



def test_inputs_longer_than_the_model_reads_are_counted_per_target(world, tmp_path, capsys):
  """Was: an input over the model's input length (1024 tokens) was cut without a trace. Each record,
  results.json (per target and per dataset) and results.md count them."""
  _, checkpoint, _ = world
  data = tmp_path / "data" / "super_glue" / "rte"
  data.mkdir(parents=True)
  rows = [{"premise": ("qz" * 600 if i in (1, 4) else f"The cat {i} sat."),  # 1200 tokens in 1200 characters
           "hypothesis": "A cat sat.", "idx": i, "label": i % 2} for i in range(6)]
  (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "eval"
  assert cli.main(_evaluate_argv(checkpoint, out, tmp_path / "data")) == 0
  (record,) = (out / "records").rglob("T0.json")
  assert json.loads(record.read_text())["truncated_inputs"] == 2
  results = json.loads((out / "results.json").read_text())
  assert [r["truncated_inputs"] for r in results["per_template"]] == [2]
  assert results["summary"]["truncated_inputs"] == {"super_glue/rte": 2}
  markdown = (out / "results.md").read_text()
  assert "| inputs truncated | 2 | 2 |" in markdown
  assert (f"Inputs longer than the model reads, cut to their first tokens, per target: {RTE} 2 of 6." in markdown)


def test_a_lock_file_that_is_a_folder_is_named(world, tmp_path, capsys):
  """Was: "[Errno 21] Is a directory", naming neither the lock nor what to do."""
  root, checkpoint, _ = world
  (tmp_path / "eval" / ".rospr.lock").mkdir(parents=True)
  code, err = run_rospr(_evaluate_argv(checkpoint, tmp_path / "eval", root / "data"), capsys)
  assert (code, err) == (2, f"rospr evaluate: error: {tmp_path / 'eval' / '.rospr.lock'} is a folder, where evaluate "
                            f"keeps the lock file of the run in {tmp_path / 'eval'}; move that folder away (rospr "
                            "never writes one there).\n")
  assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [".rospr.lock"]

"""Bad input met as a user meets it (issue 25): each case runs the `rospr` CLI in a subprocess and
asserts its one line (file, line, field or flag named; no traceback), and that nothing already written
was changed."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _argv(examples, model_dir, steps, checkpoint_every):
  """train-prompts on a tiny random backbone (as tests/prompt/train_cli_test.py runs it)."""
  return ["--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin",
          f"--gin.EXAMPLES_FILE='{examples}'", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
          "--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=16", "--gin.TARGET_LENGTH=4", "--gin.PROMPT_LENGTH=4",
          f"--gin.CHECKPOINT_EVERY={checkpoint_every}", "--gin_bindings=configs.LoopConfig.summaries = False"]


def _rospr(*argv, cwd) -> tuple[int, str]:
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", *map(str, argv)], capture_output=True,
                        text=True, timeout=300, cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT))
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  lines = [l for l in done.stderr.splitlines() if l.startswith("rospr ")]
  return done.returncode, lines[-1] if lines else done.stderr[-2000:]


def _files(folder) -> dict:
  return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_training_examples_that_are_not_utf8_or_have_empty_targets_or_sources_name_file_and_line(tmp_path):
  good = json.dumps({"source": "a", "inputs": [5, 6, 7], "targets": [9, 1]})
  cases = {
      "latin.jsonl": (good + "\n" + '{"source": "a", "inputs": [5], "targets": [9, 1], "note": "caf\xe9"}\n').encode("latin-1"),
      "empty.jsonl": (good + "\n" + json.dumps({"source": "b", "inputs": [5, 6], "targets": [1]}) + "\n").encode(),
      "list.jsonl": (good + "\n[1, 2]\n").encode(),
      "nameless.jsonl": (good + "\n" + json.dumps({"source": "", "inputs": [5, 6], "targets": [9, 1]}) + "\n").encode()}
  expected = {"latin.jsonl": "latin.jsonl: line 2 is not UTF-8 (byte 0xe9 at column 63); save the file as UTF-8.",
              "empty.jsonl": "empty.jsonl:2: targets is empty; every example needs its text.",
              "list.jsonl": "list.jsonl:2: a JSON list, expected an object with source, inputs, targets.",
              "nameless.jsonl": "nameless.jsonl:2: source is ''; every example names its source (a non-empty "
                                "string)."}
  for name, data in cases.items():
    (tmp_path / name).write_bytes(data)
    before = _files(tmp_path)
    code, line = _rospr("train-prompts", *_argv(tmp_path / name, tmp_path / f"run_{name}", 2, 2), cwd=tmp_path)
    assert code == 2 and expected[name] in line, (name, line)
    assert line.startswith("rospr train-prompts: error: ") and str(tmp_path / name) in line
    assert _files(tmp_path) == before, name  # nothing written, nothing changed


def test_score_refuses_an_input_that_is_not_utf8_and_an_empty_choice(tmp_path, tiny_model):
  code, line = _rospr("score", "--checkpoint", tiny_model.checkpoint, "--input", b"caf\xe9".decode("utf-8", "surrogateescape"),
                      "--choice", "yes", cwd=tmp_path)
  assert (code, line) == (2, "rospr score: --input is not UTF-8 text (byte 0xe9 at character 3); pass it in UTF-8.")
  code, line = _rospr("score", "--checkpoint", tiny_model.checkpoint, "--input", "Is it?", "--choice", "yes",
                      "--choice", "", cwd=tmp_path)
  assert (code, line) == (2, "rospr score: --choice 2 of 2 is empty: an empty answer choice would be scored on "
                             "its EOS alone; give its text.")


@pytest.mark.parametrize("where", ["instances", "queries"])
def test_library_and_retrieval_inputs_that_are_not_utf8_name_file_and_line(tmp_path, tiny_model, where):
  instances = tmp_path / "all.jsonl"
  instances.write_bytes(b"".join(json.dumps({"source": s, "text": f"{s} text {i}"}).encode() + b"\n"
                                 for s in ("a", "b") for i in range(3)))
  (tmp_path / "names.txt").write_text("a\nb\n")
  import numpy as np
  np.save(tmp_path / "prompts.npy", np.zeros((2, 3, tiny_model.config.emb_dim), np.float32))
  flags = ["--retriever", tiny_model.checkpoint, "--vocab", tiny_model.vocab, "--max-length", "16"]
  build = ["build-library", "--out", tmp_path / "lib", "--prompts", tmp_path / "prompts.npy", "--instances",
           instances, "--source-names", tmp_path / "names.txt", "--n", "3", "--index", "exact", *flags]
  if where == "instances":
    instances.write_bytes(instances.read_bytes() + b'{"source": "a", "text": "na\xefve"}\n')
    code, line = _rospr(*build, cwd=tmp_path)
    assert code == 2 and f"{instances}: line 7 is not UTF-8 (byte 0xef at column 28)" in line, line
    assert not (tmp_path / "lib").exists()
    return
  assert _rospr(*build, cwd=tmp_path)[0] == 0
  (tmp_path / "ok.jsonl").write_text('{"text": "a text"}\n')
  code, line = _rospr("retrieve", "--library", tmp_path / "lib", "--queries", tmp_path / "ok.jsonl", "--out",
                      tmp_path / "sel", "--num-neighbors", "7", *flags, cwd=tmp_path)
  assert (code, line) == (2, f"rospr retrieve: --num-neighbors = 7 exceeds the 6 instances of the library "
                             f"{tmp_path / 'lib'}; give at most 6."), line
  queries = tmp_path / "q.jsonl"
  queries.write_bytes(b'{"text": "a text"}\n{"text": "caf\xe9"}\n')
  before = _files(tmp_path)
  code, line = _rospr("retrieve", "--library", tmp_path / "lib", "--queries", queries, "--out", tmp_path / "sel",
                      "--num-neighbors", "3", *flags, cwd=tmp_path)
  assert code == 2 and f"{queries}: line 2 is not UTF-8 (byte 0xe9 at column 14)" in line, line
  assert _files(tmp_path) == before and not (tmp_path / "sel").exists()
  # Queries recording their target (as `rospr tasks --queries` writes them) are refused for another
  # --target (was: RTE's queries retrieved for CB silently), and name the target when --target is absent.
  queries.write_text("".join(json.dumps({"text": f"a text {i}", "target": "super_glue_rte_GPT_3_style"}) + "\n"
                             for i in range(2)))
  code, line = _rospr("retrieve", "--library", tmp_path / "lib", "--queries", queries, "--out", tmp_path / "sel",
                      "--num-neighbors", "3", "--target", "super_glue_cb_GPT_3_style", *flags, cwd=tmp_path)
  assert (code, line) == (2, f"rospr retrieve: {queries}: line 1 is a query of the target "
                             "'super_glue_rte_GPT_3_style', not of --target 'super_glue_cb_GPT_3_style'; give the "
                             "queries of 'super_glue_cb_GPT_3_style' (rospr tasks --show super_glue_cb_GPT_3_style "
                             "--queries FILE writes them)."), line
  assert not (tmp_path / "sel").exists()
  from rospr_jax import cli
  assert cli.main(["retrieve", "--library", str(tmp_path / "lib"), "--queries", str(queries), "--out",
                   str(tmp_path / "sel"), "--num-neighbors", "3", *map(str, flags)]) == 0
  assert json.loads((tmp_path / "sel" / "selection.json").read_text())["params"]["target"] == (
      "super_glue_rte_GPT_3_style")


def test_build_library_names_the_flag_of_a_wrong_kind_of_path_or_prompt_file(tmp_path, tiny_model):
  instances = tmp_path / "all.jsonl"
  instances.write_text("".join(json.dumps({"source": s, "text": f"{s} text"}) + "\n" for s in ("a", "b")))
  (tmp_path / "names.txt").write_text("a\nb\n")
  (tmp_path / "a_folder").mkdir()
  (tmp_path / "a_file").write_text("keep me")
  base = ["build-library", "--source-names", tmp_path / "names.txt", "--retriever", tiny_model.checkpoint,
          "--vocab", tiny_model.vocab, "--n", "1", "--index", "exact"]
  before = _files(tmp_path)
  cases = [  # (flags, the one line)
      (["--out", tmp_path / "lib", "--prompts", instances, "--instances", instances],
       f"--prompts {instances} is neither a prompt export folder nor a .npy file; give MODEL_DIR/export of "
       "rospr train-prompts or an [S, P, H] table saved with numpy.save."),
      (["--out", tmp_path / "lib", "--prompts", instances, "--instances", tmp_path / "a_folder"],
       f"--instances {tmp_path / 'a_folder'} is a folder; give a file."),
      (["--out", tmp_path / "a_file", "--prompts", instances, "--instances", instances],
       f"--out {tmp_path / 'a_file'} is a file; give a folder.")]
  for flags, expected in cases:
    code, line = _rospr(*base, *flags, cwd=tmp_path)
    assert (code, line) == (2, f"rospr build-library: {expected}"), line
  assert _files(tmp_path) == before and not (tmp_path / "lib").exists()


def test_train_prompts_refuses_a_backbone_with_nan_weights_before_any_step(tmp_path, tiny_model):
  """Was: the first loss is NaN and the message says "lower the learning rate"."""
  import jax
  import numpy as np
  from rospr_jax.model import save_hf
  params = jax.tree.map(np.array, tiny_model.params)  # a writable host copy
  params["encoder"]["layers_1"]["mlp"]["wi_0"]["kernel"][2, 3] = np.nan
  poisoned = tmp_path / "nan_t0"
  save_hf(str(poisoned), tiny_model.config, params)
  examples = tmp_path / "ex.jsonl"
  examples.write_text("".join(json.dumps({"source": "ab"[i % 2], "inputs": [5 + i, 6, 7], "targets": [9, 1]}) + "\n"
                              for i in range(8)))
  argv = [a.replace("models/tiny.gin", "models/checkpoint.gin") for a in _argv(examples, tmp_path / "run", 2, 2)]
  argv.append(f"--gin.CHECKPOINT='{poisoned}'")
  code, line = _rospr("train-prompts", *argv, cwd=tmp_path)
  assert code == 2, line
  assert line == (f"rospr train-prompts: error: The backbone {poisoned} holds NaN or infinite weights in 1 "
                  "tensors (encoder/layers_1/mlp/wi_0/kernel); nothing was trained."), line
  assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_evaluate_refuses_more_neighbours_than_the_library_has_before_scoring(tmp_path, tiny_model):
  """Was: "k = 10 exceeds the library size 2" after T0 had been scored, naming no setting."""
  import numpy as np
  from rospr_jax.library import build, embed, sources as sources_lib
  from rospr_jax.tokenization import Tokenizer
  embedder = embed.load_embedder(tiny_model.checkpoint, max_length=32)
  sources = [sources_lib.SourceTexts(name, [f"{name} text {i}" for i in range(3)]) for name in ("a", "b")]
  prompts = np.zeros((2, 3, tiny_model.config.emb_dim), np.float32)
  build.build_library(str(tmp_path / "library"), sources, prompts, embedder, Tokenizer(tiny_model.vocab).encode_input,
                      draw=build.DrawConfig(3), index=build.IndexConfig("exact"))
  code, line = _rospr(
      "evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
      f"--gin.CHECKPOINT='{tiny_model.checkpoint}'", f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
      f"--gin.LIBRARY_DIR='{tmp_path / 'library'}'", f"--gin.RETRIEVER_CHECKPOINT='{tiny_model.checkpoint}'",
      "--gin.TARGETS=['generated_animal_truefalse_f0']", "--gin.MAX_EXAMPLES=4", "--gin.NUM_QUERIES=4",
      "--gin.NUM_NEIGHBORS=7", cwd=tmp_path)
  assert code == 2 and line.endswith(f"NUM_NEIGHBORS = 7 exceeds the 6 instances of the library "
                                     f"{tmp_path / 'library'}; give at most 6."), line
  assert not (tmp_path / "eval" / "records").exists() or not any((tmp_path / "eval" / "records").rglob("*.json"))


@pytest.mark.parametrize("macro, value", [("INPUT_LENGTH", 100_000_000), ("TARGET_LENGTH", 100_000),
                                          ("TARGET_LENGTH", 100_000_000)])
def test_a_step_that_cannot_fit_the_memory_is_refused_at_once_naming_the_macros(tmp_path, macro, value):
  """Was: `--gin.INPUT_LENGTH=100000000` killed by the kernel at 16 GiB after 37 s, printing nothing;
  `--gin.TARGET_LENGTH=100000000` a numpy traceback (8.88 PiB for the decoder's causal layout), 40000
  killed by the kernel. The lower bound (host batch and causal layout, position biases, one layer's
  states and attention weights) is checked before anything is allocated; a normal step is far below
  it (the other tests train)."""
  import time
  examples = tmp_path / "ex.jsonl"
  examples.write_text(json.dumps({"source": "a", "inputs": [5, 6, 7], "targets": [9, 1]}) + "\n")
  argv = [a for a in _argv(examples, tmp_path / "run", 2, 2)] + [f"--gin.{macro}={value}"]
  start = time.perf_counter()
  code, line = _rospr("train-prompts", *argv, cwd=tmp_path)
  assert code == 2 and time.perf_counter() - start < 120, line
  assert line.startswith("rospr train-prompts: error: One training step needs at least "), line
  shapes = {"INPUT_LENGTH": 16, "TARGET_LENGTH": 4, macro: value}
  assert (f"(BATCH_SIZE 8 rows of PROMPT_LENGTH 4 + INPUT_LENGTH {shapes['INPUT_LENGTH']} input and "
          f"TARGET_LENGTH {shapes['TARGET_LENGTH']} target tokens)") in line, line
  assert line.endswith("; lower BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH or PROMPT_LENGTH."), line
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluate_with_a_batch_larger_than_the_examples_scores_them(tmp_path, tiny_model):
  """Was: BATCH_SIZE=100000000 on 3 examples padded each batch to 10^8 rows and was killed by the
  kernel, leaving run.json and the lock behind. Batches hold at most the rows there are."""
  code, line = _rospr(
      "evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
      f"--gin.CHECKPOINT='{tiny_model.checkpoint}'", f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
      "--gin.METHODS=['T0']", "--gin.TARGETS=['generated_animal_truefalse_f0']", "--gin.MAX_EXAMPLES=3",
      "--gin.BATCH_SIZE=100000000", cwd=tmp_path)
  assert code == 0, line
  (record,) = (tmp_path / "eval" / "records").rglob("T0.json")
  assert json.loads(record.read_text())["examples"] == 3


def test_a_library_and_a_prompt_export_given_for_each_other_are_named_as_what_they_are(tmp_path, tiny_model):
  """Was: a library given as --prompts reported the manifest keys a prompt export has; a prompt export
  given as --library was "never completed ... write it again"."""
  import numpy as np
  from rospr_jax.library import build, embed, sources as sources_lib
  from rospr_jax.prompt import export
  from rospr_jax.tokenization import Tokenizer
  table = np.zeros((2, 3, tiny_model.config.emb_dim), np.float32)
  export.export_prompts(str(tmp_path / "export"), table, ["a", "b"], step=5, backbone_fingerprint="f",
                        seeds=[0, 1], source_steps=[5, 5])
  embedder = embed.load_embedder(tiny_model.checkpoint, max_length=16)
  build.build_library(str(tmp_path / "library"), [sources_lib.SourceTexts(n, [f"{n} text {i}" for i in range(3)])
                                                  for n in ("a", "b")],
                      table, embedder, Tokenizer(tiny_model.vocab).encode_input, draw=build.DrawConfig(3),
                      index=build.IndexConfig("exact"))
  (tmp_path / "q.jsonl").write_text(json.dumps({"text": "a text"}) + "\n")
  (tmp_path / "all.jsonl").write_text("".join(json.dumps({"source": s, "text": f"{s} text"}) + "\n" for s in "ab"))
  before = _files(tmp_path)

  def retrieve_from(library):
    return _rospr("retrieve", "--library", library, "--queries", tmp_path / "q.jsonl", "--out", tmp_path / "sel",
                  "--retriever", tiny_model.checkpoint, "--vocab", tiny_model.vocab, cwd=tmp_path)

  def build_from(prompts):
    return _rospr("build-library", "--out", tmp_path / "lib2", "--prompts", prompts, "--instances",
                  tmp_path / "all.jsonl", "--retriever", tiny_model.checkpoint, "--vocab", tiny_model.vocab, "--n",
                  "1", "--index", "exact", cwd=tmp_path)

  code, line = retrieve_from(tmp_path / "export")
  assert code == 2 and line.endswith(f"Library {tmp_path / 'export'} has no manifest.json of its own; it holds the "
                                     "folder artifacts checkpoint_5: give the folder of a library."), line
  code, line = build_from(tmp_path / "library")
  assert code == 2 and line.endswith(f"{tmp_path / 'library'} is not a prompt export: its manifest "
                                     f"{tmp_path / 'library' / 'manifest.json'} is of kind 'rospr_library', not "
                                     "'rospr_prompts'."), line
  assert _files(tmp_path) == before
  # Was: a per-source prompt file changed after export, and a library's source renamed in its manifest,
  # were read as they were.
  source_file = pathlib.Path(export.source_prompt_path(str(tmp_path / "export"), "b", 5))
  with open(source_file, "wb") as f:
    np.save(f, np.ones((3, tiny_model.config.emb_dim), np.float32))
  manifest = tmp_path / "library" / "manifest.json"
  manifest.write_text(manifest.read_text().replace('"name": "a"', '"name": "super_glue/rte"'))
  before = _files(tmp_path)
  code, line = build_from(tmp_path / "export")
  assert code == 2 and line.startswith(f"rospr build-library: Prompt export file "
                                       f"{source_file.relative_to(tmp_path / 'export')} in {tmp_path / 'export'} is "
                                       "corrupted: sha256 "), line
  code, line = retrieve_from(tmp_path / "library")
  assert code == 2 and line.startswith(f"rospr retrieve: Library manifest {manifest} was edited after it was "
                                       "written: its facts have sha256 "), line
  assert _files(tmp_path) == before


def test_a_gin_file_error_is_one_line_naming_the_file_and_line(tmp_path):
  """Was: gin's message, then its location and the line's text on two more lines."""
  (tmp_path / "unknown.gin").write_text('include "prompt_tuning/train_jsonl.gin"\nTRAIN_STEPS = 2\nfoo.bar = 3\n')
  (tmp_path / "include.gin").write_text('include "nope.gin"\n')
  for name, says in [("unknown.gin", "3: No configurable matching 'foo'. (foo.bar = 3)"),
                     ("include.gin", '1: Unable to open file: nope.gin. Searched config paths: ')]:
    done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "train-prompts", "--gin_file=models/tiny.gin",
                           f"--gin_file={tmp_path / name}"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"rospr train-prompts: gin config error: {tmp_path / name}:{says}"), done.stderr
  assert done.stderr.rstrip().endswith('(include "nope.gin")')


def test_a_count_below_one_names_the_flag_or_the_macro_the_user_typed(tmp_path, tiny_model, capsys):
  """`retrieve --num-neighbors 0` names the flag (argparse, before any work); `evaluate
  --gin.NUM_NEIGHBORS=0` names the macro, before the backbone loads."""
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "retrieve", "--library", tmp_path / "lib",
                         "--queries", tmp_path / "q.jsonl", "--out", tmp_path / "sel", "--num-neighbors", "0"],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT))
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == "rospr retrieve: error: argument --num-neighbors: must be >= 1, got 0"
  from rospr_jax.commands import retrieve  # was: --batch-size 0 failed in VAR with "range() arg 3 must not be zero"
  with pytest.raises(SystemExit) as refused:
    retrieve.build_parser().parse_args(["--library", "l", "--queries", "q", "--out", "o", "--retriever", "r",
                                        "--vocab", "v", "--batch-size", "0"])
  assert refused.value.code == 2
  assert capsys.readouterr().err.splitlines()[-1] == ("rospr retrieve: error: argument --batch-size: must be >= 1, "
                                                      "got 0")
  code, line = _rospr("evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
                      f"--gin.CHECKPOINT='{tiny_model.checkpoint}'", f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
                      "--gin.NUM_NEIGHBORS=0", cwd=tmp_path)
  assert code == 2 and "num_neighbors (NUM_NEIGHBORS) must be an integer >= 1, not 0" in line, line
  assert not (tmp_path / "eval").exists() and not (tmp_path / "sel").exists()


def test_evaluate_macros_of_the_wrong_type_are_one_line_naming_each_macro(tmp_path, capsys):
  """Was: METHODS=5, TARGETS=5, SEED='a', DATA_DIR=5 gave 31-39-line tracebacks; METHODS=[] an empty
  report and exit 0; SEED=-1 numpy's message naming no setting. All refused before the backbone loads."""
  from cli_runner import run_rospr
  base = ["evaluate", "--gin_file=models/tiny.gin", "--gin_file=eval/generated_targets.gin",
          f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'"]
  code, line = _rospr(*base, "--gin.METHODS=5", "--gin.TARGETS=5", "--gin.SEED='a'", "--gin.DATA_DIR=5", cwd=ROOT)
  assert (code, line) == (2, "rospr evaluate: error: targets (TARGETS) must be a non-empty list of names, e.g. "
                             "['held_out'], not 5; data_dir (DATA_DIR) must be None or a string, not 5; seed (SEED) "
                             "must be an integer >= 0, not 'a'."), line
  methods = "must be None or a non-empty list of names, e.g. ['T0', 'RoSPr']"
  cases = {"--gin.METHODS=[]": f"methods (METHODS) {methods}, not [].",
           "--gin.METHODS=5": f"methods (METHODS) {methods}, not 5.",
           "--gin.TARGETS=None": "targets (TARGETS) must be a non-empty list of names, e.g. ['held_out'], not None.",
           "--gin.METHODS='T0'": f"methods (METHODS) {methods}, not 'T0'.",
           "--gin.SEED=-1": "seed (SEED) must be an integer >= 0, not -1."}
  for flag, says in cases.items():
    code, err = run_rospr([*base, flag], capsys)
    assert (code, err) == (2, f"rospr evaluate: error: {says}\n"), flag
  assert not (tmp_path / "eval").exists()

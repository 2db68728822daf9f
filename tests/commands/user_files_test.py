"""Nothing a user owns is ever deleted (issue 33): every writing command, pointed at a folder of the
user's files (or at the working folder, or a link), refuses in one line with exit 2 before any work,
and every file stays byte-identical; `--overwrite` replaces only an artifact of the command's own kind.
Each case runs the `rospr` CLI in a subprocess, as a user meets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rospr(*argv, cwd) -> tuple[int, list[str]]:
  """(exit code, the lines of stderr that rospr wrote) of `rospr ARGV` run in `cwd`."""
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", *map(str, argv)], capture_output=True,
                        text=True, timeout=300, cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT))
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  return done.returncode, [l for l in done.stderr.splitlines() if l.startswith("rospr ")]


def _user_folder(path):
  """A folder of the user's: a thesis, a data folder, a notes file."""
  (path / "data").mkdir(parents=True)
  (path / "thesis.tex").write_text("\\documentclass{article}\n")
  (path / "data" / "runs.csv").write_bytes(b"a,b\n1,2\n")
  (path / "notes.md").write_text("keep me\n")
  return path


def _tree(folder) -> dict:
  """Every file under `folder` (links not followed) with its bytes."""
  return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _writers(dest, tmp_path, checkpoint) -> dict[str, tuple[list, str]]:
  """Each writing command's argv pointed at `dest`, and the flag or macro its refusal names. The inputs
  need not exist (but `checkpoint`, which evaluate checks first): the destination is refused before any
  of them is read."""
  retriever = ["--random-retriever", "tiny", "--vocab", tmp_path / "spiece.model"]
  (tmp_path / "examples.jsonl").write_text(json.dumps({"source": "a", "inputs": [5, 6], "targets": [9, 1]}) + "\n")
  train = ["--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin",
           f"--gin.EXAMPLES_FILE='{tmp_path / 'examples.jsonl'}'", f"--gin.MODEL_DIR='{dest}'", "--gin.TRAIN_STEPS=2"]
  evaluate = ["--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
              f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{dest}'", "--gin.METHODS=['T0']"]
  return {
      "retrieve": (["retrieve", "--library", tmp_path / "lib", "--queries", tmp_path / "q.jsonl", *retriever,
                    "--out", dest], "--out"),
      "build-library": (["build-library", "--out", dest, "--prompts", tmp_path / "p.npy", "--source",
                         f"a={tmp_path / 'a.txt'}", *retriever], "--out"),
      "convert": (["convert", "--from", tmp_path / "t0", "--to", dest, "--format", "t5x"], "--to"),
      "demo": (["demo", "--quick", "--output_dir", dest], "--output_dir"),
      "train-prompts": (["train-prompts", *train], "MODEL_DIR"),
      "evaluate": (["evaluate", *evaluate], "OUTPUT_DIR"),
  }


COMMANDS = ("retrieve", "build-library", "convert", "demo", "train-prompts", "evaluate")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_of_user_files_is_refused_and_left_byte_identical(command, tmp_path, tiny_model):
  user = _user_folder(tmp_path / "mine")
  argv, flag = _writers(user, tmp_path, tiny_model.checkpoint)[command]
  before, entries = _tree(tmp_path), sorted(os.listdir(tmp_path))
  code, lines = _rospr(*argv, cwd=tmp_path)
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith(f"rospr {command}") and f"{flag} {user} holds files that are not a " in lines[0]
  assert "(data, notes.md, thesis.tex)" in lines[0], lines[0]
  if command in ("retrieve", "build-library", "demo"):  # --overwrite does not make them the command's
    code, lines = _rospr(*argv, "--overwrite", cwd=tmp_path)
    assert code == 2 and "holds files that are not a " in lines[0], lines
  assert _tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == entries


@pytest.mark.parametrize("command", ("retrieve", "demo", "evaluate"))
def test_the_working_folder_and_a_link_are_refused(command, tmp_path, tiny_model):
  user = _user_folder(tmp_path / "mine")
  (tmp_path / "link").symlink_to(user, target_is_directory=True)
  before = _tree(user)
  for dest, says in ((".", "is the working folder or a folder above it"), (tmp_path, "is the working folder or a "
                                                                           "folder above it"),
                     (tmp_path / "link", f"is a symbolic link (to {user})")):
    argv, flag = _writers(dest, tmp_path, tiny_model.checkpoint)[command]
    code, lines = _rospr(*argv, cwd=user)
    shown = (dest, os.path.abspath(os.path.join(user, dest)))  # as given, or made absolute (run folders)
    assert code == 2 and len(lines) == 1 and any(f"{flag} {d} {says}" in lines[0] for d in shown), lines
  assert _tree(user) == before


def test_tasks_queries_never_replaces_a_file_it_did_not_write(tmp_path):
  mine = tmp_path / "thesis.tex"
  mine.write_text("\\documentclass{article}\n")
  for extra, says in (([], "already exists; pass --overwrite to replace it"),
                      (["--overwrite"], "is not a queries file (a JSON object with a \"text\" on every line)")):
    code, lines = _rospr("tasks", "--show", "generated_animal_truefalse_f0", "--queries", mine, *extra, cwd=tmp_path)
    assert code == 2 and lines == [f"rospr tasks: --queries {mine} {says}" + lines[0].split(says, 1)[1]], lines
  assert mine.read_text() == "\\documentclass{article}\n"
  queries = tmp_path / "q.jsonl"
  queries.write_text(json.dumps({"text": "an old query"}) + "\n")
  code, _ = _rospr("tasks", "--show", "generated_animal_truefalse_f0", "--queries", queries, "--overwrite",
                   cwd=tmp_path)
  assert code == 0 and "an old query" not in queries.read_text() and len(queries.read_text().splitlines()) > 1


def test_demo_refuses_a_file_and_memory_before_any_work(tmp_path):
  (tmp_path / "report.md").write_text("mine\n")
  for dest, says in ((tmp_path / "report.md", "is a file; give a new folder"),
                     ("memory://demo", "memory:// objects vanish when the process ends")):
    code, lines = _rospr("demo", "--output_dir", dest, cwd=tmp_path)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"rospr demo: --output_dir {dest}") and says in lines[0], lines
  assert (tmp_path / "report.md").read_text() == "mine\n" and os.listdir(tmp_path) == ["report.md"]

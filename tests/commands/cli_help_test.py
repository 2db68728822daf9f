"""`rospr COMMAND --help` and flag errors answer at once (no JAX, TensorFlow or SeqIO before the flags
are parsed), print each part of the help once, and name the flags the user typed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rospr_jax import cli

# What `--help` and a flag error must not wait for: the modules that take seconds to import.
HEAVY = ("jax", "tensorflow", "seqio", "flax", "torch")


def _rospr(*argv: str) -> tuple[subprocess.CompletedProcess, list[str]]:
  """The finished `rospr ARGV`, and the heavy modules it imported (Python's -X importtime lines)."""
  done = subprocess.run([sys.executable, "-X", "importtime", "-m", "rospr_jax.cli", *argv], capture_output=True,
                        text=True, timeout=120)
  imported = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
  done.stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
  return done, sorted({name for name in imported if name in HEAVY})


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_answers_before_any_heavy_import(command):
  done, heavy = _rospr(command, "--help")
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith(f"usage: rospr {command}") and "Traceback" not in done.stderr
  assert heavy == [], f"rospr {command} --help imported {heavy}"


@pytest.mark.parametrize("command", ["train-prompts", "evaluate"])
def test_gin_commands_print_their_docstring_once(command):
  done, _ = _rospr(command, "--help")
  first_line = done.stdout.split("\n\n")[1].splitlines()[0]  # after the usage: the description
  assert first_line.startswith(f"`rospr {command}`:")
  assert done.stdout.count(first_line) == 1, done.stdout
  assert "--gin_file=" in done.stdout  # the examples of the docstring's body are still there
  done, heavy = _rospr(command)  # a flag error answers as fast as --help
  assert done.returncode == 2 and "at least one --gin_file is required" in done.stderr
  assert "Traceback" not in done.stderr and heavy == [], heavy


@pytest.mark.parametrize("value", ["0", "-3"])
def test_build_library_max_length_below_one_names_the_flag(tmp_path, value):
  done, _ = _rospr("build-library", "--out", str(tmp_path / "lib"), "--prompts", str(tmp_path / "p.npy"),
                   "--source", f"s={tmp_path / 's.jsonl'}", "--vocab", str(tmp_path / "spiece.model"),
                   "--random-retriever", "tiny", "--max-length", value)
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert f"rospr build-library: error: argument --max-length: must be >= 1, got {value}" in done.stderr
  assert "min_bucket" not in done.stderr and "max_length" not in done.stderr
  assert not (tmp_path / "lib").exists()


def test_build_library_help_states_the_default_n():
  from rospr_jax.library import build
  done, _ = _rospr("build-library", "--help")
  assert f"(default: {build.DEFAULT_N}," in done.stdout

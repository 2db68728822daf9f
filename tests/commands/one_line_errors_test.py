"""Every command reports bad input in one line on stderr with exit code 2 (docs/design.md,
"Configuration"): one case per command, each run as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rospr_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_RUN = ["--gin_file=models/tiny.gin", "--gin.BATCH_SIZE=2"]

# command: (argv after the command, with {tmp} for the test's folder; what the line says)
CASES = {
    "fetch": (["--bigbench", "{tmp}/no-such-checkout"], "{tmp}/no-such-checkout"),
    "tasks": (["--show", "no_such_task"], "no rospr task named 'no_such_task'"),
    "convert": (["--from", "{tmp}/missing", "--to", "{tmp}/out", "--format", "t5x"],
                "{tmp}/missing: no such checkpoint"),
    "score": (["--checkpoint", "{tmp}/missing", "--input", "x", "--choice", "a"], "{tmp}/missing"),
    "build-library": (["--out", "{tmp}/lib", "--prompts", "{tmp}/p.npy", "--instances", "{tmp}/gone.jsonl",
                       "--random-retriever", "tiny", "--vocab", "{tmp}/v.model"],
                      "{tmp}/gone.jsonl"),
    "retrieve": (["--library", "{tmp}/no-library", "--queries", "{tmp}/q.jsonl", "--out", "{tmp}/sel",
                  "--random-retriever", "tiny", "--vocab", "{tmp}/v.model"],
                 "SentencePiece model not found: {tmp}/v.model"),
    "train-prompts": ([*TINY_RUN, "--gin_file=prompt_tuning/train_jsonl.gin", "--gin.EXAMPLES_FILE='{tmp}/gone.jsonl'",
                       "--gin.MODEL_DIR='{tmp}/run'", "--gin.TRAIN_STEPS=1"], "{tmp}/gone.jsonl"),
    # Without a BIG-bench source, TARGETS naming it is refused before any work (nothing skipped).
    "evaluate": ([*TINY_RUN, "--gin_file=eval/bigbench_targets.gin", "--gin.OUTPUT_DIR='{tmp}/eval'"],
                 "TARGETS names BIG-bench tasks: BIG-bench is not configured"),
    "demo": (["--quick", "--output_dir", "memory://demo"], "memory:// objects vanish when the process ends"),
    "plan": ([*TINY_RUN, "--gin_file=prompt_tuning/train_jsonl.gin", "--topology", "v9-8"],
             "unknown topology 'v9-8'; use one of local, v3-8"),
}


def test_every_command_has_a_case():
  assert set(CASES) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_input_is_one_line_with_exit_code_2(command, tmp_path):
  argv, expected = CASES[command]
  fill = lambda text: text.replace("{tmp}", str(tmp_path))
  env = {**os.environ, "ROSPR_CACHE": str(tmp_path / "cache")}  # no BIG-bench store (nor another cache)
  env.pop("ROSPR_BIGBENCH", None)
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", command, *map(fill, argv)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 2, done.stderr[-3000:]
  assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"rospr {command}: "), done.stderr[-3000:]
  assert fill(expected) in done.stderr, done.stderr

"""The README's SeqIO snippet scores with the checkpoint's own vocabulary or refuses: run as a user
runs it (a fresh Python process, the snippet's text from README.md), on a tiny checkpoint that ships
its own spiece.model.

Substitution table (the only changes made to the README's text): `/ckpt/T0_3B` -> the tiny
checkpoint; `"bfloat16"` -> `"float32"` (the comparison with `rospr evaluate` is exact in float32 on a
CPU); the value of the snippet's last expression is printed as JSON, as a notebook would show it.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from rospr_jax import cli, tokenization
from rospr_jax.data import vocabulary
from rospr_jax.model import get_config, init_params, save_hf

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASK = "super_glue_rte_GPT_3_style"


def readme_seqio_snippet() -> str:
  (block,) = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
              if "evaluate_task_with_seqio" in b]
  return block


def _as_script(snippet: str, checkpoint: str) -> str:
  code = snippet.replace("/ckpt/T0_3B", checkpoint).replace('"bfloat16"', '"float32"')
  tree = ast.parse(code)
  assert isinstance(tree.body[-1], ast.Expr), "the README snippet no longer ends in the evaluation call"
  last = ast.get_source_segment(code, tree.body[-1])
  return code.replace(last, f"import json; print('RESULT', json.dumps({last}, default=float))")


def _checkpoint(path: pathlib.Path, spiece: str) -> str:
  config = get_config("tiny", vocab_size=-(-tokenization.Tokenizer(spiece).vocab_size // 128) * 128)
  save_hf(str(path), config, init_params(config, jax.random.PRNGKey(0)))
  (path / "spiece.model").write_bytes(pathlib.Path(spiece).read_bytes())
  return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("seqio_vocab")
  offline = vocabulary.offline_vocabulary_path()
  other = vocabulary.train_sentencepiece([f"the premise number {i} and a hypothesis about cats" for i in range(200)],
                                         root / "other.model", 40)
  data = root / "data" / "super_glue" / "rte"
  data.mkdir(parents=True)
  rows = [{"premise": f"The cat {i} sat on the mat in the sun.", "hypothesis": "A cat sat.", "idx": i,
           "label": i % 2} for i in range(8)]
  (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  own = _checkpoint(root / "own", offline)       # ships the vocabulary the tasks default to
  foreign = _checkpoint(root / "foreign", str(other))  # ships another one
  return root, own, foreign


def _run_snippet(world, checkpoint, vocab_env):
  root = world[0]
  env = {k: v for k, v in os.environ.items() if k != "ROSPR_VOCAB"}
  env["ROSPR_DATA_DIR"] = str(root / "data")
  if vocab_env:
    env["ROSPR_VOCAB"] = vocab_env
  return subprocess.run([sys.executable, "-c", _as_script(readme_seqio_snippet(), checkpoint)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def test_a_task_vocabulary_that_is_not_the_checkpoints_is_refused_naming_both(world):
  _, _, foreign = world
  done = _run_snippet(world, foreign, None)
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("ValueError: The SeqIO task 'super_glue_rte_GPT_3_style_score_eval'"), last
  assert vocabulary.offline_vocabulary_path() in last and os.path.join(foreign, "spiece.model") in last
  assert "ROSPR_VOCAB=" in last


def test_with_the_checkpoints_vocabulary_the_snippet_equals_rospr_evaluate(world, tmp_path):
  root, own, _ = world
  done = _run_snippet(world, own, os.path.join(own, "spiece.model"))
  assert done.returncode == 0, done.stderr[-3000:]
  (line,) = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
  seqio_accuracy = json.loads(line[len("RESULT "):])[f"{TASK}_score_eval"]["accuracy"]
  out = tmp_path / "eval"
  assert cli.main(["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/held_out_targets.gin",
                   f"--gin.CHECKPOINT='{own}'", f"--gin.OUTPUT_DIR='{out}'", "--gin.METHODS=['T0']",
                   f"--gin.TARGETS=['{TASK}']", f"--gin.DATA_DIR='{root / 'data'}'",
                   "--gin.BATCH_SIZE=4"]) == 0
  results = json.loads(next(out.rglob("results.json")).read_text())
  (row,) = [r for r in results["per_template"] if r["method"] == "T0"]
  assert row["examples"] == 8
  np.testing.assert_allclose(seqio_accuracy, 100.0 * row["accuracy"], atol=1e-9)

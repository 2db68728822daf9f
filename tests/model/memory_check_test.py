"""The compiled check that guards real runs (`model.memory_check`): on an accelerator, `train-prompts` and
`evaluate` compile a step before it first runs and refuse it, in one line naming the macros, when it
needs more memory than the device's `bytes_limit`. Tested here by faking the device's limit: the check
compiles the tiny step on the CPU and reads its `memory_analysis()`, as it would on a GPU or TPU."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from cli_runner import run_rospr
from rospr_jax.eval.batching import RankExample, score_examples
from rospr_jax.model import get_config, init_params, model_for
from rospr_jax.model import memory_check

FAKED = "a faked device"


def _fake_limit(monkeypatch, nbytes: int) -> None:
  monkeypatch.setattr(memory_check, "accelerator_memory", lambda: (nbytes, FAKED))


def test_the_cpu_has_no_accelerator_memory():
  """On the CPU nothing is compiled ahead: the shape lower bounds guard there."""
  assert jax.local_devices()[0].platform == "cpu" and memory_check.accelerator_memory() is None


def _train_argv(tmp_path) -> list[str]:
  examples = tmp_path / "examples.jsonl"
  examples.write_text("".join(json.dumps({"source": s, "inputs": [5, 6, 7], "targets": [8, 1]}) + "\n"
                              for s in ("a", "b") for _ in range(4)))
  return ["train-prompts", "--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin",
          f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.TRAIN_STEPS=1", f"--gin.EXAMPLES_FILE='{examples}'",
          "--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=16", "--gin.TARGET_LENGTH=4", "--gin.PROMPT_LENGTH=3",
          "--gin.DROPOUT_RATE=0.0"]


def test_train_prompts_refuses_a_step_over_the_device_memory_naming_the_macros(tmp_path, monkeypatch, capsys):
  _fake_limit(monkeypatch, 2**20)  # 1 MiB: the tiny backbone alone is more
  code, err = run_rospr(_train_argv(tmp_path), capsys)
  assert code == 2 and "Traceback" not in err
  line = err.strip().splitlines()[-1]
  assert line.startswith("rospr train-prompts: error: One training step compiles to ")
  assert f"per device (" in line and f"more than the 1.00 MiB of {FAKED}; " in line
  assert ("lower BATCH_SIZE (8), INPUT_LENGTH (16), TARGET_LENGTH (4) or PROMPT_LENGTH (3), raise "
          "NUM_PARTITIONS (1), or set REMAT_POLICY 'full' (now 'minimal')") in line
  assert not (tmp_path / "run" / "checkpoints" / "1").exists()  # refused before the first step


def test_train_prompts_runs_a_step_that_fits_compiled_once(tmp_path, monkeypatch, capsys):
  """The step the check compiled is the one that runs: JAX's cache serves the first step."""
  from jax._src import monitoring  # pylint: disable=g-import-not-at-top
  _fake_limit(monkeypatch, 2**40)
  checked, check = [], memory_check.check_compiled_step
  monkeypatch.setattr(memory_check, "check_compiled_step", lambda *a, **k: (checked.append(k["what"]), check(*a, **k))[1])
  compiled = []

  def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration" and "train_step" in str(kwargs.get("fun_name")):
      compiled.append(duration)

  monitoring.register_event_duration_secs_listener(listen)
  try:  # INPUT_LENGTH 24: shapes no other test compiles in this process
    code, err = run_rospr(_train_argv(tmp_path) + ["--gin.INPUT_LENGTH=24"], capsys)
  finally:
    monitoring.unregister_event_duration_listener(listen)
  assert code == 0, err
  assert checked == ["One training step"] and len(compiled) == 1, compiled  # checked, then run: one compile
  assert os.path.isdir(tmp_path / "run" / "checkpoints" / "1")


@pytest.fixture(scope="module")
def tiny():
  config = get_config("tiny")
  return config, init_params(config, jax.random.PRNGKey(0))


def test_scoring_refuses_a_batch_over_the_device_memory(tiny, monkeypatch):
  config, params = tiny
  _fake_limit(monkeypatch, 2**20)
  examples = [RankExample([5, 6, 7], [[8, 1], [9, 1]]) for _ in range(3)]
  with pytest.raises(ValueError) as refused:
    score_examples(params, model_for(config), examples, batch_size=4)
  message = str(refused.value)
  assert message.startswith("A scoring batch (3 rows of 8 input and 2 x 8 answer tokens) compiles to ")
  assert message.endswith(f"of {FAKED}; lower BATCH_SIZE (4) or raise NUM_PARTITIONS (1) (`rospr plan` tries them).")
  _fake_limit(monkeypatch, 2**40)  # the same batch fits a larger device, and scores
  scores = score_examples(params, model_for(config), examples, batch_size=4)
  assert len(scores) == 3 and all(np.isfinite(s).all() for s in scores)

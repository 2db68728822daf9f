"""`rospr train-prompts`: gin run files, required macros, the run directory, meaningless settings
(runs killed with SIGKILL at random moments: tests/commands/kill_anywhere_test.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rospr_jax import gin_cli
from rospr_jax.commands import train_prompts as train
from rospr_jax.prompt import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def _write_examples(path, count=48, seed=0):
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for i in range(count):
      f.write(json.dumps({"source": ["alpha", "beta", "gamma"][i % 3],
                          "inputs": rng.integers(3, 512, int(rng.integers(4, 16))).tolist(),
                          "targets": rng.integers(3, 512, 2).tolist() + [1]}) + "\n")


def _argv(examples, model_dir, steps, checkpoint_every):
  return ["--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin",
          f"--gin.EXAMPLES_FILE='{examples}'", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
          "--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=16", "--gin.TARGET_LENGTH=4", "--gin.PROMPT_LENGTH=4",
          f"--gin.CHECKPOINT_EVERY={checkpoint_every}", "--gin.LOG_EVERY=2",
          "--gin.PROMPT_INIT='sampled_vocab'",
          "--gin_bindings=configs.LoopConfig.summaries = False"]


@pytest.mark.slow
def test_run_writes_config_checkpoints_exports_and_summaries(tmp_path, capsys):
  examples = tmp_path / "ex.jsonl"
  _write_examples(examples)
  argv = _argv(examples, tmp_path / "run", 4, 2)
  argv[-1] = "--gin_bindings=configs.LoopConfig.summaries = True"
  assert train.main(argv) == 0
  assert "Trained 3 prompts for 4 steps" in capsys.readouterr().out
  run = tmp_path / "run"
  config = (run / "config.gin").read_text()
  assert "TRAIN_STEPS = 4" in config and "optimizers.Adafactor.learning_rate = %LEARNING_RATE" in config
  assert "trainer.train.prompt_init = %PROMPT_INIT" in config and "PROMPT_INIT = 'sampled_vocab'" in config
  assert "prompt_init.SampledVocab.population_size = 5000" in config  # the class PROMPT_INIT named, as bound
  assert "mesh: {'data': 8, 'model': 1}" in (run / "model-info.txt").read_text()  # 8 simulated devices
  loaded = export.load_prompts(str(run / "export"), expected_sources=["alpha", "beta", "gamma"])
  assert loaded.step == 4 and loaded.prompts.shape == (3, 4, 64)
  assert loaded.manifest["backbone"] == {"random_init": "tiny", "seed": 0, "dtype": "float32"}
  assert loaded.manifest["prompt_init"] == {"method": "sampled_vocab", "scale": 0.5, "population_size": 5000,
                                            "class_labels": None, "vocabulary": None, "file": None}
  assert sorted(os.listdir(run / "checkpoints")) == ["2", "4"]
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(run / "train"))


def test_unset_required_macro_is_reported(tmp_path, capsys):
  argv = ["--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin", "--gin.TRAIN_STEPS=3",
          f"--gin.EXAMPLES_FILE='{tmp_path / 'x.jsonl'}'"]
  assert train.main(argv) == 2
  assert "MODEL_DIR" in capsys.readouterr().err and not os.listdir(tmp_path)


def test_examples_from_another_vocabulary_are_refused_before_training(tmp_path, capsys):
  examples = tmp_path / "ex.jsonl"
  _write_examples(examples)
  with open(examples, "a") as f:  # the tiny backbone has 512 embeddings
    f.write(json.dumps({"source": "beta", "inputs": [5, 900], "targets": [7, 1]}) + "\n")
  assert train.main(_argv(examples, tmp_path / "run", 2, 2)) == 2
  err = capsys.readouterr().err
  assert "(source 'beta') has inputs token ids [900] outside the backbone's vocabulary of 512" in err
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_flags_are_refused(capsys):
  with pytest.raises(SystemExit):
    train.main(["--gin_file=models/tiny.gin", "--gin.MODEL_DIR"])
  assert "write --gin.NAME=VALUE" in capsys.readouterr().err
  assert train.main(["--gin_file=no/such/file.gin"]) == 2
  assert "no/such/file.gin" in capsys.readouterr().err


@pytest.mark.parametrize("model,size", [("models/t0_3b.gin", "xl"), ("models/t0.gin", "xxl")])
def test_run_files_parse_with_their_required_macros(model, size):
  import gin
  bindings = ["CHECKPOINT = '/ckpt'", "MODEL_DIR = '/runs/x'", "TRAIN_STEPS = 100",
              "SOURCES = ['task_a', 'mixture_b']"]
  gin_cli.parse_gin([model, "prompt_tuning/train_seqio.gin", "prompt_tuning/adam.gin"], bindings, [])
  macro = lambda name: gin.query_parameter(f"{name}/macro.value")
  assert gin.query_parameter("backbone.load_backbone.size") == size
  assert macro("DTYPE") == "bfloat16" and macro("LEARNING_RATE") == 0.3
  assert macro("SOURCES") == ["task_a", "mixture_b"] and macro("PROMPT_LENGTH") == 100
  assert str(gin.query_parameter("trainer.train.optimizer")) == "@optimizers.Adam()"
  gin.clear_config()
  with pytest.raises(ValueError, match="SOURCES"):
    gin_cli.parse_gin([model, "prompt_tuning/train_seqio.gin"], bindings[:3], [])


@pytest.mark.parametrize("flag,message", [
    ("--gin.TRAIN_STEPS='ten'", "num_steps (TRAIN_STEPS) must be an integer >= 1, not 'ten'"),
    ("--gin.TRAIN_STEPS=3.5", "num_steps (TRAIN_STEPS) must be an integer >= 1, not 3.5"),
    ("--gin.PROMPT_LENGTH=0", "prompt_length (PROMPT_LENGTH) must be an integer >= 1, not 0"),
    ("--gin.BATCH_SIZE=0", "batch_size (BATCH_SIZE) must be an integer >= 1, not 0"),
    ("--gin.DROPOUT_RATE=1.0", "dropout_rate (DROPOUT_RATE) must be a number in [0, 1), not 1.0"),
    ("--gin.LEARNING_RATE=-1", "learning_rate (LEARNING_RATE) must be a finite number > 0, not -1"),
    ("--gin.LEARNING_RATE=0.0", "learning_rate (LEARNING_RATE) must be a finite number > 0, not 0.0"),
    ("--gin.LEARNING_RATE='fast'", "learning_rate (LEARNING_RATE) must be a finite number > 0, not 'fast'"),
])
def test_meaningless_settings_are_refused_before_anything_runs(tmp_path, capsys, flag, message):
  examples = tmp_path / "ex.jsonl"
  _write_examples(examples)
  assert train.main(_argv(examples, tmp_path / "run", 4, 2) + [flag]) == 2
  err = capsys.readouterr().err
  assert err == f"rospr train-prompts: error: {message}.\n"
  assert not (tmp_path / "run").exists()

"""`rospr train-prompts` resumed with other settings (issue 14): a changed learning rate, optimizer or
dropout is refused by name; a resume keeps the first segment's config.gin, records the optimizer in
the export and says what it resumed; an interrupted run's leftovers are removed, by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from rospr_jax import storage
from rospr_jax.commands import train_prompts as train
from rospr_jax.prompt import export

from train_cli_test import ROOT, _argv, _write_examples


def _dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_a_resume_with_other_training_settings_is_refused_and_a_good_one_keeps_the_history(tmp_path, capsys):
  examples, run = tmp_path / "ex.jsonl", tmp_path / "run"
  _write_examples(examples)
  assert train.main(_argv(examples, run, 2, 2)) == 0
  assert "Trained 3 prompts for 2 steps; exports" in capsys.readouterr().out

  # What a killed run leaves: orbax's unfinished checkpoint (orbax sweeps it: cleanup_tmp_directories)
  # and one of our temporaries.
  orbax_tmp = run / "checkpoints" / "4.orbax-checkpoint-tmp-1767225600"
  (orbax_tmp / "state").mkdir(parents=True)
  ours = run / f"{storage.tmp_prefix('config.gin').replace(str(os.getpid()), str(_dead_pid()))}abcd1234"
  ours.write_text("half a config")
  command = [sys.executable, "-m", "rospr_jax.cli", "train-prompts", *_argv(examples, run, 4, 2),
             "--gin.LEARNING_RATE=0.1"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  assert done.returncode == 2, done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  assert f"leftovers of interrupted runs (their writers are gone): {ours}" in done.stderr
  assert not orbax_tmp.exists() and not ours.exists()
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("rospr train-prompts: error: Cannot resume from checkpoint 2 in "), last
  assert "optimizer.learning_rate: checkpoint 0.3, now 0.1" in last

  assert train.main(_argv(examples, run, 4, 2) + ["--gin_file=prompt_tuning/adam.gin"]) == 2
  assert "optimizer: checkpoint 'optax.adafactor', now 'optax.adam'" in capsys.readouterr().err
  assert train.main(_argv(examples, run, 4, 2) + ["--gin.DROPOUT_RATE=0.2"]) == 2
  assert "dropout_rate: checkpoint 0.1, now 0.2" in capsys.readouterr().err

  assert train.main(_argv(examples, run, 4, 2)) == 0
  captured = capsys.readouterr()
  assert "Trained 3 prompts for 4 steps (resumed from step 2: 2 more steps); exports" in captured.out
  assert "Resumed from step 2, trained 2 more steps to 4; exports in" in captured.err
  assert "TRAIN_STEPS = 2" in (run / "config.gin").read_text()  # the first segment's settings stay
  assert "TRAIN_STEPS = 4" in (run / "config-2.gin").read_text()
  manifest = export.load_prompts(str(run / "export")).manifest
  assert manifest["step"] == 4 and manifest["learning_rate"] == 0.3
  assert manifest["optimizer"] == {"name": "optax.adafactor", "clipping_threshold": 1.0, "decay_rate": 0.8,
                                   "learning_rate": 0.3, "multiply_by_parameter_scale": False,
                                   "weight_decay_rate": 1e-05}


def test_a_checkpoint_whose_arrays_changed_is_refused_on_resume_naming_it(tmp_path):
  """Each checkpoint records the sha256 of its arrays: one rewritten with other prompts (orbax's own
  writer, so the files are well formed and only the digest can tell) stops the resume in one line
  instead of resuming silently with other prompts; the user's files are left as they were."""
  import orbax.checkpoint as ocp
  examples, run = tmp_path / "ex.jsonl", tmp_path / "run"
  _write_examples(examples)
  assert train.main(_argv(examples, run, 2, 2)) == 0
  step = run / "checkpoints" / "2"
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(step / "state")
    state["prompts"] = state["prompts"] + 0.0185  # what a flipped byte once did, unnoticed
    checkpointer.save(tmp_path / "tampered", state)
  for path in (step / "state").iterdir():  # the tampered arrays in place of the saved ones
    if path.is_dir():
      shutil.rmtree(path)
    else:
      path.unlink()
  for path in (tmp_path / "tampered").iterdir():
    os.rename(path, step / "state" / path.name)
  before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
  command = [sys.executable, "-m", "rospr_jax.cli", "train-prompts", *_argv(examples, run, 4, 2)]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  assert done.returncode == 2, done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith(f"rospr train-prompts: error: Cannot restore checkpoint 2 in {run / 'checkpoints'}: "
                         "it is damaged"), last
  assert "its arrays or run facts do not match the sha256 recorded when step 2 was saved" in last
  assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".rospr.lock"} == \
      {p: b for p, b in before.items() if p.name != ".rospr.lock"}


def test_a_checkpoint_whose_data_position_changed_is_refused_on_resume(tmp_path):
  """The digest covers the run facts too: a data position edited in `run/metadata` (valid JSON, the
  digest kept) would resume silently on other batches."""
  import json
  examples, run = tmp_path / "ex.jsonl", tmp_path / "run"
  _write_examples(examples)
  assert train.main(_argv(examples, run, 2, 2)) == 0
  metadata = run / "checkpoints" / "2" / "run" / "metadata"
  facts = json.loads(metadata.read_text())
  facts["position"] += 1
  metadata.write_text(json.dumps(facts))
  command = [sys.executable, "-m", "rospr_jax.cli", "train-prompts", *_argv(examples, run, 4, 2)]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
  assert "its arrays or run facts do not match the sha256 recorded when step 2 was saved" in \
      done.stderr.strip().splitlines()[-1]


def test_run_facts_that_are_not_json_are_refused_naming_the_checkpoint(tmp_path):
  examples, run = tmp_path / "ex.jsonl", tmp_path / "run"
  _write_examples(examples)
  assert train.main(_argv(examples, run, 2, 2)) == 0
  metadata = run / "checkpoints" / "2" / "run" / "metadata"
  metadata.write_text('{"position": 2,')  # cut short, as a full disk leaves a file
  command = [sys.executable, "-m", "rospr_jax.cli", "train-prompts", *_argv(examples, run, 4, 2)]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
  last = done.stderr.strip().splitlines()[-1]
  assert f"Cannot restore checkpoint 2 in {run / 'checkpoints'}: it is damaged" in last, last
  assert "its run facts (item 'run' of step 2) are not valid JSON (Expecting" in last, last
  assert metadata.read_text() == '{"position": 2,'  # left as it was

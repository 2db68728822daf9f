"""`rospr train-prompts` with the SeqIO run file end to end: registered rospr tasks (real BIG-bench data
from the fetch cache) tokenized by SeqIO, a Hugging Face checkpoint on disk, prompts exported."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rospr_jax import tokenization
from rospr_jax.data import vocabulary
from rospr_jax.model import get_config, init_params, save_hf
from rospr_jax.commands import train_prompts as train
from rospr_jax.prompt import export

pytest.importorskip("seqio")
SOURCES = ["generated_sentiment_yesno_f0", "generated_weather_words_f2"]


@pytest.mark.slow
def test_seqio_run_file_trains_one_prompt_per_registered_task(tmp_path, capsys):
  tokenizer = tokenization.Tokenizer(vocabulary.offline_vocabulary_path())  # the tasks' vocabulary
  config = get_config("tiny", vocab_size=-(-tokenizer.vocab_size // 128) * 128)
  checkpoint, run = tmp_path / "t0", tmp_path / "run"
  save_hf(str(checkpoint), config, init_params(config, jax.random.PRNGKey(0)))
  argv = ["--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_seqio.gin",
          f"--gin.CHECKPOINT='{checkpoint}'", "--gin_bindings=backbone.load_backbone.size = None",
          f"--gin.MODEL_DIR='{run}'", f"--gin.SOURCES={SOURCES}", "--gin.EXAMPLES_PER_SOURCE=8",
          "--gin.TRAIN_STEPS=2", "--gin.CHECKPOINT_EVERY=2", "--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=48",
          "--gin.TARGET_LENGTH=8", "--gin.PROMPT_LENGTH=4", "--gin_bindings=configs.LoopConfig.summaries = False"]
  assert train.main(argv) == 0
  assert "Trained 2 prompts for 2 steps" in capsys.readouterr().out
  loaded = export.load_prompts(str(run / "export"), expected_sources=SOURCES)
  assert loaded.step == 2 and loaded.prompts.shape == (2, 4, config.emb_dim)
  assert np.all(np.isfinite(loaded.prompts))
  assert [s["examples"] for s in loaded.manifest["sources"]] == [8, 8]
  assert f"SOURCES = {SOURCES}" in (run / "config.gin").read_text()


@pytest.mark.slow
def test_seqio_tasks_tokenized_with_another_vocabulary_are_refused_naming_both(tmp_path):
  import os
  import subprocess
  import sys
  other = vocabulary.train_sentencepiece([f"line {i} of another corpus about words" for i in range(100)],
                                         tmp_path / "other.model", 36)
  config = get_config("tiny")
  checkpoint = tmp_path / "t0"
  save_hf(str(checkpoint), config, init_params(config, jax.random.PRNGKey(0)))
  argv = ["--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_seqio.gin",
          f"--gin.CHECKPOINT='{checkpoint}'", "--gin_bindings=backbone.load_backbone.size = None",
          f"--gin.VOCABULARY='{other}'", f"--gin.MODEL_DIR='{tmp_path / 'run'}'", f"--gin.SOURCES={SOURCES}",
          "--gin.EXAMPLES_PER_SOURCE=4", "--gin.TRAIN_STEPS=1", "--gin.BATCH_SIZE=4"]
  env = {k: v for k, v in os.environ.items() if k != "ROSPR_VOCAB"}
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "train-prompts", *argv], env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert (f"The training examples are tokenized with the SentencePiece model "
          f"{vocabulary.offline_vocabulary_path()}, but the backbone's vocabulary is {other}") in done.stderr
  assert not (tmp_path / "run" / "export").exists()


def test_a_malformed_line_of_a_seqio_source_is_one_line_naming_the_file_and_line(tmp_path):
  import os
  import subprocess
  import sys
  data = tmp_path / "data" / "ag_news"
  data.mkdir(parents=True)
  (data / "train.jsonl").write_text('{"text": "World news today", "label": 0}\n{"text": broken\n')
  argv = ["--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_seqio.gin",
          f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.SOURCES=['ag_news_classify']",
          "--gin.EXAMPLES_PER_SOURCE=4", "--gin.TRAIN_STEPS=1", "--gin.BATCH_SIZE=4"]
  env = {**os.environ, "ROSPR_DATA_DIR": str(tmp_path / "data")}
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "train-prompts", *argv], env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr and "InvalidArgumentError" not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      f"rospr train-prompts: error: SeqIO task 'ag_news_classify': {data / 'train.jsonl'}: line 2 is not "
      "valid JSON (Expecting value at column 10); `rospr tasks` counts the bad lines of every data file")

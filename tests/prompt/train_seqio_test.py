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
SOURCES = ["bigbench_anachronisms", "bigbench_arithmetic"]


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
          "--gin.TARGET_LENGTH=8", "--gin.PROMPT_LENGTH=4", "--gin_bindings=trainer.train.summaries = False"]
  assert train.main(argv) == 0
  assert "Trained 2 prompts for 2 steps" in capsys.readouterr().out
  loaded = export.load_prompts(str(run / "export"), expected_sources=SOURCES)
  assert loaded.step == 2 and loaded.prompts.shape == (2, 4, config.emb_dim)
  assert np.all(np.isfinite(loaded.prompts))
  assert [s["examples"] for s in loaded.manifest["sources"]] == [8, 8]
  assert "SOURCES = ['bigbench_anachronisms', 'bigbench_arithmetic']" in (run / "config.gin").read_text()

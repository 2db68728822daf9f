"""The README's GPU -> TPU route: prompts and a library made on the Hugging Face checkpoint, evaluated on its
`rospr convert` T5X copy. Both are one backbone (one fingerprint), so the library's prompts are accepted
and an evaluation folder begun on one resumes on the other."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from rospr_jax import cli, tokenization
from rospr_jax.backbone import load_backbone
from rospr_jax.library import build, embed, sources as sources_lib

TARGET = "generated_animal_truefalse_f0"


def _evaluate(checkpoint: str, library: str, vocab: str, output_dir) -> int:
  return cli.main(["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
                   f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{output_dir}'",
                   f"--gin.LIBRARY_DIR='{library}'", f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'",
                   f"--gin.VOCABULARY='{vocab}'", f"--gin.TARGETS=['{TARGET}']", "--gin.MAX_EXAMPLES=6",
                   "--gin.NUM_QUERIES=4", "--gin.NUM_NEIGHBORS=3", "--gin.NUM_PROMPTS=2", "--gin.TOP_K=3",
                   "--gin.BATCH_SIZE=4", "--gin.METHODS=['T0', 'RoSPr']"])


def test_a_library_built_on_the_hf_checkpoint_evaluates_on_its_t5x_copy(tiny_model, tmp_path, monkeypatch,
                                                                        capsys):
  monkeypatch.setenv("ROSPR_CACHE", str(tmp_path / "cache"))  # Not the user's fingerprint cache.
  hf, vocab = tiny_model.checkpoint, tiny_model.vocab
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "convert", "--from", hf, "--to",
                         str(tmp_path / "t5x"), "--format", "t5x"], capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  t5x = str(tmp_path / "t5x")

  trained_on = load_backbone(hf).fingerprint  # What train-prompts records in its export.
  assert load_backbone(t5x, dtype="bfloat16").fingerprint == trained_on
  assert f"fingerprint {trained_on}" in done.stdout
  rng = np.random.default_rng(0)
  sources = [sources_lib.SourceTexts(name, [" ".join(rng.permutation(text.split())) for _ in range(6)])
             for name, text in [("code", "def return print for while loop list if else python"),
                                ("talk", "hello how are you today fine thanks and you friend")]]
  prompts = rng.normal(size=(2, 3, tiny_model.config.emb_dim)).astype(np.float32)
  library = str(tmp_path / "library")
  build.build_library(library, sources, prompts, embed.load_embedder(hf, max_length=64),
                      tokenization.Tokenizer(vocab).encode_input, draw=build.DrawConfig(6),
                      index=build.IndexConfig("exact"),
                      prompts_backbone=trained_on)

  # Before v3 fingerprints this was refused: "holds prompts trained on backbone <HF files>; this run's
  # backbone is <T5X files>".
  assert _evaluate(t5x, library, vocab, tmp_path / "eval") == 0, capsys.readouterr().err
  results = json.loads((tmp_path / "eval" / "results.json").read_text())
  assert {row["method"] for row in results["per_template"]} == {"T0", "RoSPr"}
  capsys.readouterr()
  # The same run continued on the Hugging Face checkpoint: the same backbone, nothing scored again.
  assert _evaluate(hf, library, vocab, tmp_path / "eval") == 0
  assert capsys.readouterr().err.count("(resumed)") == 2

"""Equality with Hugging Face's PyTorch T5 on random weights the test creates and saves.

Two shapes: an odd head count with sequences longer than the relative-position max distance, and a
T5-v1.1-like shape with separate encoder / decoder depths. Tolerance 1e-4 in float32 (never loosened).
"""

from __future__ import annotations

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rospr_jax.model import T5, checkpoints  # noqa: E402

SHAPES = {
    "odd_heads_long": dict(vocab_size=96, d_model=30, d_kv=7, d_ff=44, num_heads=3, num_layers=2,
                           num_decoder_layers=2, relative_attention_num_buckets=32,
                           relative_attention_max_distance=24),
    "v11_like": dict(vocab_size=128, d_model=64, d_kv=16, d_ff=96, num_heads=4, num_layers=3,
                     num_decoder_layers=2, relative_attention_num_buckets=16,
                     relative_attention_max_distance=128),
}
LENGTHS = {"odd_heads_long": (70, 40), "v11_like": (150, 9)}  # (inputs, targets): beyond max distance.


def _save_hf(tmp_path, shape: str, seed: int = 0, fmt: str = "safetensors"):
  torch.manual_seed(seed)
  config = transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **SHAPES[shape])
  model = transformers.T5ForConditionalGeneration(config).eval()
  directory = tmp_path / f"{shape}_{fmt}"
  model.save_pretrained(directory, safe_serialization=(fmt == "safetensors"))
  return model, directory


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_encoder_output_and_logits_equal_hugging_face(tmp_path, shape):
  hf_model, directory = _save_hf(tmp_path, shape)
  config, params = checkpoints.load_checkpoint(directory)
  input_length, target_length = LENGTHS[shape]
  rng = np.random.default_rng(0)
  inputs = rng.integers(3, config.vocab_size, (3, input_length))
  inputs[1, input_length // 2:] = 0  # a padded example
  decoder_inputs = rng.integers(3, config.vocab_size, (3, target_length))
  decoder_inputs[:, 0] = 0
  with torch.no_grad():
    out = hf_model(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(inputs > 0).long(),
                   decoder_input_ids=torch.tensor(decoder_inputs))
  model = T5(config)
  encoded = model.apply({"params": params}, jnp.asarray(inputs), method=T5.encode)
  logits = model.apply({"params": params}, jnp.asarray(inputs), jnp.asarray(decoder_inputs))
  real = inputs > 0
  np.testing.assert_allclose(np.asarray(encoded)[real], out.encoder_last_hidden_state.numpy()[real], atol=1e-4)
  np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=1e-4)


def _train_sentencepiece(directory) -> str:
  import sentencepiece
  corpus = directory / "corpus.txt"
  words = "the cat sat on a mat while dogs ran far away and birds sang yes no maybe true false".split()
  rng = np.random.default_rng(0)
  corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(300)))
  prefix = str(directory / "spiece")
  sentencepiece.SentencePieceTrainer.Train(
      input=str(corpus), model_prefix=prefix, vocab_size=40, model_type="unigram", pad_id=0, eos_id=1,
      unk_id=2, bos_id=-1, minloglevel=2)
  return prefix + ".model"


def test_rospr_score_equals_pytorch_scores(tmp_path, capsys):
  from rospr_jax import cli
  hf_model, directory = _save_hf(tmp_path, "v11_like", seed=1)
  spm = _train_sentencepiece(tmp_path)
  (directory / "spiece.model").write_bytes(open(spm, "rb").read())
  text, choices = "the cat sat on a mat while dogs ran", ["yes", "no", "maybe true"]
  assert cli.main(["score", "--checkpoint", str(directory), "--input", text]
                  + [a for c in choices for a in ("--choice", c)]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

  # Independent reference: SentencePiece's own encoding (what T5's vocabulary is), EOS appended to the
  # choices only, and the PyTorch model's log-probabilities summed over each choice's tokens.
  import sentencepiece
  processor = sentencepiece.SentencePieceProcessor(model_file=str(directory / "spiece.model"))
  input_ids = processor.encode(text)
  expected = []
  for choice in choices:
    labels = processor.encode(choice) + [1]
    with torch.no_grad():
      logits = hf_model(input_ids=torch.tensor([input_ids]), labels=torch.tensor([labels])).logits
    log_probs = torch.log_softmax(logits[0], -1).gather(-1, torch.tensor(labels)[:, None])
    expected.append(float(log_probs.sum()))
  assert result["choices"] == choices
  np.testing.assert_allclose(result["scores"], expected, atol=1e-4)
  assert result["prediction"] == int(np.argmax(expected))


def test_rospr_score_without_vocabulary_names_the_directory(tmp_path, capsys):
  from rospr_jax import cli
  _, directory = _save_hf(tmp_path, "v11_like")
  capsys.readouterr()  # the fixture's own output
  assert cli.main(["score", "--checkpoint", str(directory), "--input", "x", "--choice", "y"]) == 2
  assert re.search(f"^rospr score: No SentencePiece model .* in {directory}: pass --vocab",
                   capsys.readouterr().err, re.MULTILINE)

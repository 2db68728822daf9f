"""SentencePiece vocabularies: T5's special ids, the configurable path, the cached offline model."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm

from rospr_jax.data import vocabulary

CORPUS = [f"The {w} of sentence number {i} is {w}." for i in range(300)
          for w in ("premise", "hypothesis", "answer", "question")]


def test_trained_model_has_t5_special_ids(tmp_path):
  path = vocabulary.train_sentencepiece(CORPUS, tmp_path / "v.model", vocab_size=64)
  sp = spm.SentencePieceProcessor(model_file=str(path))
  assert sp.get_piece_size() == 64
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert sp.id_to_piece([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
  assert sp.decode(sp.encode("The answer is premise.")) == "The answer is premise."
  assert sorted(p.name for p in tmp_path.iterdir()) == ["v.model"]  # no temporary files left


def test_training_errors(tmp_path):
  with pytest.raises(ValueError, match=r"the corpus is empty"):
    vocabulary.train_sentencepiece(["", "  "], tmp_path / "v.model")
  with pytest.raises(ValueError, match=r"SentencePiece training for .*v.model failed \(2 lines\)"):
    vocabulary.train_sentencepiece(["a b", "c d"], tmp_path / "v.model", vocab_size=5000)
  assert not (tmp_path / "v.model").exists()


def test_vocabulary_path_precedence(tmp_path, monkeypatch):
  model = tmp_path / "t5.model"
  model.write_bytes(b"x")
  monkeypatch.setenv("ROSPR_VOCAB", str(model))
  assert vocabulary.vocabulary_path() == str(model)
  assert vocabulary.vocabulary_path(str(model)) == str(model)
  monkeypatch.setenv("ROSPR_VOCAB", str(tmp_path / "missing.model"))
  with pytest.raises(FileNotFoundError, match=r"missing.model \(\$ROSPR_VOCAB\) does not exist"):
    vocabulary.vocabulary_path()
  with pytest.raises(FileNotFoundError, match=r"nope.model \(the path given\) does not exist"):
    vocabulary.vocabulary_path(str(tmp_path / "nope.model"))


def test_offline_vocabulary_needs_the_cache(tmp_path):
  with pytest.raises(FileNotFoundError, match="rospr fetch"):
    vocabulary.offline_vocabulary_path(cache=tmp_path)


def test_strip_jinja():
  assert vocabulary.strip_jinja("{% if a %}Is {{ x | upper }} true?{# c #} ||| {{ y }}{% endif %}").split() == \
      ["Is", "true?"]


def test_cached_offline_vocabulary(templates_dir):  # built by `rospr fetch`
  path = vocabulary.offline_vocabulary_path()
  manifest = json.loads(open(path[:-len(".model")] + ".json").read())
  assert manifest["vocab_size"] == vocabulary.OFFLINE_VOCAB_SIZE and manifest["corpus_lines"] > 100_000
  sp = spm.SentencePieceProcessor(model_file=path)
  assert (sp.get_piece_size(), sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (3000, 0, 1, 2, -1)
  pieces = sp.encode("Does the premise entail the hypothesis?", out_type=str)
  assert len(pieces) <= 12 and "<unk>" not in pieces

"""SentencePiece vocabularies: T5's special ids, the configurable path, the cached offline model."""

from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece as spm

from rospr_jax.data import generated, vocabulary

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


def test_a_damaged_offline_vocabulary_is_refused_naming_the_retrain_command(tmp_path, monkeypatch):
  folder = tmp_path / "offline_vocab"
  shutil.copytree(vocabulary.OFFLINE_VOCAB_DIR, folder)
  monkeypatch.setattr(vocabulary, "OFFLINE_VOCAB_DIR", folder)
  assert vocabulary.offline_vocabulary_path() == str(folder / f"{vocabulary.OFFLINE_VOCAB_NAME}.model")
  model = folder / f"{vocabulary.OFFLINE_VOCAB_NAME}.model"
  model.write_bytes(model.read_bytes()[:-1] + b"x")
  with pytest.raises(ValueError, match=rf"{model} does not match the sha256 in .*json; restore it from git or "
                                       r"run `python -m rospr_jax.data.vocabulary --retrain`"):
    vocabulary.offline_vocabulary_path()
  model.unlink()
  with pytest.raises(FileNotFoundError, match=r"is missing; restore it from git or run `python -m"):
    vocabulary.offline_vocabulary_path()


def test_strip_jinja():
  assert vocabulary.strip_jinja("{% if a %}Is {{ x | upper }} true?{# c #} ||| {{ y }}{% endif %}").split() == \
      ["Is", "true?"]


def test_committed_offline_vocabulary():
  path = vocabulary.offline_vocabulary_path()  # no cache, no download: it is in the package
  manifest = json.loads(open(path[:-len(".model")] + ".json").read())
  assert manifest["vocab_size"] == vocabulary.OFFLINE_VOCAB_SIZE == 2000 and manifest["corpus_lines"] > 10_000
  sp = spm.SentencePieceProcessor(model_file=path)
  assert (sp.get_piece_size(), sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (2000, 0, 1, 2, -1)
  pieces = sp.encode("Does the premise entail the hypothesis?", out_type=str)
  assert len(pieces) <= 12 and "<unk>" not in pieces
  for text in generated.corpus():  # the demo's data tokenizes without unknown pieces
    assert sp.unk_id() not in sp.encode(text), text


def test_retraining_reproduces_the_committed_pieces(templates_dir, tmp_path):
  """The one command retrains the committed model (with promptsource cached, as it was trained):
  every piece and score is the same (the file's bytes differ only in the trainer's temporary path)."""
  manifest = vocabulary.retrain_offline_vocabulary(tmp_path)
  committed = json.loads((vocabulary.OFFLINE_VOCAB_DIR / f"{vocabulary.OFFLINE_VOCAB_NAME}.json").read_text())
  assert manifest["corpus_sha256"] == committed["corpus_sha256"] and manifest["promptsource_templates"]
  a = spm.SentencePieceProcessor(model_file=vocabulary.offline_vocabulary_path())
  b = spm.SentencePieceProcessor(model_file=str(tmp_path / f"{vocabulary.OFFLINE_VOCAB_NAME}.model"))
  assert [(a.id_to_piece(i), a.get_score(i)) for i in range(2000)] == \
      [(b.id_to_piece(i), b.get_score(i)) for i in range(2000)]

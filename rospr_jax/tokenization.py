"""SentencePiece tokenization with T0's conventions, without TensorFlow.

Inputs are tokenized without EOS; targets (answer choices) with EOS. Ids 0 (pad), 1 (EOS) and 2 (UNK)
are the T5 vocabulary's; a model this project trains uses the same.
"""

from __future__ import annotations

import os
import re

from rospr_jax import storage
from rospr_jax.model.config import EOS_ID

SPM_FILE_NAMES = ("spiece.model", "sentencepiece.model", "tokenizer.model")


def find_sentencepiece_model(checkpoint_dir: str, required: bool = True) -> str | None:
  """The SentencePiece model shipped in a checkpoint (None when there is none and not `required`).

  Looked for in `checkpoint_dir` (a Hugging Face directory, a T5X `checkpoint_<step>` or model
  directory; a T5X `checkpoint` file stands for its folder), then, for T5X, in the latest
  `checkpoint_<step>` of a model directory, or in the model directory of a `checkpoint_<step>`.
  """
  folder = os.path.dirname(checkpoint_dir) if os.path.isfile(checkpoint_dir) else checkpoint_dir
  folders = [folder]
  if re.fullmatch(r"checkpoint_\d+", os.path.basename(os.path.normpath(folder))):
    folders.append(os.path.dirname(os.path.normpath(folder)))
  elif os.path.isdir(folder):
    steps = sorted((int(m.group(1)), m.group(0)) for m in map(re.compile(r"checkpoint_(\d+)").fullmatch,
                                                             os.listdir(folder)) if m)
    folders += [os.path.join(folder, steps[-1][1])] if steps else []
  for path in (os.path.join(f, name) for f in folders for name in SPM_FILE_NAMES):
    if os.path.isfile(path):
      return path
  if not required:
    return None
  raise FileNotFoundError(
      f"No SentencePiece model ({', '.join(SPM_FILE_NAMES)}) in {checkpoint_dir}: pass --vocab PATH "
      "(gin: --gin.VOCABULARY=\"'PATH'\"; for T0, the T5 vocabulary `spiece.model`).")


def same_vocabulary(a: str, b: str) -> bool:
  """Whether two SentencePiece model files are the same model (same bytes; paths need not match)."""
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  return all(os.path.isfile(p) for p in (a, b)) and storage.sha256_file(a) == storage.sha256_file(b)


def check_same_vocabulary(data_vocabulary: str | None, model_vocabulary: str | None, what: str) -> None:
  """Refuses `what` (examples, SeqIO tasks) tokenized with another SentencePiece model than the
  backbone's: their ids would index the wrong embeddings and score silently wrong. None skips."""
  if data_vocabulary is None or model_vocabulary is None or same_vocabulary(data_vocabulary, model_vocabulary):
    return
  raise ValueError(
      f"{what} are tokenized with the SentencePiece model {data_vocabulary}, but the backbone's "
      f"vocabulary is {model_vocabulary}: they differ. Tokenize with the backbone's (for the SeqIO "
      f"tasks: export ROSPR_VOCAB={model_vocabulary}, or bind "
      f"rospr_tasks.vocab.vocabulary_path.path), or give the backbone that vocabulary.")


class Tokenizer:
  """Encodes text to ids with a SentencePiece model (pad 0, EOS 1, UNK 2)."""

  def __init__(self, path: str):
    import sentencepiece  # A light dependency, imported where used.
    if not os.path.isfile(path):
      raise FileNotFoundError(f"SentencePiece model not found: {path}")
    self.path = path
    self._sp = sentencepiece.SentencePieceProcessor()
    try:
      self._sp.Load(path)
    except (OSError, RuntimeError) as e:
      raise ValueError(f"Not a readable SentencePiece model: {path} ({e})") from e
    if self._sp.eos_id() != EOS_ID or self._sp.pad_id() not in (0, -1):
      raise ValueError(f"{path} has eos id {self._sp.eos_id()} and pad id {self._sp.pad_id()}; "
                       f"T5 vocabularies use pad 0 and eos {EOS_ID}.")

  @property
  def vocab_size(self) -> int:
    return self._sp.GetPieceSize()

  def check_fits(self, num_embeddings: int, model: str) -> None:
    """Refuses a model with fewer embedding rows than this vocabulary has pieces (ids past the table
    would embed as NaN: JAX's gather fills, it does not fail)."""
    if self.vocab_size > num_embeddings:
      raise ValueError(f"The vocabulary {self.path} has {self.vocab_size} pieces; {model} has "
                       f"{num_embeddings} embeddings.")

  def encode_input(self, text: str) -> list[int]:
    """Ids of an input: no EOS (T0's evaluation protocol)."""
    return list(self._sp.EncodeAsIds(text))

  def encode_target(self, text: str) -> list[int]:
    """Ids of a target or answer choice, followed by EOS."""
    return list(self._sp.EncodeAsIds(text)) + [EOS_ID]

  def decode(self, ids) -> str:
    return self._sp.DecodeIds([int(i) for i in ids if int(i) > EOS_ID])

"""SentencePiece tokenization with T0's conventions, without TensorFlow.

Inputs are tokenized without EOS; targets (answer choices) with EOS. Ids 0 (pad), 1 (EOS) and 2 (UNK)
are the T5 vocabulary's; a model this project trains uses the same.
"""

from __future__ import annotations

import os

from rospr_jax.model.config import EOS_ID

SPM_FILE_NAMES = ("spiece.model", "sentencepiece.model", "tokenizer.model")


def find_sentencepiece_model(checkpoint_dir: str, required: bool = True) -> str | None:
  """The SentencePiece model shipped in a (Hugging Face) checkpoint directory (None when there is
  none and not `required`)."""
  for name in SPM_FILE_NAMES:
    path = os.path.join(checkpoint_dir, name)
    if os.path.isfile(path):
      return path
  if not required:
    return None
  raise FileNotFoundError(
      f"No SentencePiece model ({', '.join(SPM_FILE_NAMES)}) in {checkpoint_dir}: pass --vocab PATH "
      "(gin: --gin.VOCABULARY=\"'PATH'\"; for T0, the T5 vocabulary `spiece.model`).")


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

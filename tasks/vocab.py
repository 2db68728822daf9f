"""The SeqIO vocabulary of every rospr task: T0's SentencePiece model, or the offline one.

The file is resolved on first use, not at import, so that `ROSPR_VOCAB` and the gin binding

    rospr_tasks.vocab.vocabulary_path.path = "gs://.../cc_all.32000/sentencepiece.model"

(T0 uses T5's `cc_all.32000` model) take effect even though tasks are registered when the package is
imported. Without either, the offline vocabulary (`rospr_jax.data.vocabulary`) is used.
"""

from __future__ import annotations

import gin
import seqio

from rospr_jax.data import vocabulary as vocabulary_lib


@gin.configurable
def vocabulary_path(path: str | None = None) -> str:
  """`path`, else $ROSPR_VOCAB, else the offline vocabulary (trained once if absent)."""
  return vocabulary_lib.vocabulary_path(path)


class LazySentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """A seqio.SentencePieceVocabulary whose model file is looked up when first needed."""

  def __init__(self, path: str | None = None, extra_ids: int = 0):
    super().__init__(sentencepiece_model_file=path or "", extra_ids=extra_ids)

  @property
  def _sentencepiece_model_file(self) -> str:  # read by seqio when it loads the model
    return self._explicit_path or vocabulary_path()

  @_sentencepiece_model_file.setter
  def _sentencepiece_model_file(self, value: str) -> None:
    self._explicit_path = value or None


_VOCABULARY = LazySentencePieceVocabulary()


def get_vocabulary() -> seqio.Vocabulary:
  """The vocabulary shared by all rospr tasks (one object, so mixtures see equal features)."""
  return _VOCABULARY


def output_features() -> dict[str, seqio.Feature]:
  """T0's features: inputs without EOS, targets with EOS."""
  vocab = get_vocabulary()
  return {
      "inputs": seqio.Feature(vocab, add_eos=False, required=True),
      "targets": seqio.Feature(vocab, add_eos=True, required=True),
  }


def task_vocabulary_file(task: seqio.Task | seqio.Mixture) -> str | None:
  """The SentencePiece model file a task (or every task of a mixture) tokenizes with (None when its
  features use another kind of vocabulary); tasks that disagree are refused, naming them."""
  files = {}
  for sub in seqio.get_subtasks(task):
    for feature in sub.output_features.values():
      path = getattr(feature.vocabulary, "sentencepiece_model_file", None)
      if path:
        files.setdefault(path, sub.name)
  if len(files) > 1:
    raise ValueError(f"{task.name!r}: its tasks tokenize with different SentencePiece models "
                     f"({', '.join(f'{t}: {p}' for p, t in files.items())}).")
  return next(iter(files), None)

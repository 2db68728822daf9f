"""The vocabulary-fits-the-model check every entry point runs before embedding token ids."""

from __future__ import annotations

import pytest

from rospr_jax import tokenization
from rospr_jax.data import vocabulary


def test_a_model_with_fewer_embeddings_than_pieces_is_refused_by_name():
  tokenizer = tokenization.Tokenizer(vocabulary.offline_vocabulary_path())
  assert tokenizer.vocab_size == 2000  # the offline vocabulary's size, by its file name
  tokenizer.check_fits(2000, "the retriever")
  tokenizer.check_fits(2048, "the retriever")
  with pytest.raises(ValueError, match=rf"The vocabulary {tokenizer.path} has 2000 pieces; the retriever "
                                       r"/ckpt/r has 1999 embeddings\."):
    tokenizer.check_fits(1999, "the retriever /ckpt/r")

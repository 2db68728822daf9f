"""VAR's rank classification: the batched pass predicts what one-at-a-time naive scoring predicts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rospr_jax.eval.scoring import score_choices_naive
from rospr_jax.library.sources import Query
from rospr_jax.model import T5, T5Config, model_for
from rospr_jax.eval.batching import Scorer
from rospr_jax.eval.var import make_predict_choices
from rospr_jax.retrieval import selection

CONFIG = T5Config(vocab_size=40, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=24,
                  num_encoder_layers=1, num_decoder_layers=1, relative_attention_max_distance=12)
MODEL = model_for(CONFIG)


class WordTokenizer:
  """Word i of a fixed list -> id i + 3; choices get EOS (1)."""

  WORDS = "a b c d e f g h i j k l m n o p q r s t u v w x y z yes no maybe".split()

  def encode_input(self, text):
    return [self.WORDS.index(w) + 3 for w in text.split()]

  def encode_target(self, text):
    return self.encode_input(text) + [1]


def test_predict_choices_equals_naive_scoring():
  tokens = jnp.ones((1, 4), jnp.int32)
  params = nn.unbox(jax.jit(lambda rng: T5(CONFIG).init(rng, tokens, tokens))(
      jax.random.PRNGKey(1))["params"])
  prompts = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (3, 2, 16)), np.float32) * 3.0
  queries = [Query("a b c d", ("yes", "no")), Query("e f g", ("yes", "no", "maybe")),
             Query("h i j k l", ("no", "maybe yes")), Query("m", ("maybe", "yes", "no"))]
  tokenizer = WordTokenizer()
  predict = make_predict_choices(queries, scorer=Scorer(params, MODEL, batch_size=4), prompts=prompts,
                                 tokenizer=tokenizer)
  got = predict([2, 0])
  # Reference: every (query, choice) pair through the whole model, all queries padded by hand into
  # one [Q, T] / [Q, C, L] batch (an absent choice is an all-padding row and scores -inf).
  inputs = np.zeros((len(queries), 5), np.int32)
  targets = np.zeros((len(queries), 3, 3), np.int32)
  for q, query in enumerate(queries):
    ids = tokenizer.encode_input(query.text)
    inputs[q, :len(ids)] = ids
    for c, choice in enumerate(query.choices):
      ids = tokenizer.encode_target(choice)
      targets[q, c, :len(ids)] = ids
  naive = jax.jit(score_choices_naive, static_argnames="model")
  expected = [np.argmax(np.asarray(naive(params, jnp.asarray(inputs), jnp.asarray(targets),
                                         jnp.asarray(prompts[s]), model=MODEL)), axis=1).tolist()
              for s in (2, 0)]
  assert got == expected
  # And the rule consumes them: choice counts differ per query (2, 3, 2, 3).
  variances, _ = selection.var_scores([1, 1], got, [2, 3, 2, 3])
  assert variances.shape == (2,)


def test_predict_choices_refuses_queries_without_choices():
  import pytest
  with pytest.raises(ValueError, match=r"queries \[1\] have none"):
    make_predict_choices([Query("a", ("yes",)), Query("b")], scorer=Scorer({}, MODEL),
                         prompts=np.zeros((1, 2, 16), np.float32), tokenizer=WordTokenizer())
  with pytest.raises(ValueError, match="prompts have H = 8; the backbone has H = 16"):
    make_predict_choices([Query("a", ("yes",))], scorer=Scorer({}, MODEL),
                         prompts=np.zeros((1, 2, 8), np.float32), tokenizer=WordTokenizer())

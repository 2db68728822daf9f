"""The backbone protocol: T5 implements it, the steps reach a model only through it, and a new family
is one registration away."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from rospr_jax.eval import scoring
from rospr_jax.library import embed
from rospr_jax.model import (T5, PromptedBackbone, T5Backbone, get_config, init_params, model_for,
                             register_family)


@pytest.fixture(scope="module")
def tiny():
  config = get_config("tiny")
  return config, init_params(config, jax.random.PRNGKey(0))


def test_t5_backbone_implements_the_protocol(tiny):
  config, _ = tiny
  backbone = model_for(config)
  assert isinstance(backbone, T5Backbone) and isinstance(backbone, PromptedBackbone)
  assert hash(backbone) == hash(model_for(config))  # usable as a static jit argument


def test_pooled_encoding_is_the_masked_mean_of_the_encoder_output(tiny):
  config, params = tiny
  tokens = jnp.array([[5, 7, 9, 0, 0], [3, 0, 0, 0, 0], [0, 0, 0, 0, 0]], jnp.int32)
  hidden = np.asarray(T5(config).apply({"params": params}, tokens, method=T5.encode), np.float64)
  expected = np.stack([hidden[0, :3].mean(0), hidden[1, :1].mean(0), np.zeros(config.emb_dim)])
  got = np.asarray(model_for(config).pooled_encoding(params, tokens))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_token_log_likelihoods_are_log_softmax_of_the_logits(tiny):
  config, params = tiny
  inputs = jnp.array([[4, 5, 6, 0]], jnp.int32)
  targets = jnp.array([[8, 9, 1, 0]], jnp.int32)
  prompt = jax.random.normal(jax.random.PRNGKey(1), (2, config.emb_dim))
  decoder_inputs = jnp.array([[0, 8, 9, 1]], jnp.int32)
  logits = np.asarray(T5(config).apply({"params": params}, inputs, decoder_inputs, prompt), np.float64)
  log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  expected = np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1)[..., 0]
  got = model_for(config).token_log_likelihoods(params, inputs, targets, prompt)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_embedding_table_and_abstract_params(tiny):
  config, params = tiny
  backbone = model_for(config)
  assert backbone.embedding_table(params) is params["token_embedder"]["embedding"]
  abstract = backbone.abstract_params()
  embedding = abstract["token_embedder"]["embedding"]
  assert isinstance(embedding, nn.LogicallyPartitioned) and embedding.names == ("vocab", "embed")
  shapes = jax.tree.map(lambda x: x.shape, nn.unbox(abstract))
  assert shapes == jax.tree.map(lambda x: x.shape, params)


def test_an_unregistered_config_type_is_refused_by_name():
  @dataclasses.dataclass(frozen=True)
  class MysteryConfig:
    size: int = 1
  with pytest.raises(TypeError, match="MysteryConfig .*known: .*T5Config"):
    model_for(MysteryConfig())


@dataclasses.dataclass(frozen=True)
class BagConfig:
  """A throwaway family: a choice scores the dot product of its mean token vector with the input's."""
  vocab_size: int = 16
  emb_dim: int = 3


@dataclasses.dataclass(frozen=True)
class BagBackbone:
  config: BagConfig

  def token_log_likelihoods(self, params, inputs, targets, prompt=None, *, dropout_rng=None):
    return jnp.zeros(targets.shape, jnp.float32)

  def choice_scores(self, params, inputs, targets, prompt=None):
    table = params["table"]
    query = self.pooled_encoding(params, inputs)  # [B, H]
    choice = jnp.sum(table[targets] * (targets > 0)[..., None], axis=-2)  # [B, C, H]
    return jnp.einsum("bh,bch->bc", query, choice)

  def pooled_encoding(self, params, tokens):
    real = (tokens > 0)[..., None]
    return jnp.sum(params["table"][tokens] * real, 1) / jnp.maximum(real.sum(1), 1)

  def embedding_table(self, params):
    return params["table"]

  def abstract_params(self):
    return {"table": jax.ShapeDtypeStruct((self.config.vocab_size, self.config.emb_dim), jnp.float32)}


def test_a_new_family_is_one_registration_and_the_steps_use_it():
  register_family(BagConfig, BagBackbone)
  model = model_for(BagConfig())  # where a model is assembled; the steps take it
  table = np.arange(48, dtype=np.float32).reshape(16, 3) / 10.0
  params = {"table": jnp.asarray(table)}
  inputs = jnp.array([[1, 2, 0]], jnp.int32)
  targets = jnp.array([[[3, 0], [4, 5]]], jnp.int32)
  query = table[[1, 2]].mean(0)
  expected = [query @ table[3], query @ (table[4] + table[5])]
  np.testing.assert_allclose(np.asarray(scoring.score_choices(params, inputs, targets, model=model))[0],
                             expected, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(embed.mean_encoder_states(params, inputs, model=model))[0],
                             query, rtol=1e-6)

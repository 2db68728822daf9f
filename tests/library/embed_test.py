"""Embeddings: bucketing and batching never change an embedding."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import linen as nn

from rospr_jax.library import embed
from rospr_jax.model import T5, get_config, model_for


@pytest.fixture(scope="module")
def tiny():
  config = get_config("tiny")
  # Only the encoder side: the parameters an embedding uses.
  params = T5(config).init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32), method=T5.encode)
  return config, dict(nn.unbox(params["params"]))


@jax.jit
def _encode(params, tokens):
  return T5(get_config("tiny")).apply({"params": params}, tokens, method=T5.encode)


def _unbatched(params, seq):
  """One example, no padding: the mean of its encoder states over every position."""
  hidden = _encode(params, np.asarray([seq], np.int32))  # [1, T, H]
  return np.asarray(hidden)[0].mean(axis=0)


def test_bucket_lengths():
  assert embed.bucket_lengths(512) == [16, 32, 64, 128, 256, 512]
  assert embed.bucket_lengths(100, 16) == [16, 32, 64, 100]
  assert embed.bucket_lengths(8, 16) == [8]


def test_batched_bucketed_embedding_equals_unbatched(tiny):
  config, params = tiny
  rng = np.random.default_rng(0)
  # Four distinct lengths (one reference compile each) spread over the buckets 16, 32 and 64.
  lengths = [5, 17, 5, 40, 64, 5, 17, 40]
  sequences = [rng.integers(3, config.vocab_size, n).tolist() for n in lengths]
  embedder = embed.Embedder(model_for(config), params, max_length=64, tokens_per_batch=32)
  before = embed.mean_encoder_states._cache_size()
  out = embedder.embed(sequences, normalize=False)
  # Buckets 16, 32, 64 (2, 1 and 1 rows per batch): one compiled shape each, however many batches.
  assert embed.mean_encoder_states._cache_size() - before <= 3
  reference = np.stack([_unbatched(params, s) for s in sequences])
  np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
  normalized = embedder.embed(sequences)
  np.testing.assert_allclose(
      normalized, reference / np.linalg.norm(reference, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
  # The same embedding whatever else is in the batch.
  alone = embedder.embed([sequences[3]], normalize=False)
  np.testing.assert_allclose(alone[0], out[3], rtol=1e-5, atol=1e-6)


def test_truncation_is_counted(tiny):
  config, params = tiny
  embedder = embed.Embedder(model_for(config), params, max_length=16)
  seq = list(range(3, 30))
  out = embedder.embed([seq, seq[:16]], normalize=False)
  assert embedder.truncated == 1
  np.testing.assert_allclose(out[0], out[1], rtol=1e-6)


def test_errors_name_the_sequence(tiny):
  config, params = tiny
  embedder = embed.Embedder(model_for(config), params, max_length=16)
  with pytest.raises(ValueError, match="Sequence 1 is empty"):
    embedder.embed([[5], []])
  with pytest.raises(ValueError, match=r"Sequence 1 holds token id 512; ids must be in \[1, 512\)"):
    embedder.embed([[5], [4, 512]])
  with pytest.raises(ValueError, match=r"Text 0 \('   '\) tokenizes to nothing"):
    embedder.embed_texts(["   "], lambda text: text.split())


def test_fingerprint_tracks_encoder_weights_only(tiny):
  config, params = tiny
  params = {**params, "decoder": {"decoder_norm": {"scale": np.ones(config.emb_dim, np.float32)}}}
  base = embed.retriever_fingerprint(config, params)
  changed_decoder = jax.tree_util.tree_map(lambda x: x, params)
  changed_decoder["decoder"]["decoder_norm"]["scale"] = params["decoder"]["decoder_norm"]["scale"] + 1
  assert embed.retriever_fingerprint(config, changed_decoder) == base
  changed_encoder = jax.tree_util.tree_map(lambda x: x, params)
  changed_encoder["encoder"]["encoder_norm"]["scale"] = params["encoder"]["encoder_norm"]["scale"] + 1
  assert embed.retriever_fingerprint(config, changed_encoder) != base
  assert embed.retriever_fingerprint(config.replace(dtype="bfloat16"), params) != base
  # Training-only settings (dropout, remat) do not change what the encoder computes.
  training = config.replace(dropout_rate=0.3, dropout_broadcast_dims=(), remat_policy="full")
  assert embed.retriever_fingerprint(training, params) == base
  assert embed.Embedder(model_for(config), params).fingerprint == base


def test_data_parallel_embedding_equals_one_device(tiny):
  config, params = tiny
  partitioner = embed.local_data_partitioner()
  assert partitioner is not None and partitioner.data_size == 8  # conftest: 8 simulated devices
  rng = np.random.default_rng(5)
  sequences = [list(rng.integers(3, config.vocab_size, n)) for n in (3, 40, 17, 9, 64, 1, 33, 12, 50, 5, 28)]
  single = embed.Embedder(model_for(config), params, max_length=64, tokens_per_batch=100)
  parallel = embed.Embedder(model_for(config), params, max_length=64, tokens_per_batch=100,
                            partitioner=partitioner)
  assert [parallel.rows_per_batch(b) for b in (16, 64)] == [8, 8]  # 6 and 1 rounded up to 8
  assert single.fingerprint == parallel.fingerprint
  np.testing.assert_allclose(parallel.embed(sequences), single.embed(sequences), rtol=1e-5, atol=1e-6)

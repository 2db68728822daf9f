"""The encode-once scorer against the naive scorer, padding, bucketing and sharding invariances."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rospr_jax.eval import batching
from rospr_jax.eval.batching import (RankExample, choices_bucket, choices_per_row, length_bucket, make_batches,
                                     score_examples)
from rospr_jax.eval.scoring import score_choices, score_choices_naive
from rospr_jax.model import T5Config, init_params, model_for
from rospr_jax.model import partitioning

CONFIG = T5Config(vocab_size=80, emb_dim=32, num_heads=3, head_dim=8, mlp_dim=48, num_encoder_layers=2,
                  num_decoder_layers=2, relative_attention_max_distance=12)
MODEL = model_for(CONFIG)


@pytest.fixture(scope="module")
def params():
  return init_params(CONFIG, jax.random.PRNGKey(0))


def _random_examples(seed: int, count: int, max_input_length: int = 30,
                     choice_counts=(2, 3)) -> list[RankExample]:
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(count):
    num_choices = int(rng.choice(choice_counts))
    inputs = rng.integers(3, 80, int(rng.integers(1, max_input_length))).tolist()
    choices = [rng.integers(3, 80, int(rng.integers(1, 7))).tolist() + [1] for _ in range(num_choices)]
    examples.append(RankExample(inputs, choices, prompt_id=int(rng.integers(0, 2))))
  return examples


def _dense(examples):
  """Pads examples into [B, T] / [B, C, L] arrays by hand, without the bucketing code."""
  t = max(len(e.inputs) for e in examples)
  c = max(len(e.choices) for e in examples)
  l = max(len(x) for e in examples for x in e.choices)
  inputs = np.zeros((len(examples), t), np.int32)
  targets = np.zeros((len(examples), c, l), np.int32)
  for i, e in enumerate(examples):
    inputs[i, :len(e.inputs)] = e.inputs
    for j, x in enumerate(e.choices):
      targets[i, j, :len(x)] = x
  return jnp.asarray(inputs), jnp.asarray(targets)


@pytest.mark.parametrize("prompt_kind", [None, "shared", "per_example"])
def test_encode_once_equals_naive(params, prompt_kind):
  examples = _random_examples(0, 6)
  inputs, targets = _dense(examples)
  prompt = {None: None,
            "shared": jax.random.normal(jax.random.PRNGKey(1), (4, 32)),
            "per_example": jax.random.normal(jax.random.PRNGKey(2), (6, 4, 32))}[prompt_kind]
  fast = score_choices(params, inputs, targets, prompt, model=MODEL)
  naive = score_choices_naive(params, inputs, targets, prompt, model=MODEL)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(naive), atol=1e-4, rtol=1e-5)
  absent = np.asarray(targets).sum(-1) == 0
  assert np.all(np.isneginf(np.asarray(fast)[absent])) and np.all(np.isfinite(np.asarray(fast)[~absent]))


def test_batched_scores_equal_one_at_a_time(params):
  """Bucketing, batch padding and grouping never change an example's scores."""
  examples = _random_examples(3, 11)
  prompts = jax.random.normal(jax.random.PRNGKey(5), (2, 3, 32))
  batched = score_examples(params, MODEL, examples, prompts=prompts, batch_size=4)
  for example, got in zip(examples, batched):
    # The reference: this example alone, padded to one fixed shape by hand, through the naive scorer.
    inputs = np.zeros((1, 32), np.int32)
    inputs[0, :len(example.inputs)] = example.inputs
    targets = np.zeros((1, len(example.choices), 8), np.int32)
    for j, choice in enumerate(example.choices):
      targets[0, j, :len(choice)] = choice
    alone = score_choices_naive(params, jnp.asarray(inputs), jnp.asarray(targets),
                                prompts[example.prompt_id], model=MODEL)
    np.testing.assert_allclose(got, np.asarray(alone)[0], atol=1e-4, rtol=1e-5)


def test_a_batch_size_beyond_the_rows_is_the_rows_and_scores_the_same(params, monkeypatch):
  """Was: evaluate with BATCH_SIZE=100000000 on 3 examples padded every batch to 10^8 rows and was
  killed by the kernel. Batches never hold more rows than there are."""
  examples = _random_examples(4, 5)
  shapes = []
  real = batching._batches
  monkeypatch.setattr(batching, "_batches", lambda ex, groups, size: (shapes.append(size), real(ex, groups, size))[1])
  huge = score_examples(params, MODEL, examples, batch_size=10**8)
  assert shapes == [5]  # 5 examples of at most 3 choices: one row each
  for got, want in zip(huge, score_examples(params, MODEL, examples, batch_size=2)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6)


def test_the_scoring_memory_lower_bound_by_hand():
  # B 2, S 10, D 6 (float32, 3 heads, H 32): host 4 B (S + D); bias 4 A S^2; states 4 B (S + D) H;
  # einsum weights 4 B A max(S^2, D (D + S)) = 4 * 2 * 3 * max(100, 96).
  need = batching.scoring_memory_lower_bound(CONFIG, batch_size=2, input_length=10, decoder_tokens=6)
  assert need == 4 * 2 * 16 + 4 * 3 * 100 + 4 * 2 * 16 * 32 + 4 * 2 * 3 * 100
  fused = batching.scoring_memory_lower_bound(CONFIG.replace(attention_impl="xla"), batch_size=2, input_length=10,
                                              decoder_tokens=6)
  assert fused == need - 4 * 2 * 3 * 100


def test_a_batch_that_cannot_fit_is_refused_naming_batch_size(params, monkeypatch):
  monkeypatch.setattr(partitioning, "memory_limit", lambda: (10_000, "this host's memory"))
  with pytest.raises(ValueError, match=r"^Scoring needs at least .* GiB per batch \(BATCH_SIZE 5 rows of 32 input and "
                                       r"32 answer tokens\), more than the 0.0 GiB of this host's memory; lower "
                                       r"BATCH_SIZE\.$"):
    score_examples(params, MODEL, _random_examples(4, 5), batch_size=64)


def test_batches_have_few_shapes_and_no_lost_examples():
  examples = _random_examples(4, 40)
  batches = list(make_batches(examples, batch_size=8))
  shapes = {(b.inputs.shape, b.targets.shape) for b in batches}
  assert len(shapes) <= 3 * 2  # input buckets {8, 16, 32} x choice slots {2, 4} x targets {8}, at most
  assert {b.targets.shape[1] for b in batches} <= {2, 4}
  seen = sorted(int(i) for b in batches for i in b.indices if i >= 0)
  assert seen == list(range(40))
  assert all(b.inputs.shape[0] == 8 for b in batches)


def test_length_bucket():
  assert [length_bucket(n) for n in (0, 1, 8, 9, 16, 17, 300)] == [8, 8, 8, 16, 16, 32, 512]


def test_choices_bucket():
  assert [choices_bucket(c) for c in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 4, 8, 16]


def test_example_without_choices_is_refused():
  with pytest.raises(ValueError, match="Example 1 has no answer choices"):
    list(make_batches([RankExample([3], [[4, 1]]), RankExample([3], [])], batch_size=2))


@pytest.mark.parametrize("num_partitions", [1, 2])
def test_sharded_scoring_equals_single_device(num_partitions):
  config = CONFIG.replace(num_heads=4)  # heads split over the `model` axis.
  params = init_params(config, jax.random.PRNGKey(0))
  examples = _random_examples(6, 12, max_input_length=8, choice_counts=(2,))  # one bucket: one compile
  expected = score_examples(params, model_for(config), examples, batch_size=8)
  partitioner = partitioning.Partitioner(num_partitions)
  boxed = init_params(config, jax.random.PRNGKey(0), boxed=True)
  sharded = partitioner.shard_params(params, boxed)
  got = score_examples(sharded, model_for(config), examples, batch_size=8, partitioner=partitioner)
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def test_choices_per_row_caps_the_side_by_side_decoder():
  assert choices_per_row(3, 8, 512) == 4
  assert choices_per_row(100, 8, 512) == 64
  assert choices_per_row(100, 64, 512) == 8
  assert choices_per_row(5, 1024, 512) == 1


def test_examples_with_many_choices_split_over_rows(params):
  """An example whose choices do not fit one row is scored over several rows, unchanged."""
  rng = np.random.default_rng(7)
  example = RankExample(rng.integers(3, 80, 9).tolist(),
                        [rng.integers(3, 80, int(rng.integers(1, 7))).tolist() + [1] for _ in range(11)])
  batches = list(make_batches([example], batch_size=4, max_decoder_tokens=32))
  assert sorted(int(o) for b in batches for o, i in zip(b.offsets, b.indices) if i >= 0) == [0, 4, 8]
  got = score_examples(params, MODEL, [example], batch_size=4, max_decoder_tokens=32)[0]
  inputs, targets = _dense([example])
  expected = np.asarray(score_choices_naive(params, inputs, targets, model=MODEL))[0]
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the cuDNN kernel needs an NVIDIA GPU "
                    "(bench/gpu.sh runs this file on the card)")
@pytest.mark.parametrize("fused_padding", ["bias", "lengths"])
def test_cudnn_scores_are_as_close_to_float32_as_the_einsum_ones(fused_padding):
  """On the card: bfloat16 scores through the fused cuDNN attention lie no farther from the float32
  reference than bfloat16 scores through the einsums (padded inputs, a soft prompt, 3 choices)."""
  config = T5Config(vocab_size=512, emb_dim=256, num_heads=4, head_dim=64, mlp_dim=512,
                    num_encoder_layers=2, num_decoder_layers=2)
  params32 = init_params(config, jax.random.PRNGKey(3))
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params32)
  rng = np.random.default_rng(4)
  inputs = rng.integers(3, 512, (8, 64))
  inputs[1, 40:] = 0
  inputs[5, 9:] = 0
  targets = rng.integers(3, 512, (8, 3, 8))
  targets[:, :, -2:] = 0
  targets[:, :, -3] = 1
  inputs, targets = jnp.asarray(inputs, jnp.int32), jnp.asarray(targets, jnp.int32)
  prompt = jax.random.uniform(jax.random.PRNGKey(5), (8, 256), minval=-0.5, maxval=0.5)

  def scores(params, **changes):
    return np.asarray(score_choices(params, inputs, targets, prompt,
                                     model=model_for(config.replace(**changes))),
                      np.float64)

  reference = scores(params32)
  einsum = scores(params16, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  cudnn = scores(params16, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention_impl="cudnn",
                 fused_padding=fused_padding)
  scale = np.abs(reference).max()
  einsum_error = np.abs(einsum - reference).max() / scale
  cudnn_error = np.abs(cudnn - reference).max() / scale
  assert einsum_error < 5e-2 and np.isfinite(cudnn).all()
  assert cudnn_error <= 2 * einsum_error + 1e-3, (cudnn_error, einsum_error)


def test_long_inputs_keep_their_first_tokens_and_long_choices_keep_their_eos():
  """T0's truncation: inputs to their first T tokens; an answer choice longer than L keeps its first
  L - 1 tokens and its EOS (cutting it to L tokens would score a choice that never ends)."""
  long_input = list(range(3, 3 + 40))
  long_choice = list(range(100, 120)) + [1]  # 20 tokens and EOS
  (batch,) = make_batches([RankExample(long_input, [long_choice, [7, 1]])], batch_size=1,
                          max_input_length=32, max_target_length=16)
  assert batch.inputs[0].tolist() == long_input[:32]
  assert batch.targets[0, 0].tolist() == list(range(100, 115)) + [1]
  assert batch.targets[0, 1].tolist()[:2] == [7, 1] and not batch.targets[0, 1, 2:].any()


def test_a_scorer_places_host_weights_on_the_device_once_and_scores_as_they_do(params):
  """A checkpoint's weights are read as numpy arrays: the scorer puts them on the device when it is
  made, so no scoring batch copies them again, and its scores are those of the host arrays."""
  host = jax.tree.map(np.asarray, params)
  scorer = batching.Scorer(host, MODEL, batch_size=4)
  device = jax.devices()[0]
  assert all(isinstance(leaf, jax.Array) and leaf.devices() == {device}
             for leaf in jax.tree.leaves(scorer.params))
  examples = _random_examples(7, 5)
  expected = batching.score_examples(host, MODEL, examples, batch_size=4)
  for got, want in zip(scorer(examples), expected):
    np.testing.assert_array_equal(got, want)

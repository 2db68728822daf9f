"""The multi-prompt step: only prompts move, the loss is T0's, joint equals separate, sharded equals
single-device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rospr_jax.model import T5, model_for, partitioning, shift_right
from rospr_jax.prompt.input_pipeline import BatchIterator
from rospr_jax.prompt.train_step import (default_optimizer, dropout_key, init_state, make_train_step, place_batch,
                                         place_state, present_sources)

P = 3
ADAFACTOR = default_optimizer()
ADAM = optax.adam(0.05)


def _table(num_sources, config, seed=1):
  return np.array(jax.random.uniform(jax.random.PRNGKey(seed), (num_sources, P, config.emb_dim),
                                       minval=-0.5, maxval=0.5))


def _batches(examples, num_sources, count, batch_size=8):
  it = BatchIterator(examples(num_sources, 40, seed=num_sources), batch_size=batch_size, input_length=16,
                     target_length=4, seed=0)
  return [next(it) for _ in range(count)]


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_present_sources_slots():
  source_ids = jnp.asarray([4, 1, 4, 0, 2, 1], jnp.int32)
  real = jnp.asarray([True, True, True, False, True, True])
  present, slots = present_sources(source_ids, real, num_sources=5)
  np.testing.assert_array_equal(present, [1, 2, 4, 5, 5])  # K = min(S, B) = 5; unused slots hold S
  np.testing.assert_array_equal(np.asarray(present)[np.asarray(slots)[np.asarray(real)]], [4, 1, 4, 2, 1])


def test_loss_is_sum_of_per_source_mean_token_losses(config, params, examples):
  """The step's loss against a per-example numpy cross-entropy, source by source."""
  batch = _batches(examples, 3, 1)[0]
  batch["targets"][5] = 0  # a padding row: no target tokens, must not count
  table = _table(3, config)
  step = make_train_step(model_for(config), ADAFACTOR)
  _, metrics = step(init_state(table, ADAFACTOR), params, place_batch(batch, None), jax.random.PRNGKey(0))
  forward = jax.jit(lambda inputs, targets, prompt: T5(config).apply(
      {"params": params}, inputs, shift_right(targets), prompt))
  per_source = []
  for s in range(3):
    losses, tokens = 0.0, 0
    for b in np.flatnonzero(batch["source_ids"] == s):
      targets = batch["targets"][b:b + 1]
      logits = np.asarray(forward(batch["inputs"][b:b + 1], targets, table[s]), np.float64)[0]
      log_probs = _log_softmax(logits)
      for l, t in enumerate(targets[0]):
        if t > 0:
          losses -= log_probs[l, t]
          tokens += 1
    if tokens:
      per_source.append(losses / tokens)
  np.testing.assert_allclose(float(metrics["loss_sum"]), sum(per_source), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss"]), np.mean(per_source), rtol=1e-5)
  assert int(metrics["num_sources"]) == len(per_source)
  assert int(metrics["target_tokens"]) == int((batch["targets"] > 0).sum())


def test_only_present_prompts_change_and_backbone_is_untouched(config, params, examples):
  batch = _batches(examples, 3, 1)[0]
  batch["source_ids"] = np.where(batch["source_ids"] == 2, 0, batch["source_ids"])  # source 2 absent
  table = _table(3, config)
  state = init_state(table, ADAFACTOR)
  state = state.replace(source_steps=jnp.asarray([0, 0, 7], jnp.int32))
  before = jax.device_get(state)
  device_params = jax.device_put(params)
  step = make_train_step(model_for(config), ADAFACTOR)
  for i in range(2):
    state, _ = step(state, device_params, place_batch(batch, None), jax.random.PRNGKey(i))
  after = jax.device_get(state)
  # The frozen parameters passed in are the loaded ones, bit for bit (and still alive: not donated).
  for a, b in zip(jax.tree.leaves(device_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert not np.allclose(after.prompts[0], table[0]) and not np.allclose(after.prompts[1], table[1])
  np.testing.assert_array_equal(after.prompts[2], table[2])
  for old, new in zip(jax.tree.leaves(before.opt_state), jax.tree.leaves(after.opt_state)):
    np.testing.assert_array_equal(new[2], old[2])  # moments and step count of the absent prompt
  np.testing.assert_array_equal(after.source_steps, [2, 2, 7])
  assert int(after.step) == 2
  # The optimizer state holds the prompts' moments only: every leaf is [S, ...] of at most [S, P, H].
  for leaf in jax.tree.leaves(after.opt_state):
    assert leaf.shape[0] == 3 and leaf.size <= table.size


# Adam's update is elementwise: joint and separate agree to the last bit on CPU. Adafactor's update
# clipping takes an RMS over each prompt, whose float32 rounding differs by an ulp between the two
# compiled programs; its sign-like updates (lr 0.3) carry that over a few steps to ~1e-5 on prompts
# that moved by ~1. Coupling between prompts (e.g. one normalization over all sources) moves them by
# ~1e-1.
@pytest.mark.parametrize("optimizer,atol", [(ADAM, 1e-6), (ADAFACTOR, 3e-5)], ids=["adam", "adafactor"])
def test_joint_training_equals_separate_training(config, params, examples, optimizer, atol):
  """S prompts trained in one step per batch equal each prompt trained alone on its rows."""
  batches = _batches(examples, 3, 3)
  assert all(len(set(b["source_ids"].tolist())) > 1 for b in batches)
  table = _table(3, config)
  device_params = jax.device_put(params)
  step = make_train_step(model_for(config), optimizer)
  joint = init_state(table, optimizer)
  for i, batch in enumerate(batches):
    joint, _ = step(joint, device_params, place_batch(batch, None), jax.random.PRNGKey(i))
  joint = jax.device_get(joint)
  for s in range(3):
    alone = init_state(table[s:s + 1], optimizer)
    for i, batch in enumerate(batches):
      mine = batch["source_ids"] == s
      own = {"inputs": batch["inputs"], "targets": np.where(mine[:, None], batch["targets"], 0),
             "source_ids": np.zeros_like(batch["source_ids"])}
      alone, _ = step(alone, device_params, place_batch(own, None), jax.random.PRNGKey(i))
    alone = jax.device_get(alone)
    assert np.abs(joint.prompts[s] - table[s]).max() > 0.1  # it did train
    np.testing.assert_allclose(joint.prompts[s], alone.prompts[0], atol=atol, rtol=0)
    for a, b in zip(jax.tree.leaves(joint.opt_state), jax.tree.leaves(alone.opt_state)):
      np.testing.assert_allclose(a[s], b[0], atol=atol, rtol=1e-5)
    updates = sum((b["source_ids"] == s).any() for b in batches)
    assert joint.source_steps[s] == alone.source_steps[0] == updates


@pytest.mark.parametrize("num_partitions,dropout_rate,key_impl", [
    (2, 0.0, "threefry2x32"), (2, 0.1, "threefry2x32"), (2, 0.1, "unsafe_rbg")])
def test_sharded_step_equals_single_device_step(config, params, examples, num_partitions, dropout_rate,
                                                key_impl):
  """Under a data x model mesh the step gives the single-device prompts, with dropout on too (the same
  masks however the batch is split, with threefry keys and with the trainer's RngBitGenerator ones)."""
  if jax.device_count() < 8:
    pytest.fail("tests/conftest.py must give 8 simulated devices")
  from rospr_jax.model import init_params
  config = config.replace(dropout_rate=dropout_rate)
  batches = _batches(examples, 3, 2)
  table = _table(3, config)
  step = make_train_step(model_for(config), ADAFACTOR)
  single = init_state(table, ADAFACTOR)
  for i, batch in enumerate(batches):
    single, single_metrics = step(single, jax.device_put(params), place_batch(batch, None),
                                  dropout_key(i, key_impl))

  partitioner = partitioning.Partitioner(num_partitions)
  boxed = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0), boxed=True))
  sharded_params = partitioner.shard_params(params, boxed)
  kernel = sharded_params["decoder"]["logits_dense"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  sharded_step = make_train_step(model_for(config), ADAFACTOR, partitioner=partitioner)
  sharded = place_state(init_state(table, ADAFACTOR), partitioner)
  for i, batch in enumerate(batches):
    placed = place_batch(batch, partitioner)
    assert placed["inputs"].sharding.spec == jax.sharding.PartitionSpec("data", None)
    sharded, sharded_metrics = sharded_step(sharded, sharded_params, placed, dropout_key(i, key_impl))
  assert sharded.prompts.sharding.is_fully_replicated
  np.testing.assert_allclose(np.asarray(sharded.prompts), np.asarray(single.prompts), atol=2e-5)
  np.testing.assert_allclose(float(sharded_metrics["loss_sum"]), float(single_metrics["loss_sum"]), rtol=1e-5)


def test_batch_not_divisible_by_data_axis_is_refused():
  partitioner = partitioning.Partitioner(2)  # 4 x 2 over the 8 simulated devices
  batch = {"inputs": np.ones((6, 4), np.int32), "targets": np.ones((6, 2), np.int32),
           "source_ids": np.zeros(6, np.int32)}
  with pytest.raises(ValueError,
                     match=r"Batch size 6 is not a multiple of the mesh's data axis \(4 devices\)"):
    place_batch(batch, partitioner)


def test_non_finite_is_flagged(config, params, examples):
  batch = _batches(examples, 3, 1)[0]
  table = _table(3, config)
  table[int(batch["source_ids"][0]), 0, 0] = np.nan
  _, metrics = make_train_step(model_for(config), ADAFACTOR)(init_state(table, ADAFACTOR), params,
                                                  place_batch(batch, None), jax.random.PRNGKey(0))
  assert not bool(metrics["finite"])


def test_init_state_refuses_a_prompt_that_is_not_a_table():
  with pytest.raises(ValueError, match=r"must be \[S, P, H\]; got shape \(3, 4\)"):
    init_state(np.zeros((3, 4)), ADAFACTOR)


def test_auto_dropout_key_draws_with_the_cuda_threefry_kernel_on_gpus(monkeypatch):
  """On GPUs "auto" takes threefry keys lowered to JAX's CUDA kernel where JAX still offers it (XLA's
  expansion of each draw is the slowest to compile); elsewhere XLA's RngBitGenerator, as T5X."""
  assert str(jax.random.key_impl(dropout_key(0))) == "unsafe_rbg"
  assert not jax.config.jax_threefry_gpu_kernel_lowering
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  try:
    key = dropout_key(0)
    assert str(jax.random.key_impl(key)) == "threefry2x32"
    assert jax.config.jax_threefry_gpu_kernel_lowering
  finally:
    jax.config.update("jax_threefry_gpu_kernel_lowering", False)

  def removed_option(name, value):
    raise AttributeError(f"Unrecognized config option: {name}")

  monkeypatch.setattr(jax.config, "update", removed_option)  # a JAX without the option: threefry anyway
  assert str(jax.random.key_impl(dropout_key(0))) == "threefry2x32"
  monkeypatch.undo()
  assert str(jax.random.key_impl(dropout_key(0, "threefry2x32"))) == "threefry2x32"
  assert not bool(jnp.all(jax.random.key_data(dropout_key(0)) == jax.random.key_data(dropout_key(1))))


def test_the_step_memory_lower_bound_by_hand():
  from rospr_jax.model import get_config
  from rospr_jax.prompt.train_step import step_memory_lower_bound
  config = get_config("tiny")  # H 64, 4 heads, float32
  # B 2, P 3, I 5 (S 8), T 4: host 2 * 4 * B (I + T) + T^2 bool; biases 4 A (S^2 + T^2); states 4 B (S + T) H;
  # einsum weights twice, the larger of the encoder's S^2 and the decoder's T^2 + T S: 2 * 4 B A * 64.
  bound = lambda **over: step_memory_lower_bound(
      config.replace(**over), batch_size=2, input_length=5, target_length=4, prompt_length=3)
  assert bound() == (2 * 4 * 2 * 9 + 16) + 4 * 4 * (64 + 16) + 4 * 2 * 12 * 64 + 2 * 4 * 2 * 4 * 64
  assert bound(attention_impl="xla") == (2 * 4 * 2 * 9 + 16) + 4 * 4 * (64 + 16) + 4 * 2 * 12 * 64  # fused
  assert bound(dtype=jnp.bfloat16) == (2 * 4 * 2 * 9 + 16) + 2 * 4 * 80 + 2 * 2 * 12 * 64 + 2 * 2 * 2 * 4 * 64
  # The case that passed the old bound (one layer's scores, 14.4 GB) and failed allocating 87 GB:
  # B 4, S 15004 with 4 heads in float32 now needs more than 24 GiB.
  assert step_memory_lower_bound(config, batch_size=4, input_length=15_000, target_length=4,
                                 prompt_length=4) > 24 * 2**30



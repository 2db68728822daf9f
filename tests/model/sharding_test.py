"""The model under a data x model mesh (8 simulated CPU devices) equals the single-device model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rospr_jax.model import T5, T5Config, init_params, shift_right
from rospr_jax.model import partitioning

CONFIG = T5Config(vocab_size=64, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64, num_encoder_layers=2,
                  num_decoder_layers=2)


@pytest.mark.parametrize("num_partitions", [2, 4])
def test_sharded_forward_equals_single_device(num_partitions):
  if jax.device_count() < 8:
    pytest.fail("tests/conftest.py must give 8 simulated devices")
  boxed = init_params(CONFIG, jax.random.PRNGKey(0), boxed=True)
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  enc = jnp.asarray(rng.integers(1, 64, (8, 12)), jnp.int32)
  dec = shift_right(jnp.asarray(rng.integers(1, 64, (8, 5)), jnp.int32))
  prompt = jax.random.normal(jax.random.PRNGKey(1), (3, CONFIG.emb_dim))
  model = T5(CONFIG)
  expected = model.apply({"params": params}, enc, dec, prompt=prompt)

  partitioner = partitioning.Partitioner(num_partitions)
  sharded = partitioner.shard_params(params, boxed)
  wq = sharded["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert wq.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  batch = partitioner.batch_sharding()
  with partitioner.scope():
    got = jax.jit(lambda p, e, d, q: model.apply({"params": p}, e, d, prompt=q))(
        sharded, jax.device_put(enc, batch), jax.device_put(dec, batch), prompt)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


def test_mesh_refuses_uneven_split():
  with pytest.raises(ValueError, match="NUM_PARTITIONS 3 does not divide the 8 devices"):
    partitioning.Partitioner(3).mesh


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_partitioner_refuses_a_count_that_is_not_one_or_more(value):
  with pytest.raises(ValueError, match=r"^NUM_PARTITIONS must be an integer >= 1, not "):
    partitioning.Partitioner(value)


def test_partitioner_lays_out_a_data_by_model_mesh_and_its_shardings():
  partitioner = partitioning.Partitioner(2)
  assert dict(partitioner.mesh.shape) == {"data": 4, "model": 2} and partitioner.data_size == 4
  assert partitioner.batch_sharding(3).spec == jax.sharding.PartitionSpec("data", None, None)
  assert partitioner.replicated.spec == jax.sharding.PartitionSpec()
  assert partitioner.uses_mesh and not partitioning.Partitioner(1, devices=jax.devices()[:1]).uses_mesh
  # The same layout over other devices: a plan's target.
  four = partitioner.for_devices(jax.devices()[:4])
  assert four.num_partitions == 2 and dict(four.mesh.shape) == {"data": 2, "model": 2}
  assert four.rows_per_host(8) == {0: 8}  # one process holds every row

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

  mesh = partitioning.make_mesh(num_partitions)
  sharded = partitioning.shard_params(params, boxed, mesh)
  wq = sharded["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert wq.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  batch = partitioning.batch_sharding(mesh)
  from flax import linen as nn
  with mesh, nn.logical_axis_rules(partitioning.STANDARD_RULES):
    got = jax.jit(lambda p, e, d, q: model.apply({"params": p}, e, d, prompt=q))(
        sharded, jax.device_put(enc, batch), jax.device_put(dec, batch), prompt)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


def test_mesh_refuses_uneven_split():
  with pytest.raises(ValueError, match="8 devices cannot be split into model partitions of 3"):
    partitioning.make_mesh(3)

"""Logical axis rules (T5X's standard 1-D model-parallel rules) and mesh helpers.

Parameters and activations carry logical axis names; these rules map them onto a mesh with axes
`data` and `model`. The soft prompt (`prompt`, `prompt_embed`) stays replicated.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import linen as nn

LogicalRules = Sequence[tuple[str, str | None]]

STANDARD_RULES: LogicalRules = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("joined_kv", "model"),
    ("relpos_buckets", None),
    ("length", None),
    ("prompt", None),
    ("prompt_embed", None),
)


def check_partitions(config, num_partitions: int, num_devices: int) -> None:
  """Refuses, in one line naming NUM_PARTITIONS and the dimension, a model-parallel split the rules
  cannot make evenly (the devices, or the heads, feed-forward width or vocabulary split over `model`)."""
  if num_devices % num_partitions:
    raise ValueError(f"NUM_PARTITIONS {num_partitions} does not divide the {num_devices} devices.")
  dims = {"heads (num_heads)": config.num_heads, "feed-forward width (mlp_dim)": config.mlp_dim,
          "vocabulary (vocab_size)": config.vocab_size}
  for what, size in dims.items():
    if size % num_partitions:
      raise ValueError(f"NUM_PARTITIONS {num_partitions} does not divide the model's {what}, {size}.")


def make_mesh(num_partitions: int = 1, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A `data` x `model` mesh over `devices` (default: all) with `num_partitions` on the model axis."""
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) % num_partitions:
    raise ValueError(f"{len(devices)} devices cannot be split into model partitions of {num_partitions}.")
  grid = np.asarray(devices).reshape(len(devices) // num_partitions, num_partitions)
  return jax.sharding.Mesh(grid, ("data", "model"))


def params_sharding(abstract_params, mesh: jax.sharding.Mesh, rules: LogicalRules = STANDARD_RULES):
  """NamedShardings for a (boxed, e.g. from `jax.eval_shape(model.init, ...)`) parameter tree."""
  specs = nn.get_partition_spec(abstract_params)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def shard_params(params, boxed_params, mesh: jax.sharding.Mesh, rules: LogicalRules = STANDARD_RULES):
  """Places plain `params` on `mesh` following the logical axes recorded in `boxed_params`."""
  shardings = params_sharding(boxed_params, mesh, rules)
  return jax.tree.map(jax.device_put, params, nn.unbox(shardings))


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 2) -> jax.sharding.NamedSharding:
  """Sharding of a [B, ...] batch array: batch over `data`, the rest replicated."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", *([None] * (ndim - 1))))


class MeshStep:
  """A jitted function as a run calls it: under its mesh and the logical axis rules (or plainly on one
  device without a mesh), with its static keyword arguments bound. `lower(*abstract)` lowers the very
  same function in the same context, so a plan compiles what the run executes.

  Attributes:
    jitted: the `jax.jit` object called; mesh: the data x model mesh or None; rules: logical axis rules.
  """

  def __init__(self, jitted: Callable, mesh: jax.sharding.Mesh | None, rules: LogicalRules = STANDARD_RULES,
               **static: Any):
    self.jitted, self.mesh, self.rules, self.static = jitted, mesh, rules, static

  def _scope(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(self.mesh)
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def __call__(self, *args):
    with self._scope():
      return self.jitted(*args, **self.static)

  def trace(self, *args):
    """The traced program (its `.jaxpr`; `.lower()`) for (possibly abstract) arguments."""
    with self._scope():
      return self.jitted.trace(*args, **self.static)

  def lower(self, *args):
    """The lowered program for (possibly abstract, `jax.ShapeDtypeStruct`) arguments."""
    with self._scope():
      return self.jitted.lower(*args, **self.static)


def memory_limit(device: jax.Device | None = None) -> tuple[int, str]:
  """(bytes, what they are) one computation of this process can use at most: the `bytes_limit` of
  `device` (default: the first local device), or, on a backend without memory stats (the CPU), the
  host's physical memory."""
  import os  # pylint: disable=g-import-not-at-top
  if device is None:
    device = jax.local_devices()[0]  # this process's own: another process's has no memory stats here
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - a backend without memory stats: the host's memory bounds it
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"the {device.platform} device"
  return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this host's memory"

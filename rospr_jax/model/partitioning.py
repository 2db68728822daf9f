"""Logical axis rules (T5X's standard 1-D model-parallel rules) and the `Partitioner` that lays a run
out on its devices.

Parameters and activations carry logical axis names; these rules map them onto a mesh with axes
`data` and `model`. The soft prompt (`prompt`, `prompt_embed`) stays replicated. Every mesh of the
project comes from a `Partitioner` (commands, embedder, plan alike).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
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


@dataclasses.dataclass(frozen=True)
class Partitioner:
  """How a run lays its arrays out on the devices (T5X's `PjitPartitioner`): the one object that
  `train-prompts`, `evaluate`, the library's embedder and `rospr plan` build their mesh and shardings
  from, so that a plan compiles what a run executes.

  A `data` x `model` mesh over `devices` with `num_partitions` devices on `model` (model parallelism:
  the kernels whose logical axes the rules map to `model` are split that many ways) and the rest on
  `data` (data parallelism: batches are split over it). Shardings: the parameters' from their logical
  axes and the rules (`params_shardings`), a batch's rows over `data` (`batch_sharding`), the prompt
  state replicated (`replicated`).

  gin (gin/prompt_tuning/base.gin, gin/eval/base.gin): `partitioning.Partitioner.num_partitions =
  %NUM_PARTITIONS`, and the run's configurable takes `partitioner = @partitioning.Partitioner()`.

  Attributes:
    num_partitions: devices on the `model` axis (NUM_PARTITIONS), an integer >= 1.
    logical_axis_rules: logical axis name -> mesh axis (or None: replicated).
    devices: the devices of the mesh (None: every device of every process, `jax.devices()`).
  """
  num_partitions: int = 1
  logical_axis_rules: LogicalRules = STANDARD_RULES
  devices: tuple | None = None

  def __post_init__(self):
    n = self.num_partitions
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f"NUM_PARTITIONS must be an integer >= 1, not {n!r}.")
    if self.devices is not None:
      object.__setattr__(self, "devices", tuple(self.devices))
    object.__setattr__(self, "logical_axis_rules", tuple(tuple(r) for r in self.logical_axis_rules))

  def for_devices(self, devices: Sequence[jax.Device]) -> "Partitioner":
    """The same layout over other devices (a plan's: a TPU topology's compile-only devices)."""
    return dataclasses.replace(self, devices=tuple(devices))

  @property
  def all_devices(self) -> list:
    return list(jax.devices() if self.devices is None else self.devices)

  @property
  def uses_mesh(self) -> bool:
    """Whether a run lays its arrays out on the mesh: with several devices or model partitions (on one
    device with one partition it runs plainly, without one)."""
    return len(self.all_devices) > 1 or self.num_partitions > 1

  def check(self, config) -> None:
    """Refuses, in one line naming NUM_PARTITIONS, a split the devices or `config`'s dimensions cannot
    make evenly (`check_partitions`)."""
    check_partitions(config, self.num_partitions, len(self.all_devices))

  @functools.cached_property
  def mesh(self) -> jax.sharding.Mesh:
    """The `data` x `model` mesh."""
    devices = self.all_devices
    if len(devices) % self.num_partitions:
      raise ValueError(f"NUM_PARTITIONS {self.num_partitions} does not divide the {len(devices)} devices.")
    grid = np.asarray(devices).reshape(len(devices) // self.num_partitions, self.num_partitions)
    return jax.sharding.Mesh(grid, ("data", "model"))

  @property
  def data_size(self) -> int:
    """Devices on the `data` axis: a batch's rows are a multiple of it."""
    return len(self.all_devices) // self.num_partitions

  def params_shardings(self, boxed_params):
    """NamedShardings of a boxed parameter tree (e.g. `model.abstract_params()`: logical axes), plain."""
    specs = nn.get_partition_spec(boxed_params)
    return nn.unbox(nn.logical_to_mesh_sharding(specs, self.mesh, self.logical_axis_rules))

  def shard_params(self, params, boxed_params):
    """Places plain `params` on the mesh following the logical axes recorded in `boxed_params`."""
    return jax.tree.map(jax.device_put, params, self.params_shardings(boxed_params))

  def batch_sharding(self, ndim: int = 2) -> jax.sharding.NamedSharding:
    """A [B, ...] batch array's: rows over `data`, the rest replicated."""
    return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data", *([None] * (ndim - 1))))

  @property
  def replicated(self) -> jax.sharding.NamedSharding:
    """The prompt state's (and a step's scalars'): whole on every device."""
    return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

  def place(self, value, sharding: jax.sharding.Sharding) -> jax.Array:
    """A global array from a host value every process holds in full: each process fills its own
    devices' shards (so it works with several hosts too)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  def rows_per_host(self, batch_size: int) -> dict[int, int]:
    """Rows of a [batch_size, ...] batch each process's devices hold (a multi-host slice feeds its share
    of every batch from each host)."""
    per_device = batch_size // self.data_size
    grid = np.empty(len(self.all_devices), dtype=object)
    grid[:] = self.all_devices
    rows: dict[int, int] = {}
    for row in grid.reshape(-1, self.num_partitions):  # as `mesh`: one `data` index's devices hold its rows
      for process in {d.process_index for d in row}:
        rows[process] = rows.get(process, 0) + per_device
    return rows

  def scope(self):
    """The context a step traces in: the mesh and the logical axis rules."""
    stack = contextlib.ExitStack()
    stack.enter_context(self.mesh)
    stack.enter_context(nn.logical_axis_rules(self.logical_axis_rules))
    return stack


class MeshStep:
  """A jitted function as a run calls it: in its partitioner's scope (the mesh and the logical axis
  rules), or plainly on one device without one, with its static keyword arguments bound.
  `lower(*abstract)` lowers the very same function in the same context, so a plan compiles what the
  run executes.

  Attributes:
    jitted: the `jax.jit` object called; partitioner: the `Partitioner` or None; mesh, rules: its.
  """

  def __init__(self, jitted: Callable, partitioner: Partitioner | None, **static: Any):
    self.jitted, self.partitioner, self.static = jitted, partitioner, static

  @property
  def mesh(self) -> jax.sharding.Mesh | None:
    return None if self.partitioner is None else self.partitioner.mesh

  @property
  def rules(self) -> LogicalRules | None:
    return None if self.partitioner is None else self.partitioner.logical_axis_rules

  def _scope(self):
    return contextlib.nullcontext() if self.partitioner is None else self.partitioner.scope()

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

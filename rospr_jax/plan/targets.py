"""Where a plan compiles for: a Cloud TPU slice named as TPU users name it (`v4-8`), a raw topology
(`v4:2x2x1`), or `local` (this process's own devices).

A TPU target's devices come from `jax.experimental.topologies.get_topology_desc` (libtpu compiles for
them on a machine without a TPU, as MaxText's train_compile.py does); its chip facts (HBM, peak
bfloat16 FLOP/s, HBM bandwidth, per JAX device: a v3 core, a v4 / v5p megacore chip, a v5e / v6e chip)
are the published ones, since compile-only devices report no memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import re
import tempfile
from typing import Sequence

import jax

from rospr_jax.model import partitioning

GIB = 2**30
LOCAL = "local"
INSTALL_HINT = "pip install 'rospr-jax[tpu]' (libtpu, as jax[tpu] pins it), or scripts/setup.sh"


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-device facts of a TPU generation: HBM bytes, peak bfloat16 FLOP/s, HBM bytes/s."""
  kind: str
  hbm_bytes: int
  peak_flops: float
  hbm_bandwidth: float
  chip_config: str  # get_topology_desc's chip_config_name: "megacore" (one device per chip) or "default"


CHIPS = {
    "v3": Chip("TPU v3 core", 16 * GIB, 61.5e12, 450e9, "default"),
    "v4": Chip("TPU v4", 32 * GIB, 275e12, 1228e9, "megacore"),
    "v5e": Chip("TPU v5e", 16 * GIB, 197e12, 819e9, "default"),
    "v5p": Chip("TPU v5p", 95 * GIB, 459e12, 2765e9, "megacore"),
    "v6e": Chip("TPU v6e", 32 * GIB, 918e12, 1640e9, "default"),
}

# Slice name -> (generation, topology, chips per host), as Cloud TPU and MaxText's
# accelerator_to_spec_map name them. The number in a v3 / v4 / v5p name counts TensorCores, in a v5e /
# v6e name chips.
SLICES = {
    "v3-8": ("v3", "v3:2x2", None), "v3-32": ("v3", "v3:4x4", None),
    "v4-8": ("v4", "v4:2x2x1", None), "v4-16": ("v4", "v4:2x2x2", None), "v4-32": ("v4", "v4:2x2x4", None),
    "v4-64": ("v4", "v4:2x4x4", None),
    "v5p-8": ("v5p", "v5p:2x2x1", None), "v5p-16": ("v5p", "v5p:2x2x2", None),
    "v5p-32": ("v5p", "v5p:2x2x4", None),
    "v5litepod-1": ("v5e", "v5e:1x1", (1, 1, 1)), "v5litepod-4": ("v5e", "v5e:2x2", None),
    "v5litepod-8": ("v5e", "v5e:2x4", (2, 4, 1)), "v5litepod-16": ("v5e", "v5e:4x4", None),
    "v5litepod-32": ("v5e", "v5e:4x8", None),
    "v6e-1": ("v6e", "v6e:1x1", (1, 1, 1)), "v6e-4": ("v6e", "v6e:2x2", None),
    "v6e-8": ("v6e", "v6e:2x4", (2, 4, 1)), "v6e-16": ("v6e", "v6e:4x4", None),
}
ALIASES = {"v5e": "v5e", "v5litepod": "v5e", "v5": "v5p", "v5p": "v5p", "v4": "v4", "v3": "v3", "v6e": "v6e"}
_RAW = re.compile(r"^(v3|v4|v5p|v5e|v5litepod|v5|v6e):(\d+(?:x\d+){1,2})$")


@dataclasses.dataclass(frozen=True)
class Target:
  """What a plan compiles for.

  Attributes:
    name: as given; devices: the devices to compile for (compile-only ones for a TPU topology);
    chip: the per-device facts (None for `local`, whose memory is read from the devices);
    hosts: processes of the slice (a multi-host slice runs the command on every host).
  """
  name: str
  devices: Sequence[jax.Device]
  chip: Chip | None
  hosts: int

  @property
  def hbm_bytes(self) -> tuple[int, str]:
    """(bytes one device holds, where the figure comes from)."""
    if self.chip is not None:
      return self.chip.hbm_bytes, f"{self.chip.kind} HBM"
    return partitioning.memory_limit(self.devices[0])


def known_names() -> list[str]:
  return [LOCAL, *SLICES]


def resolve(name: str) -> Target:
  """The target called `name`; a ValueError in one line for an unknown name or a missing libtpu."""
  if name == LOCAL:
    return Target(name, jax.devices(), None, jax.process_count())
  if name in SLICES:
    generation, topology, host_bounds = SLICES[name]
  else:
    match = _RAW.match(name)
    if not match:
      raise ValueError(f"unknown topology {name!r}; use one of {', '.join(known_names())}, or a topology "
                       "such as v4:2x2x1")
    generation, topology, host_bounds = ALIASES[match[1]], f"{ALIASES[match[1]]}:{match[2]}", None
  chip = CHIPS[generation]
  if importlib.util.find_spec("libtpu") is None:
    raise ValueError(f"--topology {name} compiles with libtpu, which is not installed: {INSTALL_HINT}")
  devices = _topology_devices(topology, chip.chip_config, host_bounds)
  return Target(name, devices, chip, len({d.process_index for d in devices}))


def _topology_devices(topology: str, chip_config: str, host_bounds) -> list:
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # libtpu locks a machine-wide file; compiling for a topology needs no TPU, so processes may share it.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  kwargs = {} if host_bounds is None else {"chips_per_host_bounds": host_bounds}
  with quiet_native_stderr() as said:
    try:
      return list(topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                                chip_config_name=chip_config, **kwargs).devices)
    except Exception as e:  # noqa: BLE001 - libtpu's own error, said in one line
      raise ValueError(f"libtpu cannot describe topology {topology} ({' '.join(str(e).split())[:300]})") from e
    finally:
      logging.debug("libtpu said while describing %s: %s", topology, said())


@contextlib.contextmanager
def quiet_native_stderr():
  """Sends what native code writes on stderr (libtpu's start-up warnings on a machine without a TPU)
  to a temporary file; yields a function returning it."""
  with tempfile.TemporaryFile(mode="w+b") as sink:
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
      yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
    finally:
      os.dup2(saved, 2)
      os.close(saved)

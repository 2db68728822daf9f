"""JAX's platforms for a `rospr` process on a machine without a TPU, where libtpu is installed anyway
(the `tpu` extra, which `rospr plan` compiles TPU topologies with).

There JAX would still start its TPU backend for every command: libtpu prints start-up errors on
stderr (no accelerator type, no worker hostnames; JAX skips the metadata server where no TPU chip is on
the PCI bus, so the start stays fast), then JAX falls back to the CPU. `skip_absent_tpu()` sets JAX_PLATFORMS=cpu first, unless the user chose platforms,
forces a TPU start (JAX_FORCE_TPU_INIT), has a GPU plugin installed, or the machine shows a Google PCI
device that may be a TPU. Compiling for a TPU topology (`rospr plan --topology v4-8`) works with
JAX_PLATFORMS=cpu. Read before JAX is imported; imports nothing of the project.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import MutableMapping

GOOGLE_PCI_VENDOR = "0x1ae0"
NOT_TPU_DEVICES = ("0x0042",)  # gVNIC, the network card of Compute Engine VMs
GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def may_have_tpu(pci_root: str = "/sys/bus/pci/devices") -> bool:
  """Whether a Google PCI device that is not a known network card is attached (a TPU chip is one)."""
  for vendor in glob.glob(os.path.join(pci_root, "*", "vendor")):
    try:
      with open(vendor) as f:
        if f.read().strip() != GOOGLE_PCI_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor), "device")) as f:
        if f.read().strip() not in NOT_TPU_DEVICES:
          return True
    except OSError:
      continue
  return False


def skip_absent_tpu(environ: MutableMapping[str, str] = os.environ, pci_root: str = "/sys/bus/pci/devices") -> bool:
  """Sets JAX_PLATFORMS=cpu where libtpu is installed but no TPU can be here (see the module
  docstring); returns whether it did."""
  if "JAX_PLATFORMS" in environ or "JAX_FORCE_TPU_INIT" in environ:
    return False
  if importlib.util.find_spec("libtpu") is None or any(importlib.util.find_spec(p) for p in GPU_PLUGINS):
    return False
  if may_have_tpu(pci_root):
    return False
  environ["JAX_PLATFORMS"] = "cpu"
  return True

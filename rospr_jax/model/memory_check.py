"""The compiled check that guards real runs: on an accelerator, `train-prompts` and `evaluate` compile a
step ahead of time, before it first runs, and refuse it in one line naming the macros to change when
its memory per device (`compiled.memory_analysis()`: arguments, temporaries, outputs not written into
donated arguments, code) exceeds the device's `memory_stats()["bytes_limit"]`.

The step then runs from the same compilation (JAX caches it: the first step does not compile again).
On the CPU, whose devices report no memory, the shape lower bounds guard instead
(`prompt.train_step.check_step_fits`, `eval.batching.scoring_memory_lower_bound`). Tests replace
`accelerator_memory` to fake a device's limit.
"""

from __future__ import annotations

import logging
from typing import Any

import jax

GIB = 2**30
_checked: set = set()  # steps (function, static arguments, argument shapes and shardings) found to fit


def accelerator_memory() -> tuple[int, str] | None:
  """(bytes_limit, what it is) of this process's first device when it is an accelerator that reports
  its memory; None on the CPU or where a device reports none."""
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return None
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - a backend without memory stats: nothing to compare with
    return None
  if not stats or not stats.get("bytes_limit"):
    return None
  return int(stats["bytes_limit"]), f"the {device.device_kind} ({device.platform} device {device.id})"


def _size(nbytes: int) -> str:
  """Bytes in GiB (two decimals), or MiB below 1 GiB."""
  return f"{nbytes / GIB:,.2f} GiB" if nbytes >= GIB else f"{nbytes / 2**20:,.2f} MiB"


def held_bytes(memory) -> dict[str, int]:
  """A `compiled.memory_analysis()`'s bytes per device, and their `total` held at once."""
  parts = {"arguments": memory.argument_size_in_bytes, "temporaries": memory.temp_size_in_bytes,
           "outputs": memory.output_size_in_bytes, "aliased": memory.alias_size_in_bytes,
           "code": memory.generated_code_size_in_bytes}
  parts["total"] = parts["arguments"] + parts["temporaries"] + parts["outputs"] - parts["aliased"] + parts["code"]
  return parts


def _key(step, args) -> Any:
  leaves = tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x))), getattr(x, "sharding", None))
                 for x in jax.tree.leaves(args))
  try:
    key = (step.jitted, tuple(sorted(step.static.items())), step.mesh, leaves)
    hash(key)
  except TypeError:  # an unhashable static argument: checked every time (the compile is cached anyway)
    return None
  return key


def check_compiled_step(step, args: tuple, *, what: str, remedy: str) -> None:
  """Refuses `step` (a `partitioning.MeshStep`) for `args` when, compiled, it needs more memory per
  device than this process's accelerator has: a ValueError in one line, `what` needs X GiB per device
  (its parts), more than the device's Y GiB; `remedy` (the macros to change, with their values).
  Nothing is compiled on the CPU (`accelerator_memory` is None)."""
  found = accelerator_memory()
  if found is None:
    return
  key = _key(step, args)
  if key is not None and key in _checked:
    return
  limit, where = found
  compiled = step.lower(*args).compile()
  memory = compiled.memory_analysis()
  if memory is None:
    return
  parts = held_bytes(memory)
  held = (f"{_size(parts['total'])} per device ({_size(parts['arguments'])} of arguments, "
          f"{_size(parts['temporaries'])} of temporaries, {_size(parts['outputs'])} of outputs)")
  logging.info("%s compiled to %s, of the %s of %s.", what, held, _size(limit), where)
  if parts["total"] > limit:
    raise ValueError(f"{what} compiles to {held}, more than the {_size(limit)} of {where}; {remedy} "
                     "(`rospr plan` tries them).")
  if key is not None:
    _checked.add(key)

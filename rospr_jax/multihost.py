"""What several JAX processes (hosts of a pod slice, or `jax_num_cpu_devices` processes on one machine)
agree on: who writes, where they meet, and what process 0 tells the others.

- `is_writer()`: only process 0 writes a command's outputs, so that hosts sharing a mounted bucket
  never race on the same files;
- `barrier(name)`: every process waits here until all have arrived (a no-op with one process);
- `broadcast(tree)`: process 0's arrays (same shapes and dtypes everywhere) on every process;
  `broadcast_json(value)`: process 0's JSON-serializable value on every process;
- `check_same_on_every_process(settings, what)`: processes given other flags stop at once, naming the
  keys, instead of waiting for each other in a collective.

With one process each of these returns at once without touching the distributed runtime.
"""

from __future__ import annotations

import json

import numpy as np


def _jax():
  import jax  # pylint: disable=g-import-not-at-top  (imported where used: `rospr --help` loads no JAX)
  return jax


def is_writer() -> bool:
  """Whether this process writes the command's outputs (process 0)."""
  return _jax().process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier `name` (the same name on every process)."""
  jax = _jax()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def broadcast(tree):
  """`tree` (an array, or a pytree of arrays of the same shapes and dtypes on every process) as process
  0 has it, on every process, as numpy: for decisions all hosts must take alike because their
  computations run together, and for what process 0 alone read."""
  jax = _jax()
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def broadcast_json(value):
  """A JSON-serializable `value` as process 0 has it, on every process (the others pass anything)."""
  jax = _jax()
  if jax.process_count() == 1:
    return value
  data = json.dumps(value).encode("utf-8") if jax.process_index() == 0 else b""
  size = int(broadcast(np.int32(len(data))))
  data = broadcast(np.frombuffer(data.ljust(size, b"\0"), np.uint8))
  return json.loads(data.tobytes().decode("utf-8"))


def check_same_on_every_process(settings: dict, what: str) -> None:
  """Raises ValueError on a process whose JSON-serializable `settings` differ from process 0's, naming
  the keys."""
  jax = _jax()
  mine = json.loads(json.dumps(settings))  # as process 0's arrive: tuples as lists
  zero = broadcast_json(mine)
  differ = sorted(k for k in set(zero) | set(mine) if zero.get(k) != mine.get(k))
  if differ:
    details = "; ".join(f"{k}: process 0 {zero.get(k)!r}, this process {mine.get(k)!r}" for k in differ)
    raise ValueError(f"{what}: process {jax.process_index()} of {jax.process_count()} runs with other "
                     f"settings than process 0 ({details}); give every process the same command line.")

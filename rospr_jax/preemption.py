"""Preemption: SIGTERM (a Cloud TPU spot or preemptible VM's notice, a scheduler's stop) and SIGINT
(Ctrl-C) stop `train-prompts` and `evaluate` at a point every process agrees on, saved there, with
one line `rospr COMMAND: preempted at step N: checkpoint saved; rerun the same command to resume.`
(evaluate: `at record N of M: records saved`) and exit code `EXIT_CODE` (75) on every process.

- One process: `listening(True)` installs handlers that note the signal; `reached(count)` is True at
  the first step or record that ends after it.
- JAX's distributed runtime (a multi-process launch): jax.distributed.initialize starts JAX's
  preemption service, which owns SIGTERM: the process that gets it posts a notice to the
  coordination service, every process reports its counter (the last `count` it passed to
  `reached`), and the sync point is the next counter of the most advanced one.
  `reached(count)` is `multihost_utils.reached_preemption_sync_point(count)`, the sync point orbax's
  CheckpointManager reads too (so a loop passes its global step). SIGINT is turned into SIGTERM to
  this process (`after_initialize`), and a signal noted before the runtime started is passed on to it.
  `begin(count)` closes the one gap: a notice that came before any process reported a counter (while
  the backbone loads) yields sync point 1, never met by a run resumed at a later step.
- The other commands: SIGTERM ends them as the system does (exit 143; what they write is written
  whole); SIGINT with one line and `INTERRUPTED_EXIT_CODE` (130), in `cli.py`.

Layer 0b: imports nothing of the project, and JAX only inside the functions.
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: stopped at a saved point; rerun the same command to resume
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # a command that stops at once on SIGINT (the shell's 130)
COMMANDS = ("train-prompts", "evaluate")  # the commands that stop at an agreed, saved point
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_NOTICE_KEY = "RECEIVED_PREEMPTION_NOTICE"  # where JAX's preemption service posts a notice


class Preempted(Exception):
  """Raised on every process by a loop that stopped at the agreed point once it is saved; its text
  is the command's one line."""

  def __init__(self, where: str, saved: str):
    super().__init__(f"preempted at {where}: {saved}; rerun the same command to resume.")


class _State:
  signum: int | None = None  # the first signal noted by `listening` (one process)


def _note(signum, _frame) -> None:
  _State.signum = _State.signum or signum


@contextlib.contextmanager
def listening(enabled: bool):
  """While inside, SIGTERM and SIGINT are noted for `reached` instead of ending the process (when
  `enabled`, in the main thread); the earlier handlers come back and the note is dropped on exit."""
  if not enabled or threading.current_thread() is not threading.main_thread():
    yield
    return
  earlier = {signum: signal.signal(signum, _note) for signum in _SIGNALS}
  try:
    yield
  finally:
    for signum, handler in earlier.items():
      signal.signal(signum, handler)
    _State.signum = None


def _sync_manager():
  """JAX's preemption service of this process, or None (no distributed runtime, or it is disabled)."""
  import sys  # pylint: disable=g-import-not-at-top
  if "jax" not in sys.modules:
    return None
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.preemption_sync_manager


def after_initialize(graceful: bool) -> None:
  """Called once JAX's distributed runtime may have started: where its preemption service owns
  SIGTERM, a `graceful` command hands it SIGINT and any signal noted so far; another command gets
  SIGTERM's default back (the service would ignore it: nothing of that command asks for a sync point)."""
  if _sync_manager() is None or threading.current_thread() is not threading.main_thread():
    return
  if not graceful:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return
  signal.signal(signal.SIGINT, lambda *_: signal.raise_signal(signal.SIGTERM))
  if _State.signum is not None:
    signal.raise_signal(signal.SIGTERM)


def reached(count: int) -> bool:
  """Whether the loop stops after its step or record `count` (every process calls it at each one,
  with the same counts): JAX's sync point, or with one process, whether a signal was noted."""
  if _sync_manager() is None:
    return _State.signum is not None
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.reached_preemption_sync_point(count)


def begin(count: int) -> bool:
  """Called by every process where its loop begins, at `count`: reports it to JAX's service, and
  returns whether a preemption notice came before (process 0's view, so every process agrees); the
  loop then stops after its first step. False without a distributed runtime (`reached` tells), and
  at count 0, where the sync point of an early notice, 1, is the first step (no collective then)."""
  if _sync_manager() is None or count == 0:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  reached(count)
  multihost_utils.sync_global_devices("preemption: counters reported")  # a later notice: sync point > count
  noticed = False
  if jax.process_index() == 0:
    try:
      jax_distributed.global_state.client.key_value_try_get(_NOTICE_KEY)
      noticed = True
    except Exception:  # noqa: BLE001 - NOT_FOUND: no notice yet
      pass
  return bool(multihost_utils.broadcast_one_to_all(np.int32(noticed)))


def stop(where: str, saved: str) -> None:
  """Every process, at the agreed point once it is saved: waits until all are there (process 0 may
  still be writing), then raises `Preempted`."""
  if _sync_manager() is not None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("preemption: saved")
  raise Preempted(where, saved)

"""One `rospr` command as several JAX processes: the launch settings, and stopping them together.

Every process runs the same command line; JAX joins them into one runtime whose devices span them all.
The settings come from the environment:

    ROSPR_MULTIHOST=1        JAX's cluster auto-detection (Cloud TPU slices, SLURM, Open MPI,
                             Kubernetes); run_tpu.sh sets it on slices of several hosts.
    JAX_COORDINATOR_ADDRESS  host:port of process 0 (it serves the coordination service there),
    ROSPR_NUM_PROCESSES      how many processes, and
    ROSPR_PROCESS_ID         this one's index in 0 .. N-1: an explicit launch (any machine; all three).
    ROSPR_INIT_TIMEOUT       seconds to wait for every process to arrive (default 300).
    ROSPR_HEARTBEAT_TIMEOUT  seconds without heartbeats after which JAX counts a process as dead and
                             stops the others (default 20).
    ROSPR_SHUTDOWN_TIMEOUT   seconds a finished process waits for the others at exit (default 300).
    JAX_NUM_CPU_DEVICES      CPU devices per process (read by JAX itself; CPU collectives use gloo).

With explicit settings, auto-detection fills in nothing; with ROSPR_MULTIHOST=1 the explicit ones that
are given override what JAX detects. Bad settings and a peer that never arrives end the command with
one line `rospr COMMAND: ...` and exit code 2.

Stopping together: a process whose command fails records its message in the coordination service's
key-value store before it exits; a watchdog thread in every other process sees it within about a
second, says which process stopped and why, and ends its own process (exit code 1) instead of
waiting in a collective that will never complete. A process that dies (killed, out of memory) stops
sending heartbeats; JAX then aborts the others after ROSPR_HEARTBEAT_TIMEOUT seconds (at once when the
coordinator died), and each one's supervisor (`supervisor.py`) says in one line which process was lost.

Layer 0: this module imports only `supervisor` of the project (and JAX, inside the functions).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
from typing import Mapping

from rospr_jax import supervisor

DEFAULT_INIT_TIMEOUT = 300
DEFAULT_HEARTBEAT_TIMEOUT = 20
DEFAULT_SHUTDOWN_TIMEOUT = 300
_FAILED = "rospr/failed/"  # key-value directory: process id -> the message of its failure
_NO_BARRIER = "[left without the shutdown barrier] "  # a failure whose process skipped the barrier
_PEER_GONE = re.compile(r"closed by peer|connection reset|UNAVAILABLE|another task|task .* (died|failed)|"
                        r"heartbeat|socket closed", re.IGNORECASE)
_GRACE = 2.0  # seconds a watchdog lets its own process end by itself after a peer failed
_POLL = 1.0  # seconds between the watchdog's looks


class LaunchError(ValueError):
  """The launch settings are inconsistent, or the processes could not join."""


@dataclasses.dataclass(frozen=True)
class Launch:
  """How to start JAX's distributed runtime (None fields: JAX's auto-detection decides)."""
  coordinator: str | None
  num_processes: int | None
  process_id: int | None
  auto_detect: bool
  init_timeout: int = DEFAULT_INIT_TIMEOUT
  heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
  shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT

  def process_name(self) -> str:
    """`process I of N`, or `this process` where JAX's auto-detection has yet to tell."""
    known = self.num_processes is not None and self.process_id is not None
    return f"process {self.process_id} of {self.num_processes}" if known else "this process"

  def describe(self) -> str:
    return self.process_name() + (f", coordinator {self.coordinator}" if self.coordinator else "")


def _integer(environ: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
  text = environ.get(name, "").strip()
  if not text:
    return default
  if not re.fullmatch(r"[0-9]+", text) or int(text) < minimum:
    raise LaunchError(f"{name}={text!r} must be an integer >= {minimum}.")
  return int(text)


def launch_settings(environ: Mapping[str, str] = os.environ) -> Launch | None:
  """The launch the environment asks for, or None for one plain process; raises LaunchError."""
  multihost = environ.get("ROSPR_MULTIHOST", "").strip()
  if multihost not in ("", "0", "1"):
    raise LaunchError(f"ROSPR_MULTIHOST={multihost!r} must be 1 (JAX's cluster auto-detection) or 0.")
  auto = multihost == "1"
  coordinator = environ.get("JAX_COORDINATOR_ADDRESS", "").strip() or None
  count = _integer(environ, "ROSPR_NUM_PROCESSES", None, 1)
  index = _integer(environ, "ROSPR_PROCESS_ID", None, 0)
  timeouts = {field: _integer(environ, name, default, 1) for field, name, default in [
      ("init_timeout", "ROSPR_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT),
      ("heartbeat_timeout", "ROSPR_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT),
      ("shutdown_timeout", "ROSPR_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)]}
  if not auto and count is None and index is None:
    return None  # JAX_COORDINATOR_ADDRESS alone does not ask for several processes
  if not auto and count == 1 and index in (None, 0):
    return None  # one process (a batch script's count of 1): nothing to coordinate
  if coordinator is not None and not re.fullmatch(r"\[?[\w.:-]*[\w\]]:[0-9]{1,5}", coordinator):
    raise LaunchError(f"JAX_COORDINATOR_ADDRESS={coordinator!r} must be HOST:PORT, e.g. 10.0.0.1:8476.")
  if coordinator is not None and not 0 < int(coordinator.rsplit(":", 1)[1]) < 65536:
    raise LaunchError(f"JAX_COORDINATOR_ADDRESS={coordinator!r}: the port must be in 1..65535.")
  if not auto:
    missing = [name for name, value in [("JAX_COORDINATOR_ADDRESS", coordinator),
                                        ("ROSPR_NUM_PROCESSES", count), ("ROSPR_PROCESS_ID", index)]
               if value is None]
    if missing:
      raise LaunchError(f"an explicit launch needs JAX_COORDINATOR_ADDRESS, ROSPR_NUM_PROCESSES and "
                        f"ROSPR_PROCESS_ID; {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                        "not set (or set ROSPR_MULTIHOST=1 for JAX's cluster auto-detection).")
  if count is not None and index is not None and index >= count:
    raise LaunchError(f"ROSPR_PROCESS_ID={index} is out of range: ROSPR_NUM_PROCESSES={count} "
                      f"processes are numbered 0 .. {count - 1}.")
  return Launch(coordinator, count, index, auto, **timeouts)


class _State:
  launch: Launch | None = None
  prog: str = "rospr"
  client = None
  done = threading.Event()
  last_error: str = ""


def initialize(prog: str = "rospr", environ: Mapping[str, str] = os.environ) -> bool:
  """Joins the processes the environment describes (see the module docstring).

  Returns whether this is one of several processes. Raises LaunchError for bad settings or when
  JAX refuses them; a peer that never arrives ends this process with exit code 2 after
  ROSPR_INIT_TIMEOUT seconds (JAX would abort it with a C++ stack trace a little later).
  """
  launch = launch_settings(environ)
  if launch is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  _State.prog, _State.launch = prog, launch
  arrived = threading.Event()

  def give_up():
    if not arrived.wait(launch.init_timeout):
      _say(f"{launch.describe()}: not every process arrived within ROSPR_INIT_TIMEOUT="
           f"{launch.init_timeout} s (a process that never started or stopped early, or another "
           "JAX_COORDINATOR_ADDRESS or ROSPR_NUM_PROCESSES on some process).")
      os._exit(2)  # pylint: disable=protected-access  (the main thread is blocked inside JAX)

  threading.Thread(target=give_up, name="rospr-init-timeout", daemon=True).start()
  try:
    jax.distributed.initialize(
        coordinator_address=launch.coordinator, num_processes=launch.num_processes,
        process_id=launch.process_id, cluster_detection_method=None if launch.auto_detect else "deactivate",
        # JAX aborts the process when its own timeout passes: ours (above) ends it first, cleanly.
        initialization_timeout=launch.init_timeout + 30, heartbeat_timeout_seconds=launch.heartbeat_timeout,
        shutdown_timeout_seconds=launch.shutdown_timeout)
  except (ValueError, TypeError, RuntimeError) as e:
    raise LaunchError(f"{launch.describe()}: JAX's distributed runtime refused the settings: {e}") from None
  finally:
    arrived.set()
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  _State.client = jax_distributed.global_state.client
  if jax.process_count() > 1 and _State.client is not None:
    threading.Thread(target=_watch, name="rospr-watchdog", daemon=True).start()
  return jax.process_count() > 1


def note_error(message: str) -> None:
  """Remembers the error a command reports, for the peers' message if this process fails."""
  _State.last_error = message


def finish(code: int, *, barrier: bool = True) -> None:
  """Called once the command returned `code`: a failure is announced to the other processes (their
  watchdogs stop them; `barrier=False`: this process will not meet them at the shutdown barrier, so
  they must not wait there); the watchdog of this process stands down."""
  _State.done.set()
  if code == 0 or _State.client is None or _State.launch is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  message = _State.last_error or f"exit code {code}"
  try:
    _State.client.key_value_set(f"{_FAILED}{jax.process_index()}",
                                f"{'' if barrier else _NO_BARRIER}exit code {code}: {message}")
  except Exception:  # noqa: BLE001 - the service may be gone already; the heartbeats then tell.
    pass


def stop_on_runtime_error(error: BaseException) -> None:
  """In a multi-process run, ends this process (exit code 1, one line naming `error`) when a
  computation failed in JAX's runtime: a collective whose peer is gone (gloo: "Connection closed by
  peer"). The other processes are told first; the shutdown barrier, which would wait for a dead
  peer until the heartbeat timeout, is skipped. Returns for every other error."""
  if _State.client is None or _State.launch is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  if not isinstance(error, jax.errors.JaxRuntimeError) or not _PEER_GONE.search(str(error)):
    return  # this process's own failure (out of memory, a compile error): its traceback says it
  first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  me, count = jax.process_index(), jax.process_count()
  message = supervisor.lost_line(f"process {me} of {count}",
                                 f"process {1 - me}" if count == 2 else "another process (see its output)",
                                 f"a computation with it failed: {first}")
  _say(message)
  note_error(message)
  finish(1, barrier=False)
  time.sleep(_GRACE + 2 * _POLL)  # the others' watchdogs read the failure meanwhile
  sys.stdout.flush()
  os._exit(1)  # pylint: disable=protected-access


def _say(message: str) -> None:
  # One write, newline included: a runtime thread's log line cannot land between text and newline.
  sys.stderr.write(f"{_State.prog}: {message}\n")
  sys.stderr.flush()


def _watch() -> None:
  """Ends this process when another one announced its failure (see the module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  me = jax.process_index()
  while not _State.done.wait(_POLL):
    try:
      failed = [(key, value) for key, value in _State.client.key_value_dir_get(_FAILED)
                if not key.endswith(f"/{me}")]
    except Exception:  # noqa: BLE001 - the coordinator is gone: JAX's heartbeats end this process.
      return
    if not failed:
      continue
    if _State.done.wait(_GRACE):  # this process is ending by itself (the same error, most likely)
      return
    key, value = failed[0]
    _say(f"process {key.rsplit('/', 1)[-1]} of {jax.process_count()} stopped "
         f"({value.removeprefix(_NO_BARRIER)}); stopping process {me} too.")
    if not value.startswith(_NO_BARRIER):
      try:
        jax.distributed.shutdown()  # meets the failed process at the shutdown barrier: both end now
      except Exception:  # noqa: BLE001 - exiting anyway
        pass
    os._exit(1)  # pylint: disable=protected-access  (the main thread may wait in a collective)

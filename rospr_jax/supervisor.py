"""A lost peer ends a multi-process run with one line: each `rospr` process runs its command in a
child process and turns JAX's native abort into `rospr COMMAND: process I of N lost process J ...`.

JAX ends a process whose peer is gone from C++ (exit 134: "client.h:80 Terminating process because the
JAX distributed service detected fatal errors", then a stack trace): at once when the coordinator
(process 0) is gone, and ROSPR_HEARTBEAT_TIMEOUT seconds after another process stopped sending
heartbeats (killed, out of memory, its host gone), in whatever phase this process is (compiling,
stepping, waiting at a checkpoint's or a publication's barrier). No Python code of that process runs
after the fact: the runtime takes a missed-heartbeat callback, but jaxlib 0.10.2 cannot hand it the
status from Python (the process aborts with std::bad_cast). So, in a multi-process launch, the `rospr`
process is a small supervisor (no JAX imported) and the command runs in its child:

- the child's stdout is the supervisor's; its stderr passes through the supervisor, which holds back
  the runtime's lines about the coordination service (`_HOLD`) for up to `_HOLD_SECONDS`: forwarded
  when nothing follows, dropped when the abort follows;
- after the abort the supervisor prints one line naming the lost process, read from the runtime's
  status (unless the child's last line already said why it stops), and exits with code 1; the rerun resumes from the last checkpoint as after any stop;
- the child's other exits are the supervisor's (a signal N as 128 + N); SIGTERM, SIGINT and SIGHUP
  are passed on to the child, and a child whose supervisor is gone (`kill -9`) ends itself at once.

Layer 0: this module imports nothing of the project and no JAX.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

CHILD = "ROSPR_SUPERVISED"  # set in the child's environment: it runs the command itself
_ABORT = re.compile(rb"Terminating process because the JAX distributed service detected fatal errors")
_HOLD = re.compile(rb"^[EWF]\d{4} [\d:.]+ +\d+ "  # the runtime's log lines on peers (glog's prefix)
                   rb"(coordination_service\w*\.cc|preemption_sync_manager\.cc|client\.h):\d+\]")
_HOLD_SECONDS = 5.0  # the abort follows its runtime lines within milliseconds
_UNHEALTHY = re.compile(rb"stopped sending heartbeats\):\s*([\d,\s]+?)\s*(?:The tasks|$)")
_LEADER_GONE = re.compile(rb"Failed to send RPC to coordination service|leader task", re.IGNORECASE)
_PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def supervised() -> bool:
  """Whether this process is the child of a supervisor (it runs the command itself)."""
  return os.environ.get(CHILD) == "1"


def lost_process(runtime_text: bytes) -> str:
  """Which process the runtime's fatal status names as gone: `process 1`, `processes 1, 2`,
  `process 0, the coordinator` or `another process`."""
  unhealthy = _UNHEALTHY.search(runtime_text)
  if unhealthy:
    ids = [int(i) for i in re.findall(rb"\d+", unhealthy.group(1))]
    return f"process{'es' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
  if _LEADER_GONE.search(runtime_text):
    return "process 0, the coordinator"
  return "another process"


def lost_line(where: str, lost: str, why: str) -> str:
  """The one line of a process (`where`: "process 1 of 2") that stops because it lost another."""
  return (f"{where} lost {lost} ({why}); stopping {where.split(' of ')[0]} too. Rerun the same command "
          "on every process to resume.")


class _Stderr:
  """Forwards the child's stderr as it comes (progress bars included), holding back the runtime's
  coordination lines until it is clear whether the abort follows them."""

  def __init__(self, out):
    self.out = out
    self.partial = b""  # the last line, not yet ended
    self.held = b""  # runtime lines since `held_since`
    self.held_since: float | None = None
    self.aborted = False
    self.last_line = b""  # the last line forwarded

  def feed(self, data: bytes) -> None:
    lines = (self.partial + data).split(b"\n")
    self.partial = lines.pop()
    for line in lines:
      self._line(line + b"\n")
    if self.held_since is None and b"\r" in self.partial:  # a progress bar redrawn in place
      cut = self.partial.rindex(b"\r") + 1
      self._write(self.partial[:cut])
      self.partial = self.partial[cut:]

  def _line(self, line: bytes) -> None:
    if _ABORT.search(line):
      self.aborted = True
    if self.aborted or self.held_since is not None or _HOLD.match(line):
      self.held += line
      self.held_since = self.held_since or time.monotonic()
    else:
      self._write(line)
      self.last_line = line

  def tick(self) -> None:
    """Forwards held lines that no abort followed within `_HOLD_SECONDS`."""
    if not self.aborted and self.held_since and time.monotonic() - self.held_since > _HOLD_SECONDS:
      self.release()

  def release(self) -> None:
    held, self.held, self.held_since = self.held, b"", None
    self._write(held + self.partial if not self.aborted else b"")
    self.partial = b""

  def _write(self, data: bytes) -> None:
    if data:
      self.out.write(data)
      self.out.flush()


def run(command: list[str], prog: str, where: str, heartbeat_timeout: int) -> int:
  """Runs `command` (`rospr ...` again) as a child process and returns its exit code; after JAX's
  abort on a lost peer, prints one line naming it (`where`: this process, "process 1 of 2") and
  returns 1."""
  child = subprocess.Popen(command, stderr=subprocess.PIPE, env={**os.environ, CHILD: "1"})
  for signum in _PASSED_ON:
    signal.signal(signum, lambda signum, _: child.send_signal(signum))
  stderr = _Stderr(sys.stderr.buffer)
  fd = child.stderr.fileno()
  while True:
    ready, _, _ = select.select([fd], [], [], 1.0)
    data = os.read(fd, 1 << 16) if ready else None
    if data == b"":
      break
    if data:
      stderr.feed(data)
    stderr.tick()
  code = child.wait()
  if stderr.aborted:
    if not stderr.last_line.startswith(f"{prog}: ".encode()):  # the child has not said why it stops
      lost = lost_process(stderr.held)
      why = ("its coordination service stopped answering" if lost.endswith("the coordinator") else
             f"no heartbeat for ROSPR_HEARTBEAT_TIMEOUT={heartbeat_timeout} s: killed, out of memory, "
             "or its host is gone")
      sys.stderr.write(f"{prog}: {lost_line(where, lost, why)}\n")
      sys.stderr.flush()
    return 1
  stderr.release()
  return code if code >= 0 else 128 - code


def end_with_supervisor() -> None:
  """In the child: ends this process at once when its supervisor is gone (killed with `kill -9`), so
  that its peers see the loss as they would without a supervisor."""
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(0.2)
    os._exit(1)  # pylint: disable=protected-access  (the main thread may be inside JAX)

  threading.Thread(target=watch, name="rospr-supervisor-watch", daemon=True).start()

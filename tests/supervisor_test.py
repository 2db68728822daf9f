"""The supervisor of a multi-process `rospr`: JAX's native abort on a lost peer becomes one line naming
it; everything else the child says or does passes through unchanged."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rospr_jax import supervisor

# What JAX 0.10.2 printed, seen in this project's runs (stack frames shortened): a survivor whose
# coordinator (process 0) was killed, and the coordinator once process 1 had stopped sending heartbeats.
COORDINATOR_GONE = b"""\
E1206 20:33:37.912741   23014 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1206 20:33:37.912834   23014 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted unexpectedly or this task is experiencing network issues.
Additional GRPC error information from remote target coordination_service while calling /xla.coordination.CoordinationService/PollForError:
:UNKNOWN:Error received from peer  {grpc_message:"Socket closed", grpc_status:14}
*** Check failure stack trace: ***
    @     0x7f0fc38b906f  tsl::(anonymous namespace)::PThread::ThreadFn()
"""
WORKER_GONE = b"""\
E1206 20:35:23.501519   23359 coordination_service.cc:1549] [12946885565253160965] Use error polling to propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
1
The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, eviction) to debug further. [type.googleapis.com/tensorflow.CoordinationServiceError='']
E1206 20:35:23.502127   23370 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1206 20:35:23.502297   23370 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
1
The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, eviction) to debug further.
*** Check failure stack trace: ***
    @     0x7fd42fcb906f  tsl::(anonymous namespace)::PThread::ThreadFn()
"""


@pytest.mark.parametrize("text, lost", [
    (COORDINATOR_GONE, "process 0, the coordinator"),
    (WORKER_GONE, "process 1"),
    (WORKER_GONE.replace(b"heartbeats):\n1\n", b"heartbeats):\n1, 3\n"), "processes 1, 3"),
    (b"F1206 20:35:23.502297 1 client.h:80] Terminating process because ... UNKNOWN: ?", "another process"),
])
def test_the_lost_process_is_read_from_the_runtime_status(text, lost):
  assert supervisor.lost_process(text) == lost


def test_output_passes_at_once_and_the_abort_is_held_back():
  out = io.BytesIO()
  stderr = supervisor._Stderr(out)
  stderr.feed(b"INFO step 1\nprogress  10%\rprogress  20%\r")  # a progress bar redrawn in place
  assert out.getvalue() == b"INFO step 1\nprogress  10%\rprogress  20%\r"
  for start in range(0, len(WORKER_GONE), 7):  # the pipe cuts the text anywhere
    stderr.feed(WORKER_GONE[start:start + 7])
  stderr.tick()
  assert stderr.aborted and out.getvalue() == b"INFO step 1\nprogress  10%\rprogress  20%\r"
  assert supervisor.lost_process(stderr.held) == "process 1"


def test_runtime_lines_with_no_abort_after_them_are_forwarded():
  out = io.BytesIO()
  stderr = supervisor._Stderr(out)
  warning = b"W1206 20:37:49.722633   24289 preemption_sync_manager.cc:159] Failed to cancel a barrier\n"
  stderr.feed(warning + b"INFO step 2\n")
  assert out.getvalue() == b""  # held: an abort may follow
  stderr.held_since -= supervisor._HOLD_SECONDS + 1
  stderr.tick()
  assert out.getvalue() == warning + b"INFO step 2\n" and not stderr.aborted
  stderr.feed(b"last words")
  stderr.release()  # the child has ended
  assert out.getvalue().endswith(b"INFO step 2\nlast words")


def _child(script: str) -> list[str]:
  return [sys.executable, "-c", textwrap.dedent(script)]


def _run(script, capfd, where="process 1 of 2"):
  code = supervisor.run(_child(script), "rospr evaluate", where, 20)
  return code, capfd.readouterr()


def test_the_abort_of_a_child_becomes_one_line_naming_the_lost_process(capfd):
  code, seen = _run(f"""
      import os, sys
      print("scored 10 examples", flush=True)
      sys.stderr.buffer.write(b"INFO before\\n" + {COORDINATOR_GONE!r})
      sys.stderr.flush()
      os.abort()
      """, capfd)
  assert code == 1 and seen.out == "scored 10 examples\n"
  assert seen.err == ("INFO before\nrospr evaluate: process 1 of 2 lost process 0, the coordinator (its "
                      "coordination service stopped answering); stopping process 1 too. Rerun the same "
                      "command on every process to resume.\n")


def test_a_child_that_said_why_it_stops_is_not_named_twice(capfd):
  code, seen = _run(f"""
      import os, sys
      sys.stderr.buffer.write(b"rospr evaluate: process 0 of 2 lost process 1 (a computation failed)\\n"
                              + {WORKER_GONE!r})
      sys.stderr.flush()
      os.abort()
      """, capfd, where="process 0 of 2")
  assert code == 1 and seen.err == "rospr evaluate: process 0 of 2 lost process 1 (a computation failed)\n"


@pytest.mark.parametrize("script, code", [
    ("import sys; sys.exit(3)", 3),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + signal.SIGTERM),
    ("import os; os.abort()", 128 + signal.SIGABRT),  # a crash of its own: not a lost peer
])
def test_other_exits_are_the_childs(script, code, capfd):
  assert _run(script, capfd)[0] == code


def test_the_child_sees_the_supervisor_and_its_signals(tmp_path):
  """SIGTERM reaches the child through the supervisor; a child whose supervisor is killed ends."""
  script = tmp_path / "supervise.py"
  script.write_text(textwrap.dedent("""
      import sys
      from rospr_jax import supervisor
      child = '''
      import signal, sys, time
      from rospr_jax import supervisor
      supervisor.end_with_supervisor()
      signal.signal(signal.SIGTERM, lambda *_: (print("child got SIGTERM", flush=True), sys.exit(7)))
      print("child ready", flush=True)
      time.sleep(60)
      '''
      sys.exit(supervisor.run([sys.executable, "-c", child], "rospr x", "process 0 of 2", 20))
      """))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  for how in ("SIGTERM", "SIGKILL"):
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    assert parent.stdout.readline() == "child ready\n"
    (child_pid,) = [int(p) for p in subprocess.check_output(["pgrep", "-P", str(parent.pid)]).split()]
    parent.send_signal(getattr(signal, how))
    if how == "SIGTERM":
      assert parent.stdout.readline() == "child got SIGTERM\n" and parent.wait(30) == 7
    else:
      assert parent.wait(30) == -signal.SIGKILL
      deadline = time.time() + 10
      while os.path.exists(f"/proc/{child_pid}") and _state(child_pid) != "Z" and time.time() < deadline:
        time.sleep(0.05)
      assert not os.path.exists(f"/proc/{child_pid}") or _state(child_pid) == "Z"


def _state(pid: int) -> str:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0]
  except FileNotFoundError:
    return "gone"

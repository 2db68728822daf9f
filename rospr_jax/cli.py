"""The `rospr` command: one entry point, a subcommand per step of the data flow.

Each subcommand is one module of `rospr_jax/commands/` exposing `main(argv: list[str]) -> int`; this
file only dispatches, importing the module lazily so that `rospr score` never pays for TensorFlow.
"""

from __future__ import annotations

import importlib
import sys

from rospr_jax import distributed, platforms, preemption, supervisor

COMMANDS = {
    # name: one-line help; the command's module is rospr_jax.commands.<name with "_" for "-">.
    "fetch": "cache the promptsource archive; build the BIG-bench store from a source you give",
    "tasks": "list SeqIO tasks and mixtures, or show rendered examples",
    "convert": "convert a checkpoint between Hugging Face and T5X formats",
    "score": "score answer choices of one input with a T0 checkpoint",
    "train-prompts": "train soft prompts for sources (gin-configured)",
    "build-library": "embed source instances and build the search index",
    "retrieve": "select prompts for target tasks from a library",
    "evaluate": "zero-shot rank classification with and without prompts (gin-configured)",
    "plan": "compile a run's steps for a TPU slice (or here) ahead of time: memory per device, time",
    "demo": "the offline end-to-end run on the generated task family and a tiny model",
}


def command_module(name: str) -> str:
  """The module of a `rospr` subcommand: `train-prompts` -> `rospr_jax.commands.train_prompts`."""
  return f"rospr_jax.commands.{name.replace('-', '_')}"


def _usage() -> str:
  lines = ["usage: rospr COMMAND [ARGS...]", "", "commands:"]
  lines += [f"  {name:<15} {help_}" for name, help_ in COMMANDS.items()]
  lines += ["", "`rospr COMMAND --help` describes a command's arguments."]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ("-h", "--help"):
    print(_usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"rospr: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
    return 2
  prog = f"rospr {name}"
  platforms.skip_absent_tpu()  # before JAX starts: libtpu installed on a machine without a TPU
  try:
    launch = distributed.launch_settings()
    if launch is not None and not supervisor.supervised():  # the command runs in a watched child
      return supervisor.run([sys.executable, "-m", "rospr_jax.cli", *argv], prog, launch.process_name(),
                            launch.heartbeat_timeout)
  except distributed.LaunchError as e:
    print(f"{prog}: {e}", file=sys.stderr)
    return 2
  with preemption.listening(name in preemption.COMMANDS):  # SIGTERM, SIGINT: stop at a saved point
    return _run_command(name, rest, prog, launch)


def _run_command(name: str, rest: list[str], prog: str, launch) -> int:
  """Joins the other processes (if any), runs the command and returns its exit code; SIGINT that
  ends it at once is one line and exit code 130."""
  code = 1
  try:
    if launch is not None:
      supervisor.end_with_supervisor()
    distributed.initialize(prog)  # several processes (ROSPR_MULTIHOST=1, or JAX_COORDINATOR_ADDRESS + ...)
    preemption.after_initialize(name in preemption.COMMANDS)
    module = importlib.import_module(command_module(name))
    code = int(module.main(rest) or 0)
    return code
  except distributed.LaunchError as e:
    code = 2
    print(f"{prog}: {e}", file=sys.stderr)
    return code
  except KeyboardInterrupt:
    code = preemption.INTERRUPTED_EXIT_CODE
    distributed.note_error("interrupted (SIGINT)")  # what the other processes of a run report
    sys.stderr.write(f"{prog}: interrupted (SIGINT); rerun the same command to start again.\n")
    return code
  except SystemExit as e:  # argparse's exit (2 for bad flags, 0 for --help)
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    raise
  except BaseException as e:
    distributed.note_error(f"{type(e).__name__}: {e}")
    distributed.stop_on_runtime_error(e)  # a peer is gone: one line, no traceback, no barrier wait
    raise
  finally:
    # A failure stops the other processes of the run; a preempted stop is agreed by all, no failure.
    distributed.finish(0 if code == preemption.EXIT_CODE else code)


if __name__ == "__main__":
  sys.exit(main())

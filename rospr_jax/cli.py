"""The `rospr` command: one entry point, a subcommand per step of the data flow.

Each subcommand is one module of `rospr_jax/commands/` exposing `main(argv: list[str]) -> int`; this
file only dispatches, importing the module lazily so that `rospr score` never pays for TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    # name: one-line help; the command's module is rospr_jax.commands.<name with "_" for "-">.
    "fetch": "download and cache the promptsource and BIG-bench archives",
    "tasks": "list SeqIO tasks and mixtures, or show rendered examples",
    "convert": "convert a checkpoint between Hugging Face and T5X formats",
    "score": "score answer choices of one input with a T0 checkpoint",
    "train-prompts": "train soft prompts for sources (gin-configured)",
    "build-library": "embed source instances and build the search index",
    "retrieve": "select prompts for target tasks from a library",
    "evaluate": "zero-shot rank classification with and without prompts (gin-configured)",
    "demo": "the offline end-to-end run on a tiny model",
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
  if os.environ.get("ROSPR_MULTIHOST") == "1":  # Set by run_tpu.sh on multi-host TPU slices.
    import jax
    jax.distributed.initialize()
  module = importlib.import_module(command_module(name))
  return int(module.main(rest) or 0)


if __name__ == "__main__":
  sys.exit(main())

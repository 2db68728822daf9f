"""The `rospr` command: one entry point, a subcommand per step of the data flow.

Each subcommand lives in the module of its step and exposes `main(argv: list[str]) -> int`; this file
only dispatches, importing the module lazily so that `rospr score` never pays for TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    # name: (module, one-line help)
    "fetch": ("rospr_jax.data.archives", "download and cache the promptsource and BIG-bench archives"),
    "tasks": ("rospr_tasks.inspect", "list SeqIO tasks and mixtures, or show rendered examples"),
    "convert": ("rospr_jax.model.convert", "convert a checkpoint between Hugging Face and T5X formats"),
    "score": ("rospr_jax.eval.score_cli", "score answer choices of one input with a T0 checkpoint"),
    "train-prompts": ("rospr_jax.prompt.train", "train soft prompts for sources (gin-configured)"),
    "build-library": ("rospr_jax.library.build", "embed source instances and build the search index"),
    "retrieve": ("rospr_jax.retrieval.select_cli", "select prompts for target tasks from a library"),
    "evaluate": ("rospr_jax.eval.evaluate", "zero-shot rank classification with and without prompts"),
    "demo": ("rospr_jax.demo", "the offline end-to-end run on a tiny model"),
}


def _usage() -> str:
  lines = ["usage: rospr COMMAND [ARGS...]", "", "commands:"]
  lines += [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
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
  module = importlib.import_module(COMMANDS[name][0])
  return int(module.main(rest) or 0)


if __name__ == "__main__":
  sys.exit(main())

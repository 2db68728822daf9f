"""`rospr tasks`: list the registered tasks and mixtures, or print rendered examples of one task.

  rospr tasks                          mixtures, then every task with its example counts on disk
  rospr tasks --filter super_glue_rte  only tasks whose name contains the text
  rospr tasks --show NAME [-n 3] [--split validation]
                                       what the model sees: inputs, targets, answer choices (and the
                                       rank-classification rows of a `_score_eval` task)
  rospr tasks --show NAME --queries FILE [--overwrite]
                                       the split's rendered inputs and choices, without labels: the
                                       queries file of `rospr retrieve`

Counts are examples in the local files (or BIG-bench's index), before rendering; "-" marks a split
that is not on disk. Malformed JSON lines are counted too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys




def _written_by_tasks(path: str) -> bool:
  """Whether the file `path` is a queries file as `--queries` writes them: a JSON object with a "text"
  on every line (what else stands there is the user's, and is never replaced)."""
  from rospr_jax import storage  # pylint: disable=g-import-not-at-top
  try:
    for _, line in storage.text_lines(path):
      value = json.loads(line)
      if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return False
  except (ValueError, OSError):
    return False
  return True


def check_queries_destination(path: str, overwrite: bool) -> None:
  """Refuses, before any work, a `--queries` destination that is a folder or a link, an existing file
  without `--overwrite`, or an existing file this command did not write (even with `--overwrite`)."""
  from rospr_jax import storage  # pylint: disable=g-import-not-at-top
  target = storage.as_path(path, "--queries", output=True)
  if not storage.is_url(path) and os.path.islink(path):
    raise ValueError(f"--queries {path} is a symbolic link; give a file of its own.")
  if not target.exists():
    return
  if target.is_dir():
    raise ValueError(f"--queries {path} is a folder; give a file.")
  if not overwrite:
    raise ValueError(f"--queries {path} already exists; pass --overwrite to replace it.")
  if not _written_by_tasks(path):
    raise ValueError(f"--queries {path} is not a queries file (a JSON object with a \"text\" on every "
                     "line); rospr replaces only its own files: give a new file.")


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr tasks", description=__doc__.split("\n")[0])
  parser.add_argument("--filter", default="", help="only tasks whose name contains this text")
  parser.add_argument("--show", metavar="NAME", help="print rendered examples of this task")
  parser.add_argument("-n", type=int, default=3, help="how many examples --show prints")
  parser.add_argument("--split", default=None, help="split for --show (default: the task's evaluation split)")
  parser.add_argument("--queries", metavar="FILE",
                      help="with --show: write the split's rendered inputs and answer choices (no labels) "
                           "to FILE, the JSONL that `rospr retrieve --queries` reads")
  parser.add_argument("--overwrite", action="store_true",
                      help="with --queries: replace the queries file already there (never another file)")
  args = parser.parse_args(argv)
  if args.queries and not args.show:
    parser.error("--queries needs --show NAME (the task whose inputs it writes)")
  if args.queries:
    try:
      check_queries_destination(args.queries, args.overwrite)
    except ValueError as e:
      print(f"rospr tasks: {e}", file=sys.stderr)
      return 2
  from rospr_tasks import inspect, registry  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  registry.register_all()
  if args.show:
    try:
      task, rank = inspect.find(registry, args.show)
      split = args.split or task.eval_split
      if args.queries:
        count = inspect.write_queries(task, split, args.queries)  # whole, local or at a URL
        print(f"rospr tasks: wrote {count} queries of {task.name} ({split}) to {args.queries}")
      else:
        inspect.show(task, rank, split, args.n)
    except (KeyError, FileNotFoundError, ValueError, OSError) as e:
      print(f"rospr tasks: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
      return 1
    return 0
  inspect.list_tasks(registry, args.filter)
  return 0 if "registered" in registry.STATUS.values() else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""`rospr tasks`: list the registered tasks and mixtures, or print rendered examples of one task.

  rospr tasks                          mixtures, then every task with its example counts on disk
  rospr tasks --filter super_glue_rte  only tasks whose name contains the text
  rospr tasks --show NAME [-n 3] [--split validation]
                                       what the model sees: inputs, targets, answer choices (and the
                                       rank-classification rows of a `_score_eval` task)

Counts are examples in the local files (or BIG-bench's index), before rendering; "-" marks a split
that is not on disk. Malformed JSON lines are counted too.
"""

from __future__ import annotations

import argparse
import itertools
import sys

from rospr_jax.data import catalog
from rospr_jax.data import prompted
from rospr_jax.data import records


def _counts(task: prompted.PromptedTask, cache: dict) -> str:
  parts = []
  for split in task.splits:
    if isinstance(task, prompted.BigBenchTask):
      n = prompted.split_counts(task, [split])[split]
      parts.append(f"{split} {n}")
      continue
    key = (task.spec.name, task.spec.subset, task.spec.source_split(split))
    if key not in cache:
      cache[key] = records.count_split(*key, root=task.data_root)
    count = cache[key]
    if count is None:
      parts.append(f"{split} -")
    else:
      bad = f" ({len(count.bad_lines)} malformed lines: {list(count.bad_lines[:5])})" if count.bad_lines else ""
      parts.append(f"{split} {count.examples}{bad}")
  return ", ".join(parts)


def list_tasks(registry, name_filter: str = "", out=None) -> None:
  out = out or sys.stdout
  for part, status in sorted(registry.STATUS.items()):
    if status != "registered":
      print(f"[{part}] not registered: {status}", file=out)
  print("Mixtures:", file=out)
  for name, members in sorted(registry.MIXTURES.items()):
    print(f"  {name}: {len(members)} tasks", file=out)
  cache: dict = {}
  for title, tasks in (("Sources", registry.SOURCES), ("Targets", registry.TARGETS)):
    chosen = [t for name, t in sorted(tasks.items()) if name_filter in name]
    print(f"{title} ({len(chosen)} of {len(tasks)}):", file=out)
    for task in chosen:
      suffix = f" (+{catalog.SCORE_EVAL_SUFFIX})" if task.has_choices else ""
      print(f"  {task.name}{suffix}  [{task.dataset_label}]  {_counts(task, cache)}", file=out)


def find(registry, name: str) -> tuple[prompted.PromptedTask, bool]:
  """The prompted task behind a task name, and whether the name is its rank-classification task."""
  rank = name.endswith(catalog.SCORE_EVAL_SUFFIX)
  base = name[:-len(catalog.SCORE_EVAL_SUFFIX)] if rank else name
  for tasks in (registry.SOURCES, registry.TARGETS):
    if base in tasks:
      return tasks[base], rank
  close = [n for n in itertools.chain(registry.SOURCES, registry.TARGETS) if base.split("_")[0] in n][:10]
  raise KeyError(f"no rospr task named {name!r}; some names: {close or sorted(registry.TARGETS)[:10]}")


def show(task: prompted.PromptedTask, rank: bool, split: str, n: int, out=None) -> None:
  out = out or sys.stdout
  print(f"# {task.name}{catalog.SCORE_EVAL_SUFFIX if rank else ''}  [{task.dataset_label}]  split {split}", file=out)
  for ex in itertools.islice(task.examples(split), n):
    print(f"--- example {ex.idx}", file=out)
    print(f"inputs:\n{ex.inputs}", file=out)
    print(f"targets:\n{ex.targets}", file=out)
    if ex.answer_choices is not None:
      for c, (choice, ok) in enumerate(zip(ex.answer_choices, ex.is_correct)):
        mark = "*" if ok else " "
        row = f"  idx [{ex.idx}, {c}]" if rank else ""
        print(f"  {mark} choice {c}: {choice}{row}", file=out)
  if task.report.num_failed:
    print(f"--- failures\n{task.report.summary()}", file=out)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr tasks", description=__doc__.split("\n")[0])
  parser.add_argument("--filter", default="", help="only tasks whose name contains this text")
  parser.add_argument("--show", metavar="NAME", help="print rendered examples of this task")
  parser.add_argument("-n", type=int, default=3, help="how many examples --show prints")
  parser.add_argument("--split", default=None, help="split for --show (default: the task's evaluation split)")
  args = parser.parse_args(argv)
  from rospr_tasks import registry  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  registry.register_all()
  if args.show:
    try:
      task, rank = find(registry, args.show)
      show(task, rank, args.split or task.eval_split, args.n)
    except (KeyError, FileNotFoundError, ValueError) as e:
      print(f"rospr tasks: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
      return 1
    return 0
  list_tasks(registry, args.filter)
  return 0 if "registered" in registry.STATUS.values() else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

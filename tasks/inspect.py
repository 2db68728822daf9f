"""What `rospr tasks` prints: the registered tasks and mixtures with their example counts, or rendered
examples of one task (`rospr_jax/commands/tasks.py` parses the flags).

Counts are examples in the local files (or BIG-bench's index), before rendering; "-" marks a split
that is not on disk. Malformed JSON lines are counted too.
"""

from __future__ import annotations

import difflib
import itertools
import json
import sys

from rospr_jax import storage
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
    if not hasattr(task, "spec"):  # generated: no files, the split sizes are fixed
      parts.append(f"{split} {task.count(split)}")
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
  close = difflib.get_close_matches(base, list(itertools.chain(registry.SOURCES, registry.TARGETS)), n=5,
                                    cutoff=0.6)
  hint = f"did you mean {', '.join(repr(c + (catalog.SCORE_EVAL_SUFFIX if rank else '')) for c in close)}?" \
      if close else "no close name; `rospr tasks --filter TEXT` lists the tasks whose names contain TEXT"
  raise KeyError(f"no rospr task named {name!r}; {hint}")


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
  report = getattr(task, "report", None)  # a task that renders nothing from files (generated) has none
  if report is not None and report.num_failed:
    print(f"--- failures\n{report.summary()}", file=out)


def write_queries(task: prompted.PromptedTask, split: str, path: str) -> int:
  """Writes the split's rendered inputs and answer choices, without labels, one JSON object per line
  ({"text": ..., "choices": [...], "target": task name}): the queries file `rospr retrieve --queries`
  reads (it refuses the file when its --target is another). Returns the count."""
  lines = [json.dumps({"text": ex.inputs, **({"choices": list(ex.answer_choices)} if ex.answer_choices else {}),
                       "target": task.name}, ensure_ascii=False) for ex in task.examples(split)]
  if not lines:
    raise ValueError(f"{task.name} has no examples in split {split!r} to write as queries.")
  storage.write_text(storage.as_path(path, "--queries", output=True), "".join(line + "\n" for line in lines))
  return len(lines)

"""Evaluation targets from the data layer: prompted tasks read into `rospr_jax.eval.records.Target`.

Shared by `rospr evaluate` and `rospr demo`; the evaluator itself takes only rendered targets.
"""

from __future__ import annotations

import logging
import zlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # imported where it is used: it loads JAX, which `rospr evaluate --help` does not need
  from rospr_jax.eval.records import Target

def target_from_task(task, split: str | None = None, *, max_examples: int | None = None,
                     seed: int = 0) -> Target:
  """Reads a `rospr_jax.data.prompted` task's evaluation split into a `Target`.

  Examples the template skips by design (T0's empty-output rule) and examples without answer choices
  cannot be rank-classified: they are counted (`Target.skipped`, reported beside n) and logged. An
  example whose data is at fault is refused by the task, naming its file and line. With
  `max_examples`, a seeded sample of that many examples (in split order) is kept.
  """
  from rospr_jax.eval.records import Target  # pylint: disable=g-import-not-at-top
  split = split or task.eval_split
  skipped_by_task = getattr(task, "skipped", lambda: 0)
  before = skipped_by_task()
  examples, skipped = [], 0
  for ex in task.examples(split):
    if ex.answer_choices:
      examples.append(ex)
    else:
      skipped += 1
  skipped += skipped_by_task() - before
  if skipped:
    logging.warning("%s: %d examples of split %r are skipped by the template (it renders no target or "
                    "no answer choices for them) and are not evaluated.", task.name, skipped, split)
  if not examples:
    raise ValueError(f"Target {task.name} has no rank-classification examples in split {split!r}.")
  if max_examples is not None and len(examples) > max_examples:
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), max_examples, replace=False))
    examples = [examples[i] for i in keep]
  return Target(name=task.name, dataset=task.dataset_label, template=task.template_name,
                inputs=tuple(ex.inputs for ex in examples),
                choices=tuple(tuple(ex.answer_choices) for ex in examples),
                is_correct=tuple(tuple(bool(c) for c in ex.is_correct) for ex in examples), skipped=skipped)


def resolve_target_tasks(specs: Sequence[str], data_dir: str | None = None) -> list:
  """Target tasks from group names and task names.

  Groups, one per task family (`rospr_jax.data.families`): "generated" (the generated family's
  held-out targets: no data needed), "held_out" (the 11 held-out datasets' original-task templates:
  promptsource templates and DATA_DIR) and "bigbench" (the 14 BIG-bench tasks: a configured BIG-bench
  source), and any family registered there. A task name loads only the family its name belongs to, so
  a named held-out target never needs BIG-bench.
  """
  from rospr_jax.data import families  # pylint: disable=g-import-not-at-top
  if isinstance(specs, str):
    raise ValueError(f"TARGETS must be a list of groups or task names, e.g. ['{specs}'], not the "
                     f"string {specs!r}.")
  loaded: dict[str, list] = {}

  def targets_of(family):
    if family.name not in loaded:
      loaded[family.name] = _family_targets(family, data_dir)
    return loaded[family.name]

  tasks = []
  for spec in specs:
    if spec in families.groups():
      tasks.extend(targets_of(families.of_group(spec)))
      continue
    matches = [t for t in targets_of(families.of_task(spec)) if t.name == spec]
    if not matches:
      raise ValueError(f"Unknown target {spec!r}: give {list(families.groups())} or a task name from "
                       "`rospr tasks`.")
    tasks.extend(matches)
  return tasks


def _family_targets(family, data_dir: str | None) -> list:
  """A family's targets; a family whose data is missing is refused before any work, never skipped
  (with its hint, where it has one)."""
  if family.targets_hint is None:
    return family.targets(data_dir)
  try:
    return family.targets(data_dir)
  except FileNotFoundError as e:
    raise ValueError(family.targets_hint.format(error=e)) from None


TRAIN_SPLIT = "train"


def labelled_examples(task, target: Target, k: int, seed: int, evaluated_split: str | None = None):
  """A seeded draw of `k` labelled examples of `task`'s training split for the fine-tuned methods
  (`pipeline.fine_tuning.LabelledExamples`), never from the evaluated split: a task evaluated on its
  training split or on all its examples (BIG-bench's "all"), or without a training split, gets none,
  with the reason; an example of the training split whose input is among the evaluated ones
  (`target.inputs`) is left out and counted. The draw is a seeded permutation of the split's
  positions (the first k kept, so a smaller k takes a prefix of a larger one's draw).
  """
  from rospr_jax.pipeline.labelled import LabelledExamples  # pylint: disable=g-import-not-at-top
  evaluated = evaluated_split or task.eval_split
  if evaluated in (TRAIN_SPLIT, "all") or TRAIN_SPLIT not in task.splits:
    what = (f"is evaluated on its {evaluated!r} split, which holds its training examples"
            if TRAIN_SPLIT in task.splits or evaluated == "all" else f"has no training split (its splits: {list(task.splits)})")
    return LabelledExamples(None, seed=seed, reason=f"{task.name} {what}: no labelled examples apart from the evaluated ones")
  count = task.count(TRAIN_SPLIT)
  if not count:
    return LabelledExamples(None, seed=seed, reason=f"{task.name}: its {TRAIN_SPLIT} split is not on disk")
  order = np.random.default_rng([seed, zlib.crc32(task.name.encode("utf-8"))]).permutation(count)
  evaluated_inputs, kept, excluded = set(target.inputs), {}, 0
  for start in range(0, count, 4 * k):  # render the draw's positions a chunk at a time
    chunk = [int(i) for i in order[start:start + 4 * k]]
    rendered = {ex.idx: ex for ex in task.examples(TRAIN_SPLIT, positions=set(chunk)) if ex.answer_choices}
    for i in chunk:
      if i in rendered and rendered[i].inputs in evaluated_inputs:
        excluded += 1
      elif i in rendered and len(kept) < k:
        kept[i] = rendered[i]
    if len(kept) == k:
      break
  examples = list(kept.values())
  return LabelledExamples(TRAIN_SPLIT, tuple(kept), tuple(ex.inputs for ex in examples),
                          tuple(tuple(ex.answer_choices) for ex in examples),
                          tuple(tuple(bool(c) for c in ex.is_correct) for ex in examples), seed, excluded)

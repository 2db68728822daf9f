"""Prompted tasks without TensorFlow: a (dataset, template) pair or a BIG-bench task, yielding examples.

This is the one definition of every source and target; `rospr_tasks` wraps each in a SeqIO Task, and
code that must not import TensorFlow (the evaluator, the library builder) iterates them directly.

    task.examples(split) -> PromptedExample(idx, inputs, targets, answer_choices [C], is_correct [C])
    task.examples(split, positions={3, 17}) -> only the examples at those positions of the split
    task.count(split) -> examples of the split on disk (before rendering), or None if unknown

`idx` is the example's position in its split (before any drop), so it is the same on every host and
unique within the split. Examples a template skips by design (T0's empty-output rule: it renders
nothing for them) and examples without answer choices are counted in `task.report` (`skipped()`);
an example whose data the template cannot render (a missing or null field, a label that is no index
into the answer choices, an unlabeled -1; `checks`) or that jinja fails on is refused, naming the
file, the line and the field. Malformed BIG-bench examples are counted in their `report`.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
import os
from typing import Container, Iterator, Sequence

from rospr_jax.data import bigbench
from rospr_jax.data import catalog
from rospr_jax.data import checks
from rospr_jax.data import rank_classification
from rospr_jax.data import records
from rospr_jax.data import templates as templates_lib

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PromptedExample:
  """One rendered example.

  Attributes:
    idx: position of the example in its split.
    inputs: the model input text.
    targets: the target text (for rank classification: the correct choice as the template renders it).
    answer_choices: [C] choices, or None for an open-ended template.
    is_correct: [C] flags, or None.
  """

  idx: int
  inputs: str
  targets: str
  answer_choices: tuple[str, ...] | None = None
  is_correct: tuple[bool, ...] | None = None


class PromptedTask(abc.ABC):
  """Base class: a named task whose examples come from one template or one BIG-bench task.

  `report` (a RenderReport or a bigbench.LoadReport), where a task has one (a task rendered from
  files), has `num_failed` and `summary()`.
  """

  name: str
  dataset_label: str   # the dataset its accuracy is aggregated under
  template_name: str
  splits: tuple[str, ...]
  eval_split: str
  has_choices: bool

  @abc.abstractmethod
  def examples(self, split: str, positions: Container[int] | None = None) -> Iterator[PromptedExample]:
    """The rendered examples of `split`, in split order.

    Args:
      positions: render only the examples at these 0-based positions of the split (before any
        drop); the others are skipped without being rendered.
    """

  @abc.abstractmethod
  def count(self, split: str) -> int | None:
    """Examples of `split` on disk, before rendering (every position is below it); None if unknown."""

  def rank_rows(self, split: str | None = None) -> Iterator[rank_classification.ChoiceRow]:
    """Rank-classification rows of the evaluation split (one per choice)."""
    for ex in self.examples(split or self.eval_split):
      yield from rank_classification.expand_choices(ex.idx, ex.inputs, ex.answer_choices or (), ex.is_correct or ())


class PromptsourceTask(PromptedTask):
  """A (dataset, promptsource template) pair over local (or hub) records."""

  def __init__(self, spec: catalog.DatasetSpec, template: templates_lib.Template,
               data_root: os.PathLike | None = None, seed: int = 0):
    self.spec = spec
    self.template = template
    self.name = catalog.template_task_name(spec, template.name)
    self.dataset_label = spec.label
    self.template_name = template.name
    self.splits = tuple(s for s, _ in spec.splits)
    self.eval_split = catalog.HELD_OUT_EVAL_SPLIT
    self.has_choices = template.answer_choices is not None
    self.data_root = data_root
    self.seed = seed
    self.report = templates_lib.RenderReport()

  def __repr__(self) -> str:
    return f"PromptsourceTask({self.name!r})"

  def examples(self, split: str, positions: Container[int] | None = None) -> Iterator[PromptedExample]:
    """Renders the split's records (raises DatasetNotFoundError at once if the split is absent).

    Raises (while iterating):
      ValueError: an example the template cannot render (its data: `checks.DataError`, or jinja), as
        one line naming the file and line (`records.iter_located`), the field and the template.
    """
    located = records.iter_located(self.spec.name, self.spec.subset, self.spec.source_split(split),
                                   self.data_root)
    return self._render(located, split, positions)

  def count(self, split: str) -> int | None:
    found = records.count_split(self.spec.name, self.spec.subset, self.spec.source_split(split), self.data_root)
    return None if found is None else found.examples

  def _render(self, located, split: str, positions: Container[int] | None) -> Iterator[PromptedExample]:
    key = self.template.where
    failed_before = self.report.failed[key]
    last = [""]  # where the example being rendered is: render_all pulls one example at a time

    def source():
      for where, record in located:
        last[0] = where
        yield record

    rendered = templates_lib.render_all(self.template, source(), self.report, seed=self.seed,
                                        positions=positions, refuse=True)
    while True:
      try:
        i, out = next(rendered)
      except StopIteration:
        break
      except (templates_lib.TemplateError, checks.DataError) as e:
        reason = e.reason if isinstance(e, checks.DataError) else str(e).split(": ", 1)[-1]
        reason = " ".join(reason.split())  # one line
        raise ValueError(f"{last[0]}: {reason} ({self.template.where}, {split} split); correct or remove "
                         "the example") from None
      if self.has_choices:
        if not out.answer_choices or not any(out.answer_choices):
          self.report.add_failure(key, f"{key} example {i}: the example has no answer choices "
                                       f"(answer_choices rendered as {list(out.answer_choices or [])})")
          continue
        correct = tuple(rank_classification.correct_choices(out.answer_choices, out.targets))
        yield PromptedExample(i, out.inputs, out.targets, out.answer_choices, correct)
      else:
        yield PromptedExample(i, out.inputs, out.targets)
    if self.report.failed[key] > failed_before:
      logger.warning("%s (%s): %d example(s) failed in this pass:\n%s", self.name, split,
                     self.report.failed[key] - failed_before, self.report.summary())

  def skipped(self) -> int:
    """Examples rendered so far that the template skips (T0's empty-output rule) or that have no answer
    choices: compare before and after a pass."""
    return self.report.dropped[self.template.where] + self.report.failed[self.template.where]


class BigBenchTask(PromptedTask):
  """A BIG-bench JSON task (all its subtasks), multiple choice."""

  def __init__(self, store: bigbench.BigBenchStore, task: str, eval_split: str = "all"):
    self.store = store
    self.task = task
    self.name = catalog.bigbench_task_name(task)
    self.dataset_label = f"bigbench/{task}"
    self.template_name = "bigbench"
    self.eval_split = eval_split
    self.has_choices = True
    self.report = bigbench.LoadReport()

  def __repr__(self) -> str:
    return f"BigBenchTask({self.name!r})"

  @property
  def splits(self) -> tuple[str, ...]:
    """"all", and "train" / "validation" where the task has enough examples for the cut."""
    return bigbench.SPLITS if bigbench.can_split(self.num_examples()) else ("all",)

  def num_examples(self) -> int:
    """Distinct examples as indexed by `rospr fetch` (malformed ones included)."""
    return self.store.info(self.task)["num_distinct_examples"]

  def examples(self, split: str, positions: Container[int] | None = None) -> Iterator[PromptedExample]:
    return (PromptedExample(i, ex.inputs, ex.target, ex.choices, ex.is_correct)
            for i, ex in enumerate(self._split(split)) if positions is None or i in positions)

  def count(self, split: str) -> int:
    """From `rospr fetch`'s index, without loading the task: malformed examples are counted, so this
    bounds the positions from above (positions past the well-formed examples yield nothing)."""
    n = self.num_examples()
    return n if split == "all" else len(self._cut(range(n), split))

  def _split(self, split: str) -> list[bigbench.BigBenchExample]:
    """The well-formed examples of `split` ("all": every one, in the task's order)."""
    loaded = _load_bigbench(self.store, self.task)
    self.report = loaded[1]
    return self._cut(loaded[0], split)

  def _cut(self, examples, split: str):
    try:
      return bigbench.split_examples(examples, split)
    except ValueError as e:
      raise ValueError(f"{self.name}: {e} (its splits: {list(self.splits)})") from None


@functools.lru_cache(maxsize=8)
def _load_bigbench(store: bigbench.BigBenchStore, task: str):
  report = bigbench.LoadReport()
  examples = store.examples(task, report)
  if report.skipped:
    logger.warning("BIG-bench %s: skipped %s; first: %s", task, dict(report.skipped), report.messages[0])
  return examples, report


# ---------------------------------------------------------------------------------------------------
# The task lists.


def t0_source_tasks(templates_dir: os.PathLike, data_root: os.PathLike | None = None) -> list[PromptsourceTask]:
  """One task per template of each of T0's 38 training datasets (sorted by template name)."""
  out = []
  for spec in catalog.T0_TRAIN_DATASETS:
    for template in templates_lib.sorted_templates(templates_lib.load_dataset_templates(templates_dir, spec.name, spec.subset)):
      out.append(PromptsourceTask(spec, template, data_root))
  return out


def held_out_target_tasks(templates_dir: os.PathLike, data_root: os.PathLike | None = None) -> list[PromptsourceTask]:
  """One task per `original_task` template of each held-out dataset (ANLI once per round)."""
  out = []
  for spec in catalog.HELD_OUT_DATASETS:
    loaded = templates_lib.load_dataset_templates(templates_dir, spec.name, spec.subset)
    for template in templates_lib.original_task_templates(loaded):
      if template.answer_choices is None:
        raise templates_lib.TemplateError(f"{template.where}: a held-out template without answer_choices "
                                          "cannot be rank-classified")
      out.append(PromptsourceTask(spec, template, data_root))
  return out


def bigbench_target_tasks(store: bigbench.BigBenchStore) -> list[BigBenchTask]:
  missing = [t for t in catalog.BIGBENCH_TARGETS if t not in store.index or not store.index[t]["multiple_choice"]]
  if missing:
    raise ValueError(f"BIG-bench store {store.folder} lacks multiple-choice task(s) {missing}")
  return [BigBenchTask(store, t, eval_split="all") for t in catalog.BIGBENCH_TARGETS]


def bigbench_source_tasks(store: bigbench.BigBenchStore) -> list[BigBenchTask]:
  """Every other multiple-choice JSON task (a complete offline source set)."""
  return [BigBenchTask(store, t, eval_split="validation") for t in store.task_names()
          if t not in catalog.BIGBENCH_TARGETS]


def split_counts(task: PromptedTask, splits: Sequence[str] | None = None) -> dict[str, int | None]:
  """Examples on disk per split (before rendering); None where a split is not on disk."""
  return {split: task.count(split) for split in splits or task.splits}

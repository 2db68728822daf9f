"""Task families, registered: where each family's source and target tasks come from, what their names
begin with, whether the family can be read here, and its SeqIO mixtures.

A family is one `TaskFamily`, added by `register(TaskFamily(...))`. The SeqIO registry
(`rospr_tasks.registry`: tasks, mixtures, STATUS) and `rospr evaluate`'s TARGETS
(`rospr_jax/commands/targets.py`: groups, a task name's family) read the families through this
registry only, so a new family is one module that registers itself. The built-in ones, in order: the
generated family (no data needed), promptsource's (T0's sources and the held-out targets) and
BIG-bench's (a configured source). `tests/tasks/family_registry_test.py` registers a throwaway family.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from rospr_jax.data import archives, bigbench, bigbench_sources, catalog, generated, prompted
from rospr_jax.registry import Registry

# rates(source tasks) -> [(task name, mixture rate)] of the family's source mixture (a task left out
# of it is not listed).
Rates = Callable[[Sequence[prompted.PromptedTask]], list[tuple[str, float]]]


@dataclasses.dataclass(frozen=True)
class TaskFamily:
  """One family of prompted tasks.

  Attributes:
    name: the part `rospr tasks` reports registered or not (`rospr_tasks.registry.STATUS`).
    group: its group of `rospr evaluate`'s TARGETS ("held_out": every held-out target it has).
    prefix: its task names begin with it; "" for the family of every other name (matched last).
    check: raises FileNotFoundError saying how to provide the family's data when it is not set up;
      its sources and targets are read only after it passes.
    sources: () -> its source tasks (those prompts are trained for).
    targets: (DATA_DIR or None) -> its held-out target tasks.
    source_rates: `Rates` of its source mixture.
    source_mixture, target_mixture: the names of its SeqIO mixtures (targets: their `_score_eval`
      tasks, each at rate 1).
    paper_targets: its targets belong to the paper's table (`rospr_targets_score_eval`, registered
      when every such family is).
    targets_hint: the message when TARGETS names its tasks and its data is missing, `{error}` standing
      for the FileNotFoundError's (None: that error as it is).
  """
  name: str
  group: str
  prefix: str
  check: Callable[[], None]
  sources: Callable[[], list]
  targets: Callable[[str | None], list]
  source_rates: Rates
  source_mixture: str
  target_mixture: str
  paper_targets: bool = False
  targets_hint: str | None = None


FAMILIES = Registry("task family", ("name", "group", "prefix"))  # in registration order


def register(family: TaskFamily) -> TaskFamily:
  """Adds a family; its name, group and prefix must be new."""
  return FAMILIES.add(family)


def groups() -> tuple[str, ...]:
  """The TARGETS groups, one per family."""
  return tuple(f.group for f in FAMILIES.values())


def of_group(group: str) -> TaskFamily:
  (family,) = [f for f in FAMILIES.values() if f.group == group]
  return family


def of_task(task_name: str) -> TaskFamily:
  """The family a task name belongs to: the one with the longest prefix it begins with."""
  matching = [f for f in FAMILIES.values() if task_name.startswith(f.prefix)]
  if not matching:
    raise ValueError(f"No task family has tasks named like {task_name!r}; families: {list(FAMILIES)}.")
  return max(matching, key=lambda f: len(f.prefix))


def _same_rate(tasks: Sequence[prompted.PromptedTask]) -> list[tuple[str, float]]:
  return [(t.name, 1.0) for t in tasks]


def _t0_rates(tasks: Sequence[prompted.PromptedTask]) -> list[tuple[str, float]]:
  """T0's caps: a dataset's examples (at most 500,000) shared by its templates; gigaword left out."""
  per_dataset: dict = {}
  for task in tasks:
    per_dataset[task.spec.key] = per_dataset.get(task.spec.key, 0) + 1
  return [(task.name, float(task.spec.mixture_cap(per_dataset[task.spec.key]))) for task in tasks
          if task.name not in catalog.T0_MIXTURE_EXCLUDED_TASKS]


def _bigbench_rates(tasks: Sequence[prompted.PromptedTask]) -> list[tuple[str, float]]:
  """A BIG-bench source's train split (its examples less the validation split, at most the cap); a
  task with none is left out."""
  rates = []
  for task in tasks:
    n = task.num_examples()
    rates.append((task.name, float(min(n - max(int(0.2 * n), bigbench.MIN_VALIDATION_EXAMPLES),
                                       catalog.MAX_EXAMPLES_PER_DATASET))))
  return [(name, rate) for name, rate in rates if rate > 0]


def _check_bigbench() -> None:
  if not bigbench_sources.bigbench_configured():
    raise FileNotFoundError(bigbench_sources.NOT_CONFIGURED)


def bigbench_family(store: bigbench.BigBenchStore | None = None) -> TaskFamily:
  """BIG-bench's family, read from `store` (None: the configured store, `$ROSPR_CACHE/bigbench/`)."""
  def store_() -> bigbench.BigBenchStore:
    return store or bigbench.BigBenchStore()

  return TaskFamily(
      name="bigbench", group="bigbench", prefix="bigbench_", check=_check_bigbench,
      sources=lambda: prompted.bigbench_source_tasks(store_()),
      targets=lambda data_dir: prompted.bigbench_target_tasks(store_()), source_rates=_bigbench_rates,
      source_mixture="rospr_bigbench_sources", target_mixture="rospr_bigbench_targets_score_eval",
      paper_targets=True,
      targets_hint="TARGETS names BIG-bench tasks: {error}; or leave them out of TARGETS "
                   "(eval/held_out_targets.gin).")


GENERATED = register(TaskFamily(
    name="generated", group="generated", prefix=generated.GROUP + "_", check=lambda: None,
    sources=lambda: [generated.GeneratedTask(t) for t in generated.source_templates()],
    targets=lambda data_dir: generated.target_tasks(), source_rates=_same_rate,
    source_mixture="rospr_generated_sources", target_mixture="rospr_generated_targets_score_eval"))
PROMPTSOURCE = register(TaskFamily(
    name="promptsource", group="held_out", prefix="", check=lambda: None,
    sources=lambda: prompted.t0_source_tasks(archives.promptsource_templates_dir()),
    targets=lambda data_dir: prompted.held_out_target_tasks(archives.promptsource_templates_dir(), data_dir),
    source_rates=_t0_rates, source_mixture="rospr_t0_train", target_mixture="rospr_held_out_score_eval",
    paper_targets=True))
BIGBENCH = register(bigbench_family())

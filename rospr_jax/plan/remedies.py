"""When a step does not fit: the obvious remedies, tried in order, each compiled like the step itself.

For the step that does not fit, alone: more model partitions (NUM_PARTITIONS doubled up to 8, where it
divides the devices, heads, feed-forward width and vocabulary), then for training a stronger remat
policy ('minimal', then 'full'), then half the batch (down to one row per data-parallel device, at
most three halvings). The first that fits is the answer; each try is one compile (minutes at T0's
shapes).
"""

from __future__ import annotations

import dataclasses

from rospr_jax.model import T5Config
from rospr_jax.model import partitioning
from rospr_jax.plan import planner, report, steps
from rospr_jax.plan.targets import Target

REMAT_ORDER = ("none", "minimal", "full")
MAX_PARTITIONS = 8
MAX_HALVINGS = 3


@dataclasses.dataclass(frozen=True)
class Remedy:
  """A change that makes a step fit: the macro, its value, and the step's cost with it."""
  macro: str
  value: object
  cost: report.StepCost

  def describe(self) -> str:
    value = f"'{self.value}'" if isinstance(self.value, str) else self.value
    return f"{self.macro} {value} fits ({report.size(self.cost.total)} per device)"


def _candidates(config: T5Config, target: Target, partitioner: partitioning.Partitioner, train, scoring):
  """(macro, value, plan keyword arguments) in the order they are tried."""
  num_partitions = partitioner.num_partitions
  partitions = num_partitions * 2
  while partitions <= MAX_PARTITIONS:
    more = dataclasses.replace(partitioner, num_partitions=partitions)
    try:
      more.for_devices(target.devices).check(config)
    except ValueError:
      break
    yield "NUM_PARTITIONS", partitions, {"partitioner": more, "train": train, "scoring": scoring}
    partitions *= 2
  if train is not None and train.remat_policy in REMAT_ORDER:
    for policy in REMAT_ORDER[REMAT_ORDER.index(train.remat_policy) + 1:]:
      yield "REMAT_POLICY", policy, {"partitioner": partitioner,
                                     "train": dataclasses.replace(train, remat_policy=policy)}
  data = len(target.devices) // num_partitions
  shapes = train.shapes if train is not None else scoring
  batch = shapes.batch_size // 2
  for _ in range(MAX_HALVINGS):
    if batch < data or batch % data:
      break
    halved = dataclasses.replace(shapes, batch_size=batch)
    yield "BATCH_SIZE", batch, ({"partitioner": partitioner, "train": dataclasses.replace(train, shapes=halved)}
                                if train is not None else {"partitioner": partitioner, "scoring": halved})
    batch //= 2


def find_remedy(config: T5Config, target: Target, cost: report.StepCost, *, partitioner: partitioning.Partitioner,
                train: planner.TrainSettings | None, scoring: steps.ScoringShapes | None) -> Remedy | None:
  """The first remedy that makes the step of `cost` (a training or scoring step that does not fit)
  fit, or None."""
  if cost.step not in ("train", "scoring"):
    return None
  train = train if cost.step == "train" else None
  scoring = scoring if cost.step == "scoring" else None
  for macro, value, kwargs in _candidates(config, target, partitioner, train, scoring):
    tried, = planner.plan(config, target, **kwargs)
    if tried.fits:
      return Remedy(macro, value, tried)
  return None

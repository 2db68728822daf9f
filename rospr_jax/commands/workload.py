"""How much an evaluation scores: the rows of the configured TARGETS, for the plan's projected hours.

A scoring row holds one example's input and up to 2 of its answer choices at T0's largest bucket
(`batching.choices_per_row` with 256-token choices), so an example of C choices takes ceil(C / 2) rows.
Counts come, per target group, from:

- `held_out`: the stated table below (no data needed): the validation split of each of T0's 11
  held-out datasets, as the Hugging Face datasets publish it, times its original-task templates in
  promptsource 0.2.3 (what `rospr evaluate` scores), capped by MAX_EXAMPLES per (dataset, template);
- `generated`: the project's generated targets, counted in-process;
- `bigbench`: the configured BIG-bench store's tasks, when one is configured (else not counted, said).

A task name counts as its group's entry. The plan's largest-bucket step is an upper bound per row:
most inputs are shorter than 1,024 tokens and fall in smaller buckets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

# Held-out dataset (task name prefix): (validation examples, original-task templates, answer choices).
HELD_OUT = {
    "super_glue_rte": (277, 10, 2), "super_glue_cb": (56, 15, 3), "anli_r1": (1000, 15, 3),
    "anli_r2": (1000, 15, 3), "anli_r3": (1200, 15, 3), "super_glue_copa": (100, 12, 2),
    "hellaswag": (10042, 4, 4), "story_cloze_2016": (1871, 5, 2), "winogrande_winogrande_xl": (1267, 5, 2),
    "super_glue_wsc.fixed": (104, 10, 2), "super_glue_wic": (638, 10, 2),
}


@dataclasses.dataclass(frozen=True)
class Workload:
  """Scoring rows and examples of the configured targets, and how they were counted."""
  rows: int
  examples: int
  how: str

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def scoring_rows(examples: int, choices: int) -> int:
  """Scoring rows of `examples` examples of `choices` answer choices each, at T0's largest bucket."""
  from rospr_jax.eval import batching  # pylint: disable=g-import-not-at-top
  per_row = batching.choices_per_row(choices, batching.T0_TARGET_LENGTH, batching.DEFAULT_MAX_DECODER_TOKENS)
  return examples * math.ceil(choices / per_row)


def _held_out(names: Sequence[str] | None, max_examples: int | None) -> tuple[int, int]:
  rows = examples = 0
  for name, (count, templates, choices) in HELD_OUT.items():
    if names is not None and not any(n.startswith(name) for n in names):
      continue
    per_template = count if max_examples is None else min(count, max_examples)
    per_target = templates if names is None else sum(n.startswith(name) for n in names)
    examples += per_template * per_target
    rows += scoring_rows(per_template, choices) * per_target
  return rows, examples


def _counted(tasks, max_examples: int | None) -> tuple[int, int]:
  rows = examples = 0
  for task in tasks:
    kept = 0
    for ex in task.examples(task.eval_split):
      if max_examples is not None and kept >= max_examples:
        break
      if ex.answer_choices:
        kept += 1
        rows += scoring_rows(1, len(ex.answer_choices))
    examples += kept
  return rows, examples


def evaluation_workload(targets: Sequence[str] | None, *, max_examples: int | None = None) -> Workload:
  """The rows and examples of `targets` (TARGETS: groups and task names); what was not counted is said."""
  rows = examples = 0
  how, missing = [], []
  targets = list(targets or [])
  named = [t for t in targets if t not in ("held_out", "generated", "bigbench")]
  if "held_out" in targets or any(not t.startswith(("generated_", "bigbench_")) for t in named):
    names = None if "held_out" in targets else [t for t in named if not t.startswith(("generated_", "bigbench_"))]
    r, e = _held_out(names, max_examples)
    rows, examples = rows + r, examples + e
    how.append("held_out: the published validation sizes x promptsource 0.2.3's original-task templates")
  if "generated" in targets or any(t.startswith("generated_") for t in named):
    from rospr_jax.data import generated  # pylint: disable=g-import-not-at-top
    tasks = [t for t in generated.target_tasks() if "generated" in targets or t.name in named]
    r, e = _counted(tasks, max_examples)
    rows, examples = rows + r, examples + e
    how.append("generated: counted")
  if "bigbench" in targets or any(t.startswith("bigbench_") for t in named):
    try:
      from rospr_jax.data import bigbench, prompted  # pylint: disable=g-import-not-at-top
      tasks = [t for t in prompted.bigbench_target_tasks(bigbench.BigBenchStore())
               if "bigbench" in targets or t.name in named]
      r, e = _counted(tasks, max_examples)
      rows, examples = rows + r, examples + e
      how.append("bigbench: counted in the BIG-bench store")
    except (OSError, ValueError):  # no store configured: said, not guessed
      missing.append("bigbench not counted (no BIG-bench source configured here; --eval_examples gives a count)")
  text = "; ".join(how + missing) or "no targets"
  if max_examples is not None:
    text += f"; MAX_EXAMPLES {max_examples} per target"
  return Workload(rows=rows, examples=examples, how=text)

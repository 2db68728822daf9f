"""Rank-classification rows in plain Python (no TensorFlow): T0's zero-shot evaluation input.

Each example becomes C rows, one per answer choice; a row carries `idx` = [example, choice], whether
that choice is correct, and the example's weight. The metric over scored rows is
`rospr_jax.eval.metrics` (compute side, no data imports).

Shapes: C choices of one example.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class ChoiceRow:
  """One (example, choice) pair."""

  inputs: str
  targets: str
  idx: tuple[int, int]
  is_correct: bool
  weight: float = 1.0


def correct_choices(choices: Sequence[str], target: str) -> list[bool]:
  """[C] flags: the choices equal to the stripped target (T0's `is_correct`)."""
  target = target.strip()
  return [choice == target for choice in choices]


def expand_choices(example_index: int, inputs: str, choices: Sequence[str], is_correct: Sequence[bool],
                   weight: float = 1.0) -> list[ChoiceRow]:
  """One row per choice: idx = [example_index, c] for c in 0..C-1.

  Raises:
    ValueError: no choices, or `is_correct` of another length; names the example.
  """
  if not choices:
    raise ValueError(f"example {example_index} has no answer choices; rank classification needs at least one")
  if len(is_correct) != len(choices):
    raise ValueError(f"example {example_index}: {len(choices)} choices but {len(is_correct)} is_correct flags")
  return [ChoiceRow(inputs, choice, (int(example_index), c), bool(ok), float(weight))
          for c, (choice, ok) in enumerate(zip(choices, is_correct))]

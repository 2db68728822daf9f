"""Rank classification in plain Python and numpy (no TensorFlow): T0's zero-shot evaluation.

Each example becomes C rows, one per answer choice; a row carries `idx` = [example, choice], whether
that choice is correct, and the example's weight. A model scores every row (sum of the choice's token
log-probabilities); the prediction for an example is its highest-scoring row (the first on a tie) and
the example counts as right when that row is a correct choice. Accuracy is the weighted mean over
examples. Results over templates are summarized per dataset by the mean and the median, and over
datasets by the average of those.

Shapes: N rows, E examples, C choices of one example.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Mapping, Sequence

import numpy as np


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


@dataclasses.dataclass(frozen=True)
class Grouped:
  """Per-example results.

  Attributes:
    example: [E] example ids, sorted.
    prediction: [E] index of the chosen choice.
    correct: [E] whether the chosen choice is correct.
    weight: [E] example weights.
    num_choices: [E] rows seen per example.
  """

  example: np.ndarray
  prediction: np.ndarray
  correct: np.ndarray
  weight: np.ndarray
  num_choices: np.ndarray


def group(idx, scores, is_correct, weight=None) -> Grouped:
  """Groups scored rows by example.

  Args:
    idx: [N, 2] (example, choice) per row.
    scores: [N] score of each row.
    is_correct: [N] bool.
    weight: [N] example weight repeated on each row (default 1).

  Raises:
    ValueError: mismatched lengths, a repeated (example, choice) pair, or rows of one example with
      different weights; the message names the example.
  """
  idx = np.asarray(idx, dtype=np.int64).reshape(-1, 2)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  is_correct = np.asarray(is_correct, dtype=bool).reshape(-1)
  weight = np.ones_like(scores) if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
  n = idx.shape[0]
  if not scores.shape[0] == is_correct.shape[0] == weight.shape[0] == n:
    raise ValueError(f"rank classification rows disagree in length: idx {n}, scores {scores.shape[0]}, "
                     f"is_correct {is_correct.shape[0]}, weight {weight.shape[0]}")
  if n == 0:
    empty = np.zeros((0,), np.int64)
    return Grouped(empty, empty, np.zeros((0,), bool), np.zeros((0,)), empty)
  order = np.lexsort((idx[:, 1], idx[:, 0]))  # by example, then choice
  idx, scores, is_correct, weight = idx[order], scores[order], is_correct[order], weight[order]
  same = (idx[1:] == idx[:-1]).all(axis=1)
  if same.any():
    e, c = idx[1:][same][0]
    raise ValueError(f"rank classification: example {e} choice {c} was scored twice (idx must be unique)")
  starts = np.flatnonzero(np.r_[True, idx[1:, 0] != idx[:-1, 0]])
  ends = np.r_[starts[1:], n]
  example = idx[starts, 0]
  prediction = np.empty(len(starts), np.int64)
  correct = np.empty(len(starts), bool)
  ex_weight = np.empty(len(starts))
  for k, (s, t) in enumerate(zip(starts, ends)):
    if not np.all(weight[s:t] == weight[s]):
      raise ValueError(f"rank classification: rows of example {example[k]} have different weights "
                       f"{sorted(set(weight[s:t].tolist()))}")
    best = s + int(np.argmax(scores[s:t]))
    prediction[k] = idx[best, 1]
    correct[k] = is_correct[best]
    ex_weight[k] = weight[s]
  return Grouped(example, prediction, correct, ex_weight, ends - starts)


def accuracy(idx, scores, is_correct, weight=None) -> float:
  """Weighted fraction of examples whose best-scoring choice is correct (NaN with no examples)."""
  g = group(idx, scores, is_correct, weight)
  if g.example.size == 0 or g.weight.sum() == 0:
    return float("nan")
  return float((g.correct * g.weight).sum() / g.weight.sum())


def aggregate(results: Mapping[str, Mapping[str, float]]) -> dict:
  """Summarizes accuracy per (dataset, template) as T0 reports it.

  Args:
    results: {dataset: {template: accuracy}}.

  Returns:
    {"datasets": {dataset: {"mean", "median", "min", "max", "templates"}},
     "average_mean": mean over datasets of the per-dataset mean,
     "average_median": mean over datasets of the per-dataset median}.

  Raises:
    ValueError: a dataset without templates.
  """
  per = {}
  for dataset, by_template in results.items():
    values = list(by_template.values())
    if not values:
      raise ValueError(f"dataset {dataset!r} has no template results to aggregate")
    per[dataset] = {"mean": float(statistics.fmean(values)), "median": float(statistics.median(values)),
                    "min": float(min(values)), "max": float(max(values)), "templates": len(values)}
  out = {"datasets": per}
  if per:
    out["average_mean"] = float(statistics.fmean(d["mean"] for d in per.values()))
    out["average_median"] = float(statistics.fmean(d["median"] for d in per.values()))
  return out

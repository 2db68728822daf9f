"""T0's rank-classification metric in numpy: per-example predictions, accuracy, and the summary over
templates and datasets.

A model scores every (example, choice) row (sum of the choice's token log-probabilities); the
prediction for an example is its highest-scoring row (the first on a tie) and the example counts as
right when that row is a correct choice. Accuracy is the weighted mean over examples. Results over
templates are summarized per dataset by the mean and the median, and over datasets by the average of
those.

Shapes: R rows (example, choice pairs), E examples.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Mapping, Sequence

import numpy as np

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
    idx: [R, 2] (example, choice) per row.
    scores: [R] score of each row.
    is_correct: [R] bool.
    weight: [R] example weight repeated on each row (default 1).

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


def accuracy_of(scores: Sequence[np.ndarray], is_correct: Sequence[Sequence[bool]],
                what: str = "the scores") -> float:
  """T0's rank-classification accuracy from per-example choice scores [C_e].

  A score that is NaN or infinite is refused (argmax would silently pick choice 0), naming `what` and
  the first such example.
  """
  bad = [e for e, s in enumerate(scores) if not np.all(np.isfinite(np.asarray(s, np.float64)))]
  if bad:
    raise FloatingPointError(
        f"{what}: {len(bad)} of {len(scores)} examples have NaN or infinite choice scores (first: "
        f"example {bad[0]}); the backbone's weights or the prompt are not finite.")
  idx = [(e, c) for e, s in enumerate(scores) for c in range(len(s))]
  flat_scores = np.concatenate([np.asarray(s, np.float64) for s in scores])
  flat_correct = [flag for flags in is_correct for flag in flags]
  return accuracy(idx, flat_scores, flat_correct)


def chance_accuracy(is_correct: Sequence[Sequence[bool]]) -> float:
  """Expected accuracy of picking a choice uniformly at random: mean over examples of correct / C."""
  return float(np.mean([sum(flags) / len(flags) for flags in is_correct]))


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


def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion `successes` / `n` (95% by default); (nan, nan)
  for n = 0. What a reader needs to tell a difference from noise on n examples."""
  if n <= 0:
    return float("nan"), float("nan")
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)

"""T0's rank-classification metric: grouping, accuracy and aggregation.

References: hand-computed cases, and the old `t5` package's `rank_classification` metric read from its
wheel in the cache (never installed: its dependencies would not install beside this stack).
"""

from __future__ import annotations

import ast
import itertools
import typing
import zipfile

import numpy as np
import pytest

from rospr_jax.data import archives
from rospr_jax.eval import metrics


@pytest.fixture(scope="module")
def t5_rank_classification():
  path = archives.archive_path(archives.T5_WHEEL)
  if not path.exists():
    pytest.fail(f"{path} is missing; run `rospr fetch`", pytrace=False)
  with zipfile.ZipFile(path) as zf:
    source = zf.read("t5/evaluation/metrics.py").decode()
  (fn,) = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "rank_classification"]
  namespace = {"np": np, "itertools": itertools, **{k: getattr(typing, k) for k in typing.__all__}}
  exec(compile(ast.Module(body=[fn], type_ignores=[]), "t5/evaluation/metrics.py", "exec"), namespace)  # pylint: disable=exec-used
  return namespace["rank_classification"]


def test_hand_computed_accuracy():
  # example 10: choices 0,1,2 -> best is 1 (correct); example 3: best 0 (wrong);
  # example 5: tie between 0 and 1 -> the first (0), which is correct. Rows arrive shuffled.
  idx = [(10, 2), (3, 1), (10, 0), (5, 1), (3, 0), (10, 1), (5, 0)]
  scores = [-5.0, -2.0, -3.0, -1.0, -1.5, -0.5, -1.0]
  correct = [False, True, False, False, False, True, True]
  g = metrics.group(idx, scores, correct)
  assert g.example.tolist() == [3, 5, 10] and g.prediction.tolist() == [0, 0, 1]
  assert g.correct.tolist() == [False, True, True] and g.num_choices.tolist() == [2, 2, 3]
  assert metrics.accuracy(idx, scores, correct) == pytest.approx(2 / 3)
  weights = [1.0, 3.0, 1.0, 1.0, 3.0, 1.0, 1.0]  # example 3 weighs 3: accuracy (0*3 + 1 + 1) / 5
  assert metrics.accuracy(idx, scores, correct, weights) == pytest.approx(2 / 5)
  assert np.isnan(metrics.accuracy(np.zeros((0, 2)), [], []))


def test_bad_rows():
  with pytest.raises(ValueError, match="example 1 choice 0 was scored twice"):
    metrics.group([(1, 0), (1, 0)], [0.0, 1.0], [True, False])
  with pytest.raises(ValueError, match="rows of example 2 have different weights"):
    metrics.group([(2, 0), (2, 1)], [0.0, 1.0], [True, False], [1.0, 2.0])
  with pytest.raises(ValueError, match="disagree in length"):
    metrics.group([(2, 0)], [0.0, 1.0], [True])


def test_matches_t5_metric_on_random_scores(t5_rank_classification):
  rng = np.random.default_rng(0)
  for trial in range(20):
    targets, scores, idx, correct, weights = [], [], [], [], []
    for e in rng.permutation(200)[:60]:
      num = int(rng.integers(2, 6))
      good = set(rng.choice(num, size=int(rng.integers(0, 3)), replace=False).tolist())
      w = float(rng.choice([1.0, 0.5, 2.0]))
      for c in range(num):
        targets.append(((int(e), c), c in good, w, 3))
        idx.append((int(e), c))
        correct.append(c in good)
        weights.append(w)
        scores.append(float(rng.normal()) if trial % 2 else float(rng.integers(-3, 0)))  # odd: ties
    expected = t5_rank_classification(targets, scores)["accuracy"] / 100
    assert metrics.accuracy(idx, scores, correct, weights) == pytest.approx(expected, abs=1e-12)


def test_aggregate_hand_computed():
  out = metrics.aggregate({"rte": {"a": 0.5, "b": 0.7, "c": 0.9}, "cb": {"x": 0.2, "y": 0.4}})
  assert out["datasets"]["rte"] == {"mean": pytest.approx(0.7), "median": 0.7, "min": 0.5, "max": 0.9, "templates": 3}
  assert out["datasets"]["cb"]["median"] == pytest.approx(0.3)
  assert out["average_mean"] == pytest.approx((0.7 + 0.3) / 2)
  assert out["average_median"] == pytest.approx((0.7 + 0.3) / 2)
  with pytest.raises(ValueError, match="dataset 'wic' has no template results"):
    metrics.aggregate({"wic": {}})

"""Rank classification for SeqIO (SeqIO has none): expansion preprocessor, postprocessor and metric.

An example `{inputs, targets, idx, answer_choices [C], is_correct [C]}` becomes C rows
`{inputs, targets = choice c, idx = [idx, c], is_correct, weight}`. `idx` comes from the data source
(the example's position in its split, fixed before SeqIO shards), so rows are unique across hosts.
The metric groups the scored rows by example with `rospr_jax.data.rank_classification` (no TensorFlow
there, so the evaluator shares it) and reports accuracy in percent, as T5's metrics do.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from rospr_jax.eval import metrics


def rank_classification(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Expands each example into one row per answer choice.

  Args:
    dataset: examples with `inputs` [], `targets` [], `idx` [] int64, `answer_choices` [C] string,
      `is_correct` [C] bool.

  Returns:
    Rows with `inputs` [], `targets` [] (the choice), `idx` [2] int64, `is_correct` [] bool,
    `weight` [] float32. An example with no choices gives no rows (the data source counts it).
  """

  def expand(ex: Mapping[str, tf.Tensor]) -> tf.data.Dataset:
    n = tf.shape(ex["answer_choices"])[0]
    return tf.data.Dataset.from_tensor_slices({
        "inputs": tf.fill([n], ex["inputs"]),
        "targets": ex["answer_choices"],
        "idx": tf.stack([tf.fill([n], tf.cast(ex["idx"], tf.int64)), tf.range(n, dtype=tf.int64)], axis=1),
        "is_correct": ex["is_correct"],
        "weight": tf.ones([n], tf.float32),
    })

  return dataset.flat_map(expand)


def rank_classification_postprocessor(output: Any, example: Mapping[str, Any] | None = None,
                                      is_target: bool = False) -> Any:
  """Targets become (example, choice, is_correct, weight); model scores pass through."""
  if not is_target:
    return output
  idx = np.asarray(example["idx"]).reshape(-1)
  return (int(idx[0]), int(idx[1]), bool(example["is_correct"]), float(example.get("weight", 1.0)))


def rank_classification_metric(targets: Sequence[tuple], scores: Sequence[float]) -> dict[str, float]:
  """Accuracy (percent) of the best-scoring choice per example.

  Args:
    targets: [N] tuples from `rank_classification_postprocessor`.
    scores: [N] model scores of the rows (sum of target token log-probabilities).
  """
  if len(targets) != len(scores):
    raise ValueError(f"rank classification: {len(targets)} targets but {len(scores)} scores")
  t = np.asarray([tuple(x) for x in targets], dtype=np.float64).reshape(-1, 4)
  acc = metrics.accuracy(t[:, :2].astype(np.int64), np.asarray(scores).reshape(-1), t[:, 2] > 0.5, t[:, 3])
  return {"accuracy": 100.0 * acc}

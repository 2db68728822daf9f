"""Rank classification through `seqio.Evaluator`, scored by the encode-once scorer.

SeqIO's Evaluator gives a score function the task's rows after the feature converter: one row per
(example, choice), every feature padded to one fixed length, enumerated as (row index, features). The
score function made here groups the rows by example (`idx[0]`), so each input is encoded once and all
its choices are decoded together by `rospr_jax.eval.batching.score_examples` (the project's one
scorer), and answers SeqIO with one score per row, `[(row index, summed log-likelihood)]`. The tasks'
own metric (`rospr_tasks.preprocessors.rank_classification_metric`) then gives the accuracy.

The rows must keep `idx`, which SeqIO's encoder-decoder converter drops; `RankFeatureConverter` keeps
it and leaves the tokens as the tasks made them (inputs without EOS, targets with EOS):

    evaluator = seqio.Evaluator("super_glue_rte_GPT_3_style_score_eval", RankFeatureConverter(),
                                eval_split="validation")
    metrics, _ = evaluator.evaluate(compute_metrics=True, score_fn=make_score_fn(params, model))

`evaluate_task_with_seqio` does this for a task or mixture, each task on its own evaluation split.
This module is the SeqIO side of evaluation; the scorer it calls takes arrays only.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf

from rospr_jax.data import catalog
from rospr_jax.eval.batching import (T0_INPUT_LENGTH, T0_TARGET_LENGTH, RankExample, length_bucket,
                                     score_examples)
from rospr_jax.model import PromptedBackbone
from rospr_jax.tokenization import check_same_vocabulary

ScoreFn = Callable[..., list[tuple[int, float]]]

IDX_FEATURE = "idx"
# T0's evaluation lengths, which `rospr evaluate` uses too (rospr_jax.eval.batching).
T0_SEQUENCE_LENGTH = {"inputs": T0_INPUT_LENGTH, "targets": T0_TARGET_LENGTH}


class RankFeatureConverter(seqio.EncDecFeatureConverter):
  """SeqIO's encoder-decoder converter (never packed) that also keeps each row's `idx` [2].

  Model features: `encoder_input_tokens` [T], `decoder_target_tokens` [L], `decoder_input_tokens` [L],
  `decoder_loss_weights` [L], and `idx` [2] int64 = (example, choice). Tokens are only padded (or
  trimmed to the evaluator's sequence lengths); no EOS is added or removed.
  """

  MODEL_FEATURES = {
      **seqio.EncDecFeatureConverter.MODEL_FEATURES,
      IDX_FEATURE: seqio.FeatureConverter.FeatureSpec(dtype=tf.int64),
  }

  def __init__(self, **kwargs):
    super().__init__(pack=False, **kwargs)

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    spec = ds.element_spec.get(IDX_FEATURE)
    if spec is None or spec.shape.as_list() != [2]:
      raise ValueError(f"RankFeatureConverter needs rank-classification rows with `{IDX_FEATURE}` [2] = "
                       f"(example, choice) (the rospr *_score_eval tasks have it); got features "
                       f"{sorted(ds.element_spec)} with {IDX_FEATURE} {spec}")
    return super()._convert_features(ds, task_feature_lengths)

  def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
    out = dict(super()._convert_example(features))
    out[IDX_FEATURE] = tf.cast(features[IDX_FEATURE], tf.int64)
    return out

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
    lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
    lengths[IDX_FEATURE] = 2
    return lengths


def rows_to_examples(idx: np.ndarray, inputs: np.ndarray,
                     targets: np.ndarray) -> tuple[list[RankExample], list[tuple[int, int]]]:
  """Groups padded rows into examples (input once, choices in choice order).

  Args:
    idx: [N, 2] (example, choice) per row.
    inputs: [N, T] input ids, 0-padded, the same for every row of an example.
    targets: [N, L] choice ids with EOS, 0-padded.

  Returns:
    (examples in order of first appearance, [N] (example position, choice position) of each row).

  Raises:
    ValueError: a repeated (example, choice) pair, or rows of one example with different inputs;
      the message names the example.
  """
  members: dict[int, list[int]] = collections.defaultdict(list)
  for row, (example, _) in enumerate(idx.tolist()):
    members[example].append(row)
  examples, slots = [], [(-1, -1)] * len(idx)
  for k, (example, rows) in enumerate(members.items()):
    rows.sort(key=lambda r: idx[r, 1])
    choice_ids = [int(idx[r, 1]) for r in rows]
    if len(set(choice_ids)) != len(choice_ids):
      raise ValueError(f"rank classification: example {example} has repeated choice rows {choice_ids} "
                       "(idx must be unique)")
    if any(not np.array_equal(inputs[r], inputs[rows[0]]) for r in rows):
      raise ValueError(f"rank classification: the rows of example {example} have different inputs; "
                       "every choice of an example must share its input")
    examples.append(RankExample(inputs=np.trim_zeros(inputs[rows[0]], "b").tolist(),
                                choices=[np.trim_zeros(targets[r], "b").tolist() for r in rows]))
    for position, r in enumerate(rows):
      slots[r] = (k, position)
  return examples, slots


def make_score_fn(params, model: PromptedBackbone, prompt: jax.Array | np.ndarray | None = None, *,
                  batch_size: int = 32, partitioner=None,
                  progress: str | None = None) -> ScoreFn:
  """A `score_fn` for `seqio.Evaluator.evaluate` over `RankFeatureConverter` rows.

  Args:
    params: model parameters (placed by `partitioner` when one is given).
    model: the backbone (`PromptedBackbone`, e.g. `Backbone.model`).
    prompt: None (hard prompt alone) or a soft prompt [P, H] prepended to every input.
    batch_size: examples (not rows) per scorer batch; a multiple of the mesh's `data` axis.
    partitioner: an optional `rospr_jax.model.partitioning.Partitioner` (its data x model mesh).
    progress: a progress-bar description, or None.

  Returns:
    score_fn(dataset, model_feature_shapes=None) -> [(row index, score)] with one entry per row of the
    enumerated dataset; score = sum of the choice's token log-probabilities given the input.
  """
  if prompt is not None and np.ndim(prompt) != 2:
    raise ValueError(f"make_score_fn: prompt must be [P, H], got shape {np.shape(prompt)}")

  def score_fn(dataset: tf.data.Dataset, model_feature_shapes: Mapping[str, Any] | None = None):
    del model_feature_shapes  # the rows' padded lengths are read from the rows themselves
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and IDX_FEATURE in spec[1]):
      raise ValueError(f"score_fn expects SeqIO's enumerated rows (index, features) with an `{IDX_FEATURE}` "
                       f"feature; got {spec}. Build the seqio.Evaluator with RankFeatureConverter().")
    positions, idx, inputs, targets = [], [], [], []
    for position, row in dataset.as_numpy_iterator():
      positions.append(int(position))
      idx.append(row[IDX_FEATURE])
      inputs.append(row["encoder_input_tokens"])
      targets.append(row["decoder_target_tokens"])
    if not positions:
      return []
    inputs, targets = np.stack(inputs), np.stack(targets)  # [N, T], [N, L]
    examples, slots = rows_to_examples(np.stack(idx).reshape(-1, 2), inputs, targets)
    # SeqIO already trimmed to its sequence lengths: limits at or above them (the scorer's own length
    # buckets, so the shapes are those of any other caller) trim nothing further.
    scores = score_examples(params, model, examples, prompts=prompt, batch_size=batch_size,
                            max_input_length=length_bucket(inputs.shape[1]),
                            max_target_length=length_bucket(targets.shape[1]),
                            partitioner=partitioner, progress=progress)
    return [(p, float(scores[k][c])) for p, (k, c) in zip(positions, slots)]

  return score_fn


def _prompted_task(task_name: str):
  """The rospr_jax.data.prompted task behind a registered rospr SeqIO task, or None."""
  from rospr_tasks import registry  # pylint: disable=g-import-not-at-top  (registers on import)
  base = task_name.removesuffix(catalog.SCORE_EVAL_SUFFIX)
  return registry.TARGETS.get(base) or registry.SOURCES.get(base)


def _num_rows(task_name: str, split: str, max_examples: int) -> int:
  """Rows (choices) of the first `max_examples` examples of a rospr task's split."""
  task = _prompted_task(task_name)
  if task is None:
    raise ValueError(f"max_examples needs a rospr task; {task_name!r} is not one")
  rows = 0
  for count, example in enumerate(task.examples(split)):
    if count == max_examples:
      break
    rows += len(example.answer_choices or ())
  return rows


def evaluate_task_with_seqio(task_name: str, params, model: PromptedBackbone, *, vocabulary: str,
                             prompt: jax.Array | np.ndarray | None = None, split: str | None = None,
                             batch_size: int = 32, partitioner=None,
                             max_examples: int | None = None,
                             sequence_length: Mapping[str, int] | None = None,
                             return_scores: bool = False, progress: bool = False) -> dict[str, dict]:
  """Evaluates a rank-classification task or mixture with `seqio.Evaluator` and the encode-once scorer.

  Each task runs through its own Evaluator on its own evaluation split (held-out datasets:
  `validation`; BIG-bench targets: `all`), since a mixture's tasks need not share one.

  Args:
    task_name: a registered `*_score_eval` task or a mixture of them.
    params, model: the backbone's parameters and its `PromptedBackbone` (`Backbone.model`).
    vocabulary: the model's SentencePiece model (`Backbone.vocabulary`: the checkpoint's
      spiece.model or the one given); a task that tokenizes with another is refused, naming both.
    prompt: None or a soft prompt [P, H] for every input.
    split: the split for every task (default: each rospr task's evaluation split).
    batch_size, partitioner: as in `make_score_fn`.
    max_examples: evaluate only the first examples of each task (all their choices).
    sequence_length: SeqIO's {"inputs": T, "targets": L} limits (default `T0_SEQUENCE_LENGTH`, T0's
      and `rospr evaluate`'s: inputs cut to their first 1024 tokens, targets to 255 plus EOS).
    return_scores: also return each task's per-row scores [N] and idx [N, 2], in row order.
    progress: show a progress bar per task.

  Returns:
    {task name: {"accuracy": percent, "split": split, "rows": N[, "scores", "idx"]}}.

  Raises:
    ValueError: an unknown name, a task without that split or a score metric, a split without rows,
      max_examples < 1, or a task vocabulary that is not `vocabulary`.
  """
  from rospr_tasks import registry  # pylint: disable=g-import-not-at-top  (registers on import)
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"max_examples must be at least 1, got {max_examples}")
  from rospr_tasks import vocab  # pylint: disable=g-import-not-at-top
  task_or_mixture = registry.get_task(task_name)
  check_same_vocabulary(vocab.task_vocabulary_file(task_or_mixture), vocabulary,
                        f"The SeqIO task {task_name!r}'s examples")
  results = {}
  for task in seqio.get_subtasks(task_or_mixture):
    task_split = _task_split(task, split)
    num_rows = None if max_examples is None else _num_rows(task.name, task_split, max_examples)
    score_fn = make_score_fn(params, model, prompt, batch_size=batch_size, partitioner=partitioner,
                             progress=task.name if progress else None)
    results[task.name] = _evaluate_task(task, task_split, score_fn, num_rows=num_rows,
                                        sequence_length=sequence_length, return_scores=return_scores)
  return results


def _task_split(task: seqio.Task, split: str | None) -> str:
  """The split `task` is scored on (`split`, or its rospr task's evaluation split), refused when the
  task lacks it or a score metric."""
  if split is not None:
    task_split = split
  else:
    prompted = _prompted_task(task.name)
    if prompted is None:
      raise ValueError(f"{task.name!r} is not a rospr task: pass split= to evaluate it")
    task_split = prompted.eval_split
  if task_split not in task.splits or not task.score_metric_fns:
    raise ValueError(f"task {task.name!r} cannot be rank-classified on split {task_split!r} "
                     f"(splits {list(task.splits)}, score metrics {len(task.score_metric_fns)})")
  return task_split


def _evaluate_task(task: seqio.Task, task_split: str, score_fn, *, num_rows: int | None,
                   sequence_length: Mapping[str, int] | None, return_scores: bool) -> dict:
  """One task's `seqio.Evaluator` run with `score_fn`: its metrics, split and rows (and scores [N] and
  idx [N, 2] when `return_scores`)."""
  evaluator = seqio.Evaluator(task.name, RankFeatureConverter(), eval_split=task_split,
                              sequence_length=dict(sequence_length or T0_SEQUENCE_LENGTH),
                              num_examples=num_rows,
                              async_compute_metrics=False)
  if int(evaluator.cached_task_datasets[task.name].cardinality()) == 0:
    raise ValueError(f"task {task.name!r} has no rank-classification rows on split {task_split!r}")
  metrics, outputs = evaluator.evaluate(compute_metrics=True, score_fn=score_fn)
  scores = outputs[task.name][seqio.metrics.ModelOutputType.SCORE]
  entry = dict(metrics.result()[task.name])
  entry.update(split=task_split, rows=len(scores))
  if return_scores:
    entry["scores"] = np.asarray(scores, np.float64)
    entry["idx"] = np.stack([row[IDX_FEATURE] for row in evaluator.cached_task_datasets[task.name]
                             .as_numpy_iterator()]).reshape(-1, 2)
  return entry

"""The numbers behind the selection rules (`rospr_jax.retrieval.selection`): how often each source is
among the queries' neighbours, VAR's variances and scores, the Random row's seeded draw, and the
interpolation of prompts. Pure NumPy.

- freq(s): how often source s appears in `neighbor_sources [Q, N]`. Candidates are ordered by
  frequency, then by summed similarity (larger first), then by source id (smaller first), so every
  ordering is total and deterministic.
- VAR: for each candidate, the predicted choice positions of the Q queries under its prompt give a
  histogram p_s over choice positions (normalized to sum 1); var_s is its variance over the choices
  and score_s = freq(s) / (var_s + eps).

Queries with different numbers of choices. Let C_q be the number of choices of query q and
C = max_q C_q. The histogram is over positions 0..C-1: p_c = (# queries predicting c) / Q. The
variance is taken around the histogram a uniform guesser would produce in expectation,
u_c = (1/Q) sum_q [c < C_q] / C_q (each query spreads its unit mass evenly over its own choices):

    var_s = (1/C) sum_c (p_c - u_c)^2.

When every query has C choices, u_c = 1/C is the mean of p and var_s is exactly the population
variance of p over the C choices, as docs/design.md states it. With mixed counts, a candidate that answers
like a balanced guesser still scores variance 0 instead of being penalized for the positions that only
some queries have, and one that collapses every answer onto position 0 gets the largest variance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Sequence

import numpy as np

# Defaults of VAR's eps and of the Random row's seed (`selection.SelectionConfig` takes them from here).
DEFAULT_EPS = 1e-6
DEFAULT_RANDOM_SEED = 0


def check_count(name: str, value: int):
  if int(value) < 1:
    raise ValueError(f"{name} must be >= 1; got {value}.")


@dataclasses.dataclass(frozen=True)
class Frequencies:
  """Sources found among the neighbours of the queries, in candidate order.

  Attributes:
    source_ids: [S'] source ids, ordered by count (desc), summed similarity (desc), id (asc).
    counts: [S'] freq(s), the number of (query, neighbour) slots holding s.
    similarity: [S'] summed similarity of those slots.
    num_queries: Q.
    num_neighbors: N.
    num_sources: S, the sources of the library searched (ids < S), when the caller says.
    target: the name of the target the queries came from, when the caller says.
  """

  source_ids: np.ndarray
  counts: np.ndarray
  similarity: np.ndarray
  num_queries: int
  num_neighbors: int
  num_sources: int | None = None
  target: str | None = None


def frequencies(neighbor_sources, similarities, *, num_sources: int | None = None,
                target: str | None = None) -> Frequencies:
  """Counts the sources of the queries' neighbours.

  Args:
    neighbor_sources: [Q, N] int source id of each query's n-th neighbour.
    similarities: [Q, N] float similarity of that neighbour (used only to break ties).
    num_sources: S, the library's number of sources (every id must be below it), if known.
    target: the target's name (the Random row's draw depends on it), if known.

  Returns:
    The `Frequencies` of every source that appears at least once.
  """
  ids = np.asarray(neighbor_sources)
  sims = np.asarray(similarities, dtype=np.float64)
  if ids.ndim != 2:
    raise ValueError(f"neighbor_sources must be [Q, N]; got shape {ids.shape}.")
  if sims.shape != ids.shape:
    raise ValueError(
        f"similarities shape {sims.shape} differs from neighbor_sources shape {ids.shape}.")
  if ids.size == 0:
    raise ValueError(f"neighbor_sources is empty (shape {ids.shape}); need Q >= 1 and N >= 1.")
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"neighbor_sources must hold integer source ids; got dtype {ids.dtype}.")
  if ids.min() < 0:
    raise ValueError(f"neighbor_sources holds a negative source id ({int(ids.min())}).")
  if not np.all(np.isfinite(sims)):
    raise ValueError("similarities holds a NaN or infinite value.")
  if num_sources is not None:
    check_count("num_sources", num_sources)
    if ids.max() >= num_sources:
      raise ValueError(f"neighbor_sources holds source id {int(ids.max())}; the library has "
                       f"{num_sources} sources.")
  unique, inverse, counts = np.unique(ids.ravel(), return_inverse=True, return_counts=True)
  summed = np.zeros(len(unique), np.float64)
  np.add.at(summed, inverse, sims.ravel())
  # np.lexsort sorts by the last key first: count desc, then similarity desc, then id asc.
  order = np.lexsort((unique, -summed, -counts))
  return Frequencies(
      source_ids=unique[order].astype(np.int64),
      counts=counts[order].astype(np.int64),
      similarity=summed[order],
      num_queries=int(ids.shape[0]),
      num_neighbors=int(ids.shape[1]),
      num_sources=None if num_sources is None else int(num_sources),
      target=None if target is None else str(target))


def var_scores(counts, predictions, num_choices,
               eps: float = DEFAULT_EPS) -> tuple[np.ndarray, np.ndarray]:
  """VAR variances and scores of K candidates (see the module docstring for the definition).

  Args:
    counts: [K] freq(s) of the candidates.
    predictions: [K, Q] predicted choice position of each query under each candidate's prompt.
    num_choices: [Q] number of answer choices of each query (C_q >= 1).
    eps: added to the variance before dividing.

  Returns:
    (variances [K], scores [K]) with scores = counts / (variances + eps).
  """
  counts = np.asarray(counts, dtype=np.float64)
  preds = np.asarray(predictions)
  c_q = np.asarray(num_choices)
  if eps <= 0:
    raise ValueError(f"eps must be > 0; got {eps}.")
  if counts.ndim != 1:
    raise ValueError(f"counts must be [K]; got shape {counts.shape}.")
  if preds.ndim != 2 or preds.shape[0] != counts.shape[0]:
    raise ValueError(
        f"predictions must be [K, Q] with K = {counts.shape[0]} candidates; got shape {preds.shape}.")
  if c_q.shape != (preds.shape[1],):
    raise ValueError(
        f"num_choices must be [Q] with Q = {preds.shape[1]} queries; got shape {c_q.shape}.")
  if preds.shape[1] == 0:
    raise ValueError("predictions has no queries (Q = 0).")
  if not np.issubdtype(preds.dtype, np.integer):
    raise ValueError(f"predictions must be integer choice positions; got dtype {preds.dtype}.")
  if c_q.min() < 1:
    q = int(np.argmin(c_q))
    raise ValueError(f"query {q} has {int(c_q[q])} answer choices; every query needs at least 1.")
  bad = (preds < 0) | (preds >= c_q[None, :])
  if bad.any():
    k, q = (int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"candidate {k} predicts choice position {int(preds[k, q])} for query {q}, "
        f"which has {int(c_q[q])} choices.")
  num_q, width = preds.shape[1], int(c_q.max())
  positions = np.arange(width)
  # u_c: [C] expected histogram of a uniform guesser, each query spreading 1/C_q over its choices.
  uniform = ((positions[None, :] < c_q[:, None]) / c_q[:, None]).sum(axis=0) / num_q
  # p: [K, C] normalized histograms of predicted positions.
  hist = (preds[:, :, None] == positions[None, None, :]).sum(axis=1) / num_q
  variances = ((hist - uniform[None, :]) ** 2).mean(axis=1)
  return variances, counts / (variances + eps)


def random_source(num_sources: int, seed: int = DEFAULT_RANDOM_SEED, target: str | None = None) -> int:
  """The Random row's draw: a source id uniform over 0..S-1.

  The generator is seeded by sha256 of (seed, target name), so the draw of a target depends on nothing
  else (not on the other targets, their order, or the run), and different seeds draw independently.
  """
  check_count("num_sources", num_sources)
  key = hashlib.sha256(json.dumps([int(seed), target or ""]).encode("utf-8")).digest()
  rng = np.random.default_rng(np.frombuffer(key[:16], np.uint32))
  return int(rng.integers(int(num_sources)))


def interpolate(prompts, ids: Sequence[int], weights: Sequence[float]) -> np.ndarray:
  """Mixes prompts: sum_i weights[i] * prompts[ids[i]].

  Args:
    prompts: [S, P, H] prompt table.
    ids: [M] rows to mix.
    weights: [M] non-negative weights summing to 1.

  Returns:
    [P, H] in the dtype of `prompts` (accumulated in float64).
  """
  table = np.asarray(prompts)
  ids = np.asarray(ids)
  w = np.asarray(weights, dtype=np.float64)
  if table.ndim != 3:
    raise ValueError(f"prompts must be [S, P, H]; got shape {table.shape}.")
  if ids.ndim != 1 or ids.shape != w.shape or ids.size == 0:
    raise ValueError(f"ids {ids.shape} and weights {w.shape} must be equal-length, non-empty [M].")
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"ids must be integer prompt rows; got dtype {ids.dtype}.")
  if ids.min() < 0 or ids.max() >= table.shape[0]:
    raise ValueError(f"prompt id out of range: ids {ids.tolist()} for a table of "
                     f"{table.shape[0]} prompts.")
  if (w < 0).any() or not np.isfinite(w).all():
    raise ValueError(f"weights must be finite and non-negative; got {w.tolist()}.")
  if abs(w.sum() - 1.0) > 1e-6:
    raise ValueError(f"weights must sum to 1; got {w.tolist()} (sum {w.sum()}).")
  # [M] x [M, P, H] -> [P, H]
  mixed = np.tensordot(w, table[ids].astype(np.float64), axes=1)
  return mixed.astype(table.dtype)

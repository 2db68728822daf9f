"""Nearest-neighbour search over library embeddings: exact (reference) and ScaNN.

Both searchers answer `search(queries [Q, D], k) -> (ids [Q, k] int64, scores [Q, k] float32)`, ids
being row numbers of the library, scores the similarity (larger is nearer), rows ordered by score.

- Metric "cosine": the library rows are unit vectors (the store normalizes them) and the queries are
  normalized here; the score is the dot product. Metric "dot": raw dot product.
- `ExactSearcher` streams over the library in row blocks (shards may be memory-mapped), so it serves
  millions of rows with a bounded working set; it is the reference and the fallback.
- `ScannSearcher` wraps ScaNN (imported lazily). The index type follows ScaNN's advice by library size
  (`ScannConfig`): brute force below ~20k rows, asymmetric hashing (AH) plus exact reordering below
  ~100k, and above that a k-means tree (about sqrt(N) leaves) in front of AH plus reordering. Every
  knob is overridable.
"""

from __future__ import annotations

import dataclasses
import math
import errno
import os
from typing import Iterable, Sequence

import numpy as np

METRICS = ("cosine", "dot")
MODES = ("auto", "brute_force", "ah", "tree_ah")


def check_metric(metric: str) -> str:
  if metric not in METRICS:
    raise ValueError(f"Unknown metric {metric!r}; known metrics: {list(METRICS)}.")
  return metric


def normalize(x) -> np.ndarray:
  """Rows scaled to unit L2 norm, as float32. [R, D] -> [R, D]."""
  x = np.asarray(x, dtype=np.float32)
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  if (norms == 0).any():
    row = int(np.argwhere(norms.reshape(-1) == 0)[0, 0])
    raise ValueError(f"Cannot normalize row {row}: it is the zero vector.")
  return x / norms


def prepare_queries(queries, metric: str, dim: int | None = None) -> np.ndarray:
  """Queries as float32 [Q, D], normalized for cosine."""
  q = np.asarray(queries, dtype=np.float32)
  if q.ndim != 2:
    raise ValueError(f"queries must be [Q, D]; got shape {q.shape}.")
  if dim is not None and q.shape[1] != dim:
    raise ValueError(f"queries have dimension {q.shape[1]}; the library has dimension {dim}.")
  return normalize(q) if check_metric(metric) == "cosine" else np.ascontiguousarray(q)


def _merge_topk(ids_a, scores_a, ids_b, scores_b, k):
  """Top-k of two candidate sets per row, by score then smaller id. [Q, *] -> [Q, k]."""
  ids = np.concatenate([ids_a, ids_b], axis=1)
  scores = np.concatenate([scores_a, scores_b], axis=1)
  order = np.lexsort((ids, -scores), axis=1)[:, :k]
  return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


class ExactSearcher:
  """Exact top-k by blocked matrix products over one or more row blocks (shards)."""

  def __init__(self, shards: np.ndarray | Sequence[np.ndarray], metric: str = "cosine",
               block_rows: int = 65536, query_block: int = 1024):
    """Args:
      shards: [R, D] array or a sequence of [R_i, D] arrays (memory-mapped .npy files work).
      metric: "cosine" (rows already unit norm) or "dot".
      block_rows: library rows per matrix product.
      query_block: queries per matrix product.
    """
    self.metric = check_metric(metric)
    self.shards = [shards] if isinstance(shards, np.ndarray) else list(shards)
    if not self.shards:
      raise ValueError("ExactSearcher needs at least one shard.")
    dims = {s.shape[1] for s in self.shards}
    if len(dims) != 1 or any(s.ndim != 2 for s in self.shards):
      raise ValueError(f"Shards must be [N_i, D] with one D; got shapes "
                       f"{[s.shape for s in self.shards]}.")
    self.dim = dims.pop()
    self.size = sum(s.shape[0] for s in self.shards)
    self.block_rows = block_rows
    self.query_block = query_block

  def _blocks(self) -> Iterable[tuple[int, np.ndarray]]:
    offset = 0
    for shard in self.shards:
      for start in range(0, shard.shape[0], self.block_rows):
        yield offset + start, np.asarray(shard[start:start + self.block_rows], dtype=np.float32)
      offset += shard.shape[0]

  def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids [Q, k], scores [Q, k]) of the k most similar rows, best first."""
    q = prepare_queries(queries, self.metric, self.dim)
    k = _check_k(k, self.size)
    out_ids = np.empty((q.shape[0], k), np.int64)
    out_scores = np.empty((q.shape[0], k), np.float32)
    for qs in range(0, q.shape[0], self.query_block):
      qb = q[qs:qs + self.query_block]
      best_ids = np.empty((qb.shape[0], 0), np.int64)
      best_scores = np.empty((qb.shape[0], 0), np.float32)
      for offset, block in self._blocks():
        scores = qb @ block.T  # [Qb, D] x [D, Nb] -> [Qb, Nb]
        nb = scores.shape[1]
        kb = min(k, nb)
        # The kb largest per row (partitioning `scores` itself: negating it would copy the block).
        part = np.argpartition(scores, nb - kb, axis=1)[:, nb - kb:]
        best_ids, best_scores = _merge_topk(
            best_ids, best_scores, part + offset, np.take_along_axis(scores, part, axis=1), k)
      out_ids[qs:qs + len(qb)] = best_ids
      out_scores[qs:qs + len(qb)] = best_scores
    return out_ids, out_scores


def _check_k(k: int, size: int) -> int:
  if k < 1:
    raise ValueError(f"k must be >= 1; got {k}.")
  if k > size:
    raise ValueError(f"k = {k} exceeds the library size {size}.")
  return int(k)


@dataclasses.dataclass(frozen=True)
class ScannConfig:
  """How the ScaNN index is built; None means "chosen from the library size N".

  Attributes:
    mode: "auto" (by size), "brute_force", "ah" (AH + reorder) or "tree_ah" (tree + AH + reorder).
    brute_force_below: auto picks brute force for N below this.
    ah_below: auto picks AH without a tree for N below this (and tree_ah above).
    num_leaves: tree leaves (default ~sqrt(N)).
    num_leaves_to_search: leaves searched per query (default ~3% of the leaves, at least 10).
    dims_per_block: AH dimensions per 16-centre codebook (2 is ScaNN's advice for accuracy).
    anisotropic_threshold: AH anisotropic quantization threshold (0.2 for dot / cosine).
    reorder: candidates rescored exactly after AH (default max(250, 25k): a library holds ~100
      near-identical instances per source, and AH alone cannot rank inside such a cluster).
    training_sample_size: rows sampled to train the tree and the AH codebooks (default
      min(N, max(250k, 250 per leaf)); at 1M clustered rows a 100k sample lost 9 points of recall).
    spherical: spherical k-means for the tree (unit-norm data).
    num_threads: search threads (0: ScaNN's default, all cores).
  """

  mode: str = "auto"
  brute_force_below: int = 20_000
  ah_below: int = 100_000
  num_leaves: int | None = None
  num_leaves_to_search: int | None = None
  dims_per_block: int = 2
  anisotropic_threshold: float = 0.2
  reorder: int | None = None
  training_sample_size: int | None = None
  spherical: bool = False
  num_threads: int = 0

  def resolve(self, n: int, k: int) -> dict:
    """The concrete settings for a library of n rows searched for k neighbours."""
    if self.mode not in MODES:
      raise ValueError(f"Unknown ScaNN mode {self.mode!r}; known modes: {list(MODES)}.")
    mode = self.mode
    if mode == "auto":
      mode = ("brute_force" if n < self.brute_force_below else
              "ah" if n < self.ah_below else "tree_ah")
    settings = {"mode": mode, "num_neighbors": int(k)}
    if mode == "brute_force":
      return settings
    leaves = self.num_leaves or max(2, int(round(math.sqrt(n))))
    sample = self.training_sample_size or max(250_000, 250 * leaves if mode == "tree_ah" else 0)
    settings.update(
        dims_per_block=self.dims_per_block,
        anisotropic_threshold=self.anisotropic_threshold,
        reorder=int(self.reorder or max(250, 25 * k)),
        training_sample_size=int(min(sample, n)))
    if mode == "tree_ah":
      to_search = self.num_leaves_to_search or max(10, int(round(0.03 * leaves)))
      settings.update(num_leaves=int(leaves), num_leaves_to_search=int(min(to_search, leaves)),
                      spherical=bool(self.spherical))
    return settings


def _import_scann():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # `import scann` imports TensorFlow.
  from scann.scann_ops.py import scann_ops_pybind  # pylint: disable=g-import-not-at-top
  return scann_ops_pybind


class ScannSearcher:
  """A ScaNN index over the library rows; see `ScannConfig` for how it is built."""

  def __init__(self, searcher, metric: str, dim: int, size: int, settings: dict):
    self._searcher = searcher
    self.metric = check_metric(metric)
    self.dim = dim
    self.size = size
    self.settings = dict(settings)

  @classmethod
  def build(cls, database, metric: str = "cosine", k: int = 10,
            config: ScannConfig = ScannConfig()) -> "ScannSearcher":
    """Builds the index. database: [R, D] float32 (unit rows for cosine)."""
    check_metric(metric)
    db = np.ascontiguousarray(database, dtype=np.float32)
    if db.ndim != 2 or db.shape[0] == 0:
      raise ValueError(f"database must be a non-empty [N, D] array; got shape {db.shape}.")
    settings = config.resolve(db.shape[0], k)
    scann = _import_scann()
    builder = scann.builder(db, settings["num_neighbors"], "dot_product")
    if settings["mode"] == "brute_force":
      builder = builder.score_brute_force()
    else:
      if settings["mode"] == "tree_ah":
        builder = builder.tree(
            num_leaves=settings["num_leaves"],
            num_leaves_to_search=settings["num_leaves_to_search"],
            training_sample_size=settings["training_sample_size"],
            spherical=settings["spherical"])
      builder = builder.score_ah(
          settings["dims_per_block"],
          anisotropic_quantization_threshold=settings["anisotropic_threshold"],
          training_sample_size=settings["training_sample_size"])
      builder = builder.reorder(settings["reorder"])
    searcher = builder.build()
    if config.num_threads:
      searcher.set_num_threads(config.num_threads)
    return cls(searcher, metric, db.shape[1], db.shape[0], settings)

  def search(self, queries, k: int, leaves_to_search: int | None = None,
             reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids [Q, k], scores [Q, k]), best first; the index settings can be overridden."""
    q = prepare_queries(queries, self.metric, self.dim)
    k = _check_k(k, self.size)
    if reorder is not None and reorder < k:
      raise ValueError(f"reorder = {reorder} must be >= k = {k}.")
    if self.settings["mode"] != "brute_force" and reorder is None:
      reorder = max(self.settings["reorder"], k)
    ids, scores = self._searcher.search_batched_parallel(
        q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
        leaves_to_search=leaves_to_search)
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    if ids.shape != (q.shape[0], k):
      raise ValueError(f"ScaNN returned neighbours of shape {ids.shape}; expected {(q.shape[0], k)} "
                       f"(a tree search with too few leaves_to_search can run out of candidates).")
    return ids, scores

  def serialize(self, directory: str):
    """Writes the index files into `directory` (created; paths inside are relative)."""
    os.makedirs(directory, exist_ok=True)
    try:
      self._searcher.serialize(directory, relative_path=True)
    except RuntimeError as e:  # ScaNN reports a failed write as "Failed to extract ...: I/O error"
      stat = os.statvfs(directory)
      free = stat.f_bavail * stat.f_frsize
      raise OSError(errno.ENOSPC if free < (1 << 20) else errno.EIO,
                    f"ScaNN could not write its index ({e}); {free} bytes are free on that file system "
                    "(a full disk?)", directory) from None

  @classmethod
  def load(cls, directory: str, metric: str, dim: int, size: int,
           settings: dict) -> "ScannSearcher":
    """Loads an index written by `serialize`."""
    if not os.path.isfile(os.path.join(directory, "scann_assets.pbtxt")):
      raise FileNotFoundError(f"No ScaNN index in {directory}: scann_assets.pbtxt is missing.")
    searcher = _import_scann().load_searcher(directory, assets_backcompat_shim=False)
    loaded = cls(searcher, metric, dim, size, settings)
    if searcher.size() != size:
      raise ValueError(f"The ScaNN index in {directory} holds {searcher.size()} rows; "
                       f"the library has {size}.")
    return loaded


def recall_at_k(approx_ids, exact_ids) -> float:
  """Mean over queries of |approx top-k ∩ exact top-k| / k. [Q, k], [Q, k] -> float."""
  approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
  if approx_ids.shape != exact_ids.shape:
    raise ValueError(f"approx ids {approx_ids.shape} and exact ids {exact_ids.shape} differ in shape.")
  hits = sum(len(np.intersect1d(a, e)) for a, e in zip(approx_ids, exact_ids))
  return hits / exact_ids.size


def recall_with_ties(queries, database, approx_ids, exact_scores, metric: str = "cosine",
                     tol: float = 1e-5) -> float:
  """recall@k that counts a returned row as found when its exact similarity reaches the exact k-th.

  Id-based recall is pessimistic on libraries holding duplicate (or numerically identical) rows:
  which of several equal rows is returned is arbitrary. Here a returned row counts when
  sim(q, row) >= (exact k-th similarity of q) - tol.

  Args:
    queries: [Q, D] the queries; database: [R, D] rows (any array indexable by [Q, k] ids).
    approx_ids: [Q, k] ids the approximate search returned.
    exact_scores: [Q, k] exact similarities, best first.
  """
  q = prepare_queries(queries, metric)
  rows = np.asarray(database[np.asarray(approx_ids).reshape(-1)], np.float32)
  rows = rows.reshape(*np.shape(approx_ids), -1)  # [Q, k, D]
  sims = np.einsum("qd,qkd->qk", q, rows)
  return float(np.mean(sims >= np.asarray(exact_scores)[:, -1:] - tol))


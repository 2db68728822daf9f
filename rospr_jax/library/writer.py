"""The library writer: rows streamed into shards, the prompt table, the index, and the manifest last.

See `store.py` for the layout. Everything is written into a temporary folder (`storage.new_folder`)
committed at the end (`storage.commit_folder`), so a reader never sees a half-written library; the
index's recall against exact search is measured on a seeded sample of rows (`self_recall`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Sequence

import numpy as np

from rospr_jax import storage
from rospr_jax.library import search
from rospr_jax.library.store import (INDEX_DIR, INDEX_KINDS, KIND, LIBRARY, PROMPTS, Library,
                                     Retriever, SourceInfo, sha256_array)


class LibraryWriter:
  """Streams rows into a new library directory; `finish` builds the index and renames it in place.

  Use as a context manager: on an exception the temporary directory is removed.
  """

  def __init__(self, directory: str, *, sources: Sequence[SourceInfo], prompts, dim: int,
               retriever: Retriever, metric: str = "cosine", shard_rows: int = 262_144,
               overwrite: bool = False, extra: dict | None = None,
               prompts_backbone: str | None = None):
    """Args:
      directory: the library directory to create.
      sources: [S] sources; row s of `prompts` is the prompt of sources[s].
      prompts: [S, P, H] prompt table.
      dim: embedding dimension D.
      retriever: the encoder's fingerprint and description.
      metric: "cosine" (rows are normalized here) or "dot".
      shard_rows: rows per embeddings shard.
      overwrite: replace an existing library at `directory` (atomically, at `finish`).
      extra: more JSON-serializable facts to record in the manifest (e.g. the command line).
      prompts_backbone: fingerprint of the backbone the prompts were trained on (None: unknown, e.g.
        a bare .npy table); evaluations with another backbone are refused.
    """
    self.directory = storage.absolute(directory)
    self.prompts_backbone = prompts_backbone
    self.metric = search.check_metric(metric)
    table = np.asarray(prompts)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
      dup = sorted({n for n in names if names.count(n) > 1})
      raise ValueError(f"Duplicate source names {dup}.")
    if table.ndim != 3 or table.shape[0] != len(sources):
      raise ValueError(f"prompts must be [S, P, H] with S = {len(sources)} sources; "
                       f"got shape {table.shape}.")
    if not np.all(np.isfinite(table)):
      bad = sorted({sources[s].name for s in np.argwhere(~np.isfinite(table))[:, 0].tolist()})
      raise ValueError(f"The prompts of {len(bad)} sources hold NaN or infinite values: {bad[:10]}.")
    if dim < 1 or shard_rows < 1:
      raise ValueError(f"dim ({dim}) and shard_rows ({shard_rows}) must be >= 1.")
    self.sources = list(sources)
    self.prompts = table
    self.dim = int(dim)
    self.retriever = retriever
    self.shard_rows = int(shard_rows)
    self.overwrite = overwrite
    self.extra = dict(extra or {})
    self.tmp = storage.new_folder(self.directory, "Library", kind=KIND, overwrite=overwrite)
    os.makedirs(os.path.join(self.tmp, "shards"))
    self._emb: list[np.ndarray] = []
    self._ids: list[np.ndarray] = []
    self._texts: list[str] = []
    self._buffered = 0
    self._shards: list[dict] = []
    self._counts = np.zeros(len(self.sources), np.int64)
    self._done = False

  def __enter__(self) -> "LibraryWriter":
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None or not self._done:
      self.abort()
    return False

  def abort(self):
    shutil.rmtree(self.tmp, ignore_errors=True)
    self._done = True

  @property
  def num_rows(self) -> int:
    return int(self._counts.sum())

  def add(self, embeddings, source_ids, texts: Sequence[str]):
    """Appends rows. embeddings: [B, D]; source_ids: [B] ints in [0, S); texts: [B] strings."""
    emb = np.asarray(embeddings, dtype=np.float32)
    ids = np.asarray(source_ids)
    if emb.ndim != 2 or emb.shape[1] != self.dim:
      raise ValueError(f"embeddings must be [B, {self.dim}]; got shape {emb.shape}.")
    if ids.shape != (emb.shape[0],) or len(texts) != emb.shape[0]:
      raise ValueError(f"{emb.shape[0]} embeddings, {ids.shape} source ids and {len(texts)} texts "
                       "must match.")
    if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0
                     or ids.max() >= len(self.sources)):
      raise ValueError(f"source ids must be integers in [0, {len(self.sources)}); got "
                       f"{sorted(set(ids.tolist()))[:10]}.")
    if not np.isfinite(emb).all():
      row = int(np.argwhere(~np.isfinite(emb).all(axis=1))[0, 0])
      raise ValueError(f"embedding row {row} of this batch (text {texts[row]!r:.80}) is not finite.")
    if self.metric == "cosine":
      emb = search.normalize(emb)
    np.add.at(self._counts, ids, 1)
    start = 0
    while start < emb.shape[0]:
      take = min(self.shard_rows - self._buffered, emb.shape[0] - start)
      self._emb.append(emb[start:start + take])
      self._ids.append(ids[start:start + take].astype(np.int32))
      self._texts.extend(texts[start:start + take])
      self._buffered += take
      start += take
      if self._buffered == self.shard_rows:
        self._flush()

  def _flush(self):
    if not self._buffered:
      return
    index = len(self._shards)
    files = {
        "embeddings": f"shards/embeddings-{index:05d}.npy",
        "sources": f"shards/sources-{index:05d}.npy",
        "texts": f"shards/texts-{index:05d}.jsonl",
    }
    np.save(os.path.join(self.tmp, files["embeddings"]), np.concatenate(self._emb))
    np.save(os.path.join(self.tmp, files["sources"]), np.concatenate(self._ids))
    with open(os.path.join(self.tmp, files["texts"]), "w", encoding="utf-8") as f:
      for s, text in zip(np.concatenate(self._ids).tolist(), self._texts):
        f.write(json.dumps({"source": s, "text": text}, ensure_ascii=False) + "\n")
    self._shards.append({
        "rows": self._buffered,
        "files": files,
        "sha256": {key: storage.sha256_file(os.path.join(self.tmp, path)) for key, path in files.items()},
    })
    self._emb, self._ids, self._texts, self._buffered = [], [], [], 0

  def finish(self, index: str = "scann", scann_config: search.ScannConfig = search.ScannConfig(),
             k: int = 10, recall_queries: int = 200, seed: int = 0) -> "Library":
    """Writes the last shard, the prompts, the index and the manifest; renames into place.

    Args:
      index: "scann" (build a ScaNN index from the shards) or "exact" (no index; exact search).
      scann_config: how to build the ScaNN index.
      k: the default number of neighbours of the index.
      recall_queries: library rows (seeded sample) searched with the index and exactly; their
        recall@k is recorded in the manifest (0 skips the check).
      seed: seed of that sample.

    Returns:
      The written library (at a URL: searched through `Library.open` of its local copy).
    """
    if index not in INDEX_KINDS:
      raise ValueError(f"Unknown index kind {index!r}; known kinds: {list(INDEX_KINDS)}.")
    self._flush()
    if not self._shards:
      raise ValueError(f"No rows were added to the library {self.directory}.")
    empty = [s.name for s, c in zip(self.sources, self._counts) if c == 0]
    if empty:
      raise ValueError(f"Sources without any instance in the library: {empty}.")
    np.save(os.path.join(self.tmp, PROMPTS), self.prompts)
    index_record = self._write_index(index, scann_config, k, recall_queries, seed)
    LIBRARY.manifest(self._manifest(index_record)).write(self.tmp)
    storage.check_destination(self.directory, "Library", kind=KIND, overwrite=self.overwrite)  # again: it
    # may have been written while this one was built
    facts = LIBRARY.read(self.tmp, verify=False).facts  # as written: its files were hashed as written
    storage.commit_folder(self.tmp, self.directory, "Library", KIND)
    self._done = True
    return Library(storage.absolute(self.directory), facts, name=self.directory)

  def _write_index(self, index: str, scann_config: search.ScannConfig, k: int, recall_queries: int,
                   seed: int) -> dict:
    """Builds and writes the search index of the written shards (none for "exact"); returns the
    manifest's index record (kind, settings, files' sha256, recall)."""
    index_record = {"kind": index, "settings": {}, "files": {}}
    if index == "scann":
      shards = [np.load(os.path.join(self.tmp, s["files"]["embeddings"]), mmap_mode="r")
                for s in self._shards]
      database = np.concatenate(shards) if len(shards) > 1 else np.asarray(shards[0])
      searcher = search.ScannSearcher.build(database, metric=self.metric,
                                            k=min(k, database.shape[0]), config=scann_config)
      if recall_queries > 0:
        index_record["recall"] = self_recall(searcher, shards, database, self.metric, k,
                                             recall_queries, seed)
      del database
      index_dir = os.path.join(self.tmp, INDEX_DIR)
      searcher.serialize(index_dir)
      index_record["settings"] = searcher.settings
      index_record["files"] = {
          f"{INDEX_DIR}/{name}": storage.sha256_file(os.path.join(index_dir, name))
          for name in sorted(os.listdir(index_dir))}
    return index_record

  def _manifest(self, index_record: dict) -> dict:
    """The facts of the library's manifest: the retriever, metric, sources, prompts, shards and index."""
    return {
        "retriever": {"fingerprint": self.retriever.fingerprint,
                      "description": self.retriever.description},
        "metric": self.metric,
        "dim": self.dim,
        "num_rows": self.num_rows,
        "sources": [{
            "id": i,
            "name": s.name,
            "n_requested": int(s.n),
            "n": int(self._counts[i]),
            "seed": int(s.seed),
            "prompt_file": s.prompt_file,
            "prompt_file_sha256": s.prompt_file_sha256,
            "prompt_sha256": sha256_array(self.prompts[i]),
        } for i, s in enumerate(self.sources)],
        "prompts": {"file": PROMPTS, "shape": list(self.prompts.shape),
                    "backbone_fingerprint": self.prompts_backbone,
                    "dtype": self.prompts.dtype.str,
                    "sha256": storage.sha256_file(os.path.join(self.tmp, PROMPTS))},
        "shards": self._shards,
        "index": index_record,
        "extra": self.extra,
    }


def self_recall(searcher, shards: Sequence[np.ndarray], database: np.ndarray, metric: str, k: int,
                num_queries: int, seed: int) -> dict:
  """recall@k of `searcher` against exact search (by id, and counting ties), queried with a seeded
  sample of library rows."""
  rows = np.sort(np.random.default_rng(seed).choice(
      len(database), size=min(num_queries, len(database)), replace=False))
  queries = np.asarray(database[rows])
  k = min(k, len(database))
  approx, _ = searcher.search(queries, k)
  exact, exact_scores = search.ExactSearcher(shards, metric=metric).search(queries, k)
  return {"k": k, "queries": len(rows), "seed": seed,
          "recall": round(search.recall_at_k(approx, exact), 6),
          "recall_with_ties": round(search.recall_with_ties(queries, database, approx, exact_scores,
                                                            metric), 6)}

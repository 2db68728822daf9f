"""The library directory: what a built library is on disk, and its checking reader (`writer.py` writes it).

Layout (R rows in total, S sources, D embedding dim, P prompt length, H model dim):

    manifest.json                      format version, retriever, metric, dim, sources, files, sha256s
    prompts.npy                        [S, P, H] prompt table, row s = the soft prompt of source s
    shards/embeddings-00000.npy        [R_i, D] float32 embeddings (unit rows for cosine)
    shards/sources-00000.npy           [R_i] int32 source id of each row
    shards/texts-00000.jsonl           R_i lines {"source": s, "text": ...}: the rendered instances
    index/                             the ScaNN index over all rows (absent for an exact library)

Rows are numbered across shards in order. The writer streams rows into shards of `shard_rows`, so
memory stays bounded however many rows come; the index is built from the written shards. Everything is
written into a temporary sibling directory that is renamed into place at the end, so a reader never
sees a half-written library (the storage rule: committed by its manifest, written last). The reader checks the manifest against what the caller expects (format
version, dimension, retriever fingerprint, metric), every file against its recorded size, shape and
sha256, and the manifest's own facts (source names, metric, ...) against the digest it records (all
but the shapes through `LIBRARY`, the library's `storage.ManifestKind`), and names what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Iterator

import numpy as np

from rospr_jax import storage

from rospr_jax.library import search

FORMAT_VERSION = 1
KIND = "rospr_library"  # the manifest's "kind" (libraries written before it have none)
MANIFEST = storage.MANIFEST
PROMPTS = "prompts.npy"
INDEX_DIR = "index"
INDEX_KINDS = ("scann", "exact")


def sha256_array(x: np.ndarray) -> str:
  """Checksum of an array's dtype, shape and bytes."""
  x = np.ascontiguousarray(x)
  digest = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
  digest.update(x.tobytes())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  """One source of the library (a (dataset, template) pair with its soft prompt).

  Attributes:
    name: unique source name, e.g. "super_glue/rte:GPT-3 style".
    n: instances requested for it.
    seed: seed its instances were sampled with.
    prompt_file: where its prompt came from (the prompt export), for the record.
    prompt_file_sha256: that file's sha256 as the export recorded it.
  """

  name: str
  n: int
  seed: int = 0
  prompt_file: str | None = None
  prompt_file_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Retriever:
  """The encoder the embeddings came from: a fingerprint of its weights plus a description."""

  fingerprint: str
  description: dict = dataclasses.field(default_factory=dict)


def recorded_retriever_dtype(directory: str) -> str:
  """The compute dtype of the retriever that built the library at `directory` ("float32" when the
  manifest cannot tell: `Library.open` checks the manifest and reports what is wrong with it)."""
  try:
    recorded = str(read_manifest(directory)["retriever"]["description"]["config"]["dtype"])
  except (OSError, ValueError, KeyError, TypeError):
    return "float32"
  return next((name for name in ("bfloat16", "float16") if name in recorded), "float32")


_REQUIRED_KEYS = ("format_version", "retriever", "metric", "dim", "num_rows", "sources", "prompts",
                  "shards", "index")


def _listed_files(facts: dict) -> dict[str, str]:
  """{relative path: sha256} of every file a library's manifest lists: the prompt table, each shard's
  files and the index's."""
  files = {facts["prompts"]["file"]: facts["prompts"]["sha256"]}
  for shard in facts["shards"]:
    files.update({relative: shard["sha256"][key] for key, relative in shard["files"].items()})
  return {**files, **facts["index"]["files"]}


LIBRARY = storage.ManifestKind("Library", KIND, required=_REQUIRED_KEYS, format_version=FORMAT_VERSION,
                               rebuild="Rebuild the library.", listed=_listed_files)


class Library:
  """A library directory opened for reading; construct with `Library.open`."""

  def __init__(self, directory: str, manifest: dict, name: str | None = None):
    self.directory = directory
    self.name = name or directory  # what records name: the URL of a library read from one
    self.manifest = manifest
    self._searchers: dict[str, object] = {}
    self._source_ids: np.ndarray | None = None

  @classmethod
  def open(cls, directory: str, *, dim: int | None = None, retriever: str | None = None,
           metric: str | None = None, verify: bool = True, name: str | None = None) -> "Library":
    """Opens and checks a library.

    Args:
      directory: the library directory.
      dim: the embedding dimension the caller's retriever produces, if known.
      retriever: the fingerprint of the caller's retriever, if known.
      metric: the metric the caller expects, if any.
      verify: check every file's sha256 (reads every byte once; shapes are always checked).
      name: what selections record as the library (default: `directory`): the URL of a local copy.

    Raises:
      FileNotFoundError: the directory, the manifest or a file it lists is missing.
      ValueError: the manifest or a file does not match (the message names which and how).
    """
    shown = name or storage.absolute(directory)  # a local copy's messages name its URL
    directory = os.path.abspath(directory)
    read = LIBRARY.read(directory, verify=False)  # every listed file's presence; the sha256s below
    manifest = read.facts
    if dim is not None and manifest["dim"] != dim:
      raise ValueError(f"Library {shown} holds embeddings of dimension {manifest['dim']}; "
                       f"the retriever produces dimension {dim}.")
    if retriever is not None and manifest["retriever"]["fingerprint"] != retriever:
      raise ValueError(
          f"Library {shown} was built with retriever {manifest['retriever']['fingerprint']} "
          f"({manifest['retriever'].get('description')}); the given retriever is {retriever}. "
          "Queries must be embedded by the retriever that built the library, in the dtype it was "
          f"built in ({recorded_retriever_dtype(directory)}).")
    if metric is not None and manifest["metric"] != metric:
      raise ValueError(f"Library {shown} uses metric {manifest['metric']!r}; "
                       f"expected {metric!r}.")
    if verify:  # after the cheap checks: a library of another retriever is refused before any hashing
      LIBRARY.verify(directory, read)
    library = cls(directory, manifest, name)
    library._check_files(verify)
    return library

  # ---- checks ----

  def _file(self, relative: str) -> str:
    return os.path.join(self.directory, relative)

  def _load_npy(self, relative: str, mmap: bool = True) -> np.ndarray:
    try:
      return np.load(self._file(relative), mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
      raise ValueError(f"Library file {relative} in {self.directory} is corrupted: {e}.") from e

  def _check_files(self, verify: bool):
    """Checks what the files hold against the manifest (shapes, rows, each prompt's checksum); their
    presence and sha256 were checked by `LIBRARY.read` and `LIBRARY.verify`."""
    m = self.manifest
    prompts = m["prompts"]
    table = self._load_npy(prompts["file"])
    if list(table.shape) != prompts["shape"] or table.shape[0] != len(m["sources"]):
      raise ValueError(f"Library file {prompts['file']} in {self.directory} has shape "
                       f"{list(table.shape)}; the manifest says {prompts['shape']} for "
                       f"{len(m['sources'])} sources.")
    if verify:
      for s in m["sources"]:
        if sha256_array(table[s["id"]]) != s["prompt_sha256"]:
          raise ValueError(f"Library {self.directory}: the prompt of source {s['name']!r} (row "
                           f"{s['id']} of {prompts['file']}) differs from the manifest's checksum.")
    total = 0
    for shard in m["shards"]:
      emb = self._load_npy(shard["files"]["embeddings"])
      ids = self._load_npy(shard["files"]["sources"])
      if emb.shape != (shard["rows"], m["dim"]) or emb.dtype != np.float32:
        raise ValueError(f"Library file {shard['files']['embeddings']} in {self.directory} holds "
                         f"{emb.dtype} {list(emb.shape)}; the manifest says float32 "
                         f"[{shard['rows']}, {m['dim']}].")
      if ids.shape != (shard["rows"],):
        raise ValueError(f"Library file {shard['files']['sources']} in {self.directory} holds "
                         f"{list(ids.shape)} ids; the manifest says {shard['rows']}.")
      total += shard["rows"]
    if total != m["num_rows"]:
      raise ValueError(f"Library {self.directory}: shards hold {total} rows; the manifest says "
                       f"{m['num_rows']}.")
    counts = np.bincount(self.source_ids(), minlength=len(m["sources"]))
    for s in m["sources"]:
      if counts[s["id"]] != s["n"]:
        raise ValueError(f"Library {self.directory}: source {s['name']!r} has {counts[s['id']]} "
                         f"rows; the manifest says {s['n']}.")

  # ---- contents ----

  @property
  def dim(self) -> int:
    return int(self.manifest["dim"])

  @property
  def metric(self) -> str:
    return self.manifest["metric"]

  @property
  def num_rows(self) -> int:
    return int(self.manifest["num_rows"])

  def check_num_neighbors(self, k: int, setting: str) -> None:
    """Refuses, naming `setting` (the flag or gin macro of N), more neighbours per query than the library
    has rows: before the backbone scores anything, not after."""
    if k > self.num_rows:
      raise ValueError(f"{setting} = {k} exceeds the {self.num_rows} instances of the library {self.name}; "
                       f"give at most {self.num_rows}.")

  @property
  def source_names(self) -> list[str]:
    return [s["name"] for s in self.manifest["sources"]]

  @property
  def retriever_fingerprint(self) -> str:
    return self.manifest["retriever"]["fingerprint"]

  def embedding_shards(self) -> list[np.ndarray]:
    """Memory-mapped [N_i, D] float32 shards, in row order."""
    return [self._load_npy(s["files"]["embeddings"]) for s in self.manifest["shards"]]

  def source_ids(self) -> np.ndarray:
    """[R] int32 source id of every row."""
    if self._source_ids is None:
      self._source_ids = np.concatenate(
          [self._load_npy(s["files"]["sources"], mmap=False) for s in self.manifest["shards"]])
      bad = (self._source_ids < 0) | (self._source_ids >= len(self.manifest["sources"]))
      if bad.any():
        raise ValueError(f"Library {self.directory}: row {int(np.argmax(bad))} has source id "
                         f"{int(self._source_ids[np.argmax(bad)])}, outside [0, "
                         f"{len(self.manifest['sources'])}).")
    return self._source_ids

  def texts(self) -> Iterator[tuple[int, str]]:
    """Yields (source id, rendered text) of every row, in row order."""
    for shard in self.manifest["shards"]:
      relative = shard["files"]["texts"]
      with open(self._file(relative), encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
          try:
            record = json.loads(line)
            yield int(record["source"]), record["text"]
          except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"Library file {relative} line {line_no}: {e}.") from e

  def check_prompts_fit(self, backbone_fingerprint: str, emb_dim: int) -> None:
    """Refuses prompts trained for another backbone (by fingerprint, where the library records it) or
    of another width H, before anything is scored with them."""
    recorded = self.manifest["prompts"]
    if recorded["shape"][-1] != emb_dim:
      raise ValueError(f"Library {self.directory} holds prompts of width H = {recorded['shape'][-1]}; "
                       f"the backbone has H = {emb_dim}.")
    trained_on = recorded.get("backbone_fingerprint")
    if trained_on is not None and trained_on != backbone_fingerprint:
      raise ValueError(f"Library {self.directory} holds prompts trained on backbone {trained_on}; this "
                       f"run's backbone is {backbone_fingerprint}. Evaluate with the backbone the "
                       "prompts were trained on, or rebuild the library from its prompts.")

  def prompts(self) -> np.ndarray:
    """[S, P, H] prompt table."""
    return self._load_npy(self.manifest["prompts"]["file"], mmap=False)

  # ---- search ----

  def searcher(self, kind: str = "auto"):
    """The ScaNN index ("scann"), exact search ("exact"), or the index when built ("auto")."""
    if kind == "auto":
      kind = self.manifest["index"]["kind"]
    if kind not in INDEX_KINDS:
      raise ValueError(f"Unknown searcher kind {kind!r}; known kinds: {['auto', *INDEX_KINDS]}.")
    if kind not in self._searchers:
      if kind == "exact":
        self._searchers[kind] = search.ExactSearcher(self.embedding_shards(), metric=self.metric)
      else:
        if self.manifest["index"]["kind"] != "scann":
          raise ValueError(f"Library {self.directory} was built without a ScaNN index; "
                           "use the exact searcher or rebuild with --index scann.")
        self._searchers[kind] = search.ScannSearcher.load(
            os.path.join(self.directory, INDEX_DIR), self.metric, self.dim, self.num_rows,
            self.manifest["index"]["settings"])
    return self._searchers[kind]

  def neighbors(self, queries, k: int, kind: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Sources of the k nearest rows of each query.

    Args:
      queries: [Q, D] query embeddings (from the library's retriever).
      k: N neighbours per query.
      kind: searcher kind, see `searcher`.

    Returns:
      (source ids [Q, N] int64, similarities [Q, N] float32), nearest first.
    """
    ids, scores = self.searcher(kind).search(queries, k)
    return self.source_ids()[ids].astype(np.int64), scores


def read_manifest(directory: str) -> dict:
  """The raw manifest of a library, unchecked (for tools that inspect or repair)."""
  return storage.read_json(os.path.join(directory, MANIFEST), "Library manifest")

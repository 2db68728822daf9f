"""Dataset examples (records) from local files, in the field layout of the Hugging Face datasets.

A split of a dataset is looked for, in this order:

1. `<data_dir>/<dataset>[/<subset>]/<split>.jsonl`: one JSON object per line, fields as Hugging Face
   names them (nested features as nested objects: `answers: {"text": [...], "answer_start": [...]}`);
2. `<data_dir>/<dataset>[/<subset>]/<split>/*.arrow`: a split saved with Hugging Face
   `DatasetDict.save_to_disk` (read with pyarrow; the `datasets` package is not needed);
3. `$ROSPR_TFDS_DIR/<tfds name>[/<config>]/<version>/`: prepared TFDS data of a dataset that
   `tfds_records.FIELD_MAPS` maps to the Hugging Face fields (offline: never a download or GCS);
4. the Hugging Face hub through `datasets.load_dataset`, only when the `datasets` package is importable
   and `ROSPR_HF_HUB=1` (never by default: a missing dataset must fail fast, not wait on the network).

`data_dir` is `$ROSPR_DATA_DIR`, else `<cache>/data`; it may be a URL (1. and 2. are then read where they are, object by object). A split found nowhere raises
`DatasetNotFoundError` at once, naming the dataset, the paths tried and how to provide it.
TFDS records are mapped to the Hugging Face field names and values the promptsource templates read.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import pathlib
from typing import Any, Iterator

from rospr_jax import storage
from rospr_jax.data import archives
from rospr_jax.data import tfds_records


class DatasetNotFoundError(FileNotFoundError):
  """No local file and no permitted remote source holds the requested split."""


def data_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("ROSPR_DATA_DIR") or (archives.cache_dir() / "data"))


def _hub_allowed() -> bool:
  return os.environ.get("ROSPR_HF_HUB", "") == "1"


@dataclasses.dataclass(frozen=True)
class SplitLocation:
  """Where one split of one dataset lives."""

  kind: str  # "jsonl", "arrow", "tfds" or "hub"
  path: storage.Path | pathlib.Path | None  # a URL's path too: read where it is
  dataset: str
  subset: str | None
  split: str


def locate(dataset: str, subset: str | None, split: str, root: os.PathLike | None = None) -> SplitLocation:
  """Finds a split (see the module docstring for the order). A data_dir at a URL (`gs://b/p3`) is read
  where it is, as local files are.

  Raises:
    DatasetNotFoundError: nothing holds the split.
  """
  base = os.fspath(root) if root is not None else os.environ.get("ROSPR_DATA_DIR") or os.fspath(data_dir())
  parts = [dataset, *([subset] if subset else [])]
  folder = storage.as_path(base, "DATA_DIR").joinpath(*parts)
  jsonl, arrow_dir = folder / f"{split}.jsonl", folder / split
  if jsonl.is_file():
    return SplitLocation("jsonl", jsonl, dataset, subset, split)
  if arrow_dir.is_dir() and any(arrow_dir.glob("*.arrow")):
    return SplitLocation("arrow", arrow_dir, dataset, subset, split)
  tfds_split = tfds_records.locate(dataset, subset, split)
  if tfds_split is not None:
    return SplitLocation("tfds", tfds_split.folder, dataset, subset, split)
  name = f"{dataset}{'/' + subset if subset else ''}"
  if _hub_allowed() and importlib.util.find_spec("datasets") is not None:
    return SplitLocation("hub", None, dataset, subset, split)
  tfds_where = tfds_records.expected_folder(dataset, subset, split)
  tfds_hint = (f", or put prepared TFDS data in {tfds_where} and set ROSPR_TFDS_DIR" if tfds_where else "")
  raise DatasetNotFoundError(
      f"no data for {name} split {split!r}: looked for {jsonl} (JSON lines, Hugging Face field names) "
      f"and {arrow_dir}/*.arrow (Hugging Face save_to_disk). Write the split there, or point "
      f"ROSPR_DATA_DIR at a folder that has it{tfds_hint}, or install `datasets` and set ROSPR_HF_HUB=1 "
      f"to download {name} from the Hugging Face hub.")


def _iter_jsonl(path: storage.Path) -> Iterator[dict[str, Any]]:
  """The records of a JSON-lines file (errors name it and the line)."""
  return (record for _, record in _iter_jsonl_lines(path))


def _iter_jsonl_lines(path: storage.Path) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, record) of a JSON-lines file (blank lines skipped)."""
  shown = os.fspath(path)
  for line_no, line in storage.text_lines(path):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{shown}: line {line_no} is not valid JSON ({e.msg} at column {e.colno}); "
                       f"`rospr tasks` counts the bad lines of every data file") from e
    if not isinstance(record, dict):
      raise ValueError(f"{shown}: line {line_no} is a JSON {type(record).__name__}, expected an object")
    yield line_no, record


def _arrow_files(folder: storage.Path) -> list[storage.Path]:
  state = folder / "state.json"
  if state.is_file():
    names = [d["filename"] for d in storage.read_json(state).get("_data_files", [])]
    if names:
      return [folder / n for n in names]
  return sorted(folder.glob("*.arrow"))


def _arrow_batches(path: storage.Path) -> Iterator[Any]:
  """The record batches of one arrow stream file: memory-mapped when local, streamed from a URL."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  opened = storage.as_path(path).open("rb") if storage.is_url(path) else pa.memory_map(os.fspath(path))
  try:
    with opened as source:
      yield from pa.ipc.open_stream(source)
  except pa.ArrowInvalid as e:
    raise ValueError(f"{os.fspath(path)}: not a Hugging Face arrow file ({e})") from e


def _iter_arrow(folder: storage.Path) -> Iterator[dict[str, Any]]:
  for path in _arrow_files(folder):
    for batch in _arrow_batches(path):
      yield from batch.to_pylist()


def _iter_hub(loc: SplitLocation) -> Iterator[dict[str, Any]]:
  datasets = importlib.import_module("datasets")
  yield from datasets.load_dataset(loc.dataset, loc.subset, split=loc.split)


def iter_records(dataset: str, subset: str | None, split: str,
                 root: os.PathLike | None = None) -> Iterator[dict[str, Any]]:
  """Yields the examples of one split in file order.

  Raises:
    DatasetNotFoundError: see `locate` (raised before the first example, not lazily).
    ValueError: a malformed line or file, naming the file and line.
  """
  loc = locate(dataset, subset, split, root)
  if loc.kind == "jsonl":
    return _iter_jsonl(loc.path)
  if loc.kind == "arrow":
    return _iter_arrow(loc.path)
  if loc.kind == "tfds":
    return tfds_records.iter_records(tfds_records.locate(dataset, subset, split))
  return _iter_hub(loc)


def iter_located(dataset: str, subset: str | None, split: str,
                 root: os.PathLike | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
  """`iter_records` with where each example is, for messages: "<file>: line N" (JSON lines, a URL
  included), "<folder>: row N" (arrow), "<folder>: example N" (TFDS) or
  "<dataset> split <split>: example N" (the hub); N counts from 1 for lines and from 0 otherwise.
  """
  loc = locate(dataset, subset, split, root)
  if loc.kind == "jsonl":
    return ((f"{os.fspath(loc.path)}: line {n}", record) for n, record in _iter_jsonl_lines(loc.path))
  name = f"{dataset}{'/' + subset if subset else ''} split {split}" if loc.kind == "hub" else os.fspath(loc.path)
  unit = "row" if loc.kind == "arrow" else "example"
  return ((f"{name}: {unit} {i}", record)
          for i, record in enumerate(iter_records(dataset, subset, split, root)))


@dataclasses.dataclass(frozen=True)
class SplitCount:
  """Examples in a local split file, and its malformed lines (JSON lines only)."""

  location: SplitLocation
  examples: int
  bad_lines: tuple[int, ...] = ()


def _file_version(path: storage.Path) -> tuple[int, int]:
  """(size, modification time) of a file: in nanoseconds when local, as the store keeps it at a URL."""
  if storage.is_url(path):
    stat = path.stat()
    return stat.length, stat.mtime
  stat = os.stat(path)
  return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=256)
def _count_jsonl(path: str, size: int, mtime: int) -> tuple[int, tuple[int, ...]]:
  """(good lines, bad line numbers) of a JSON-lines file; cached per file version (size, mtime), as
  every template of a dataset counts the same file."""
  del size, mtime  # part of the cache key only
  good, bad = 0, []
  with storage.as_path(path).open("rb") as f:
    for line_no, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        ok = isinstance(json.loads(raw.decode("utf-8")), dict)
      except (json.JSONDecodeError, UnicodeDecodeError):  # a line that is not UTF-8 is a bad line too
        ok = False
      if ok:
        good += 1
      else:
        bad.append(line_no)
  return good, tuple(bad)


def count_split(dataset: str, subset: str | None, split: str, root: os.PathLike | None = None) -> SplitCount | None:
  """Counts a local split without failing on bad lines; None when the split is not on disk."""
  try:
    loc = locate(dataset, subset, split, root)
  except DatasetNotFoundError:
    return None
  if loc.kind == "jsonl":
    good, bad = _count_jsonl(os.fspath(loc.path), *_file_version(loc.path))
    return SplitCount(loc, good, bad)
  if loc.kind == "arrow":
    rows = sum(batch.num_rows for path in _arrow_files(loc.path) for batch in _arrow_batches(path))
    return SplitCount(loc, rows)
  if loc.kind == "tfds":
    examples = tfds_records.count(tfds_records.locate(dataset, subset, split))
    return None if examples is None else SplitCount(loc, examples)
  return None

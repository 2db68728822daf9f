"""Dataset records from prepared TFDS data, in the field layout of the Hugging Face datasets.

The promptsource templates are written against the Hugging Face (HF) fields, so every TFDS example is
mapped to the HF record of the same example: the HF field names, value types and label conventions
(`FIELD_MAPS`, one per dataset, checked against each builder's feature spec in tensorflow_datasets
4.9.10). A field the templates need that TFDS lacks (story_cloze's four input sentences, hellaswag's
ctx_a / ctx_b) is left out, and so is a dataset TFDS does not have; docs/design.md has the table.

Where: `$ROSPR_TFDS_DIR` is a TFDS `data_dir` (`<dir>/<name>/<config>/<version>/dataset_info.json`
and its record files, as `tfds build` or `download_and_prepare` leave them). `records.locate` reads
a split from it when `$ROSPR_DATA_DIR` has no JSON-lines or arrow file for it.

Never the network: presence is checked on the local file system before TFDS is imported; TFDS is
then called with `try_gcs=False`, its GCS switch (`gcs_utils._is_gcs_disabled`) held on, an explicit
version and `data_dir` (so only prepared files are read), and never `download_and_prepare`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterator, Mapping

ENV = "ROSPR_TFDS_DIR"


def tfds_dir() -> pathlib.Path | None:
  value = os.environ.get(ENV)
  return pathlib.Path(value) if value else None


# ---------------------------------------------------------------------------------------------------
# Field maps.


def _winogrande_answer(label: int) -> str:
  """TFDS ClassLabel(['1', '2']) (-1 on test) -> HF's answer string ('' on test)."""
  return "" if label < 0 else ("1", "2")[label]


def _hellaswag_label(label: int) -> str:
  """TFDS int32 (-1 on test) -> HF's label string ('' on test)."""
  return "" if label < 0 else str(label)


@dataclasses.dataclass(frozen=True)
class FieldMap:
  """How one HF dataset (and subset) is read from TFDS.

  Attributes:
    dataset, subset: the HF names (`catalog.DatasetSpec.name`, `.subset`).
    splits: (HF split, TFDS `name[/config]`, TFDS split) for each split TFDS has.
    fields: (HF field, TFDS field, value converter or None), in HF's feature order.
    absent: HF fields that TFDS does not have (left out of the records).
  """

  dataset: str
  subset: str | None
  splits: tuple[tuple[str, str, str], ...]
  fields: tuple[tuple[str, str, Callable[[Any], Any] | None], ...]
  absent: tuple[str, ...] = ()

  @property
  def key(self) -> str:
    return f"{self.dataset}/{self.subset}" if self.subset else self.dataset

  def tfds_split(self, split: str) -> tuple[str, str] | None:
    """(TFDS `name[/config]`, TFDS split) of an HF split, or None if TFDS lacks it."""
    for hf_split, name, tfds_split in self.splits:
      if hf_split == split:
        return name, tfds_split
    return None

  def to_hf(self, example: Mapping[str, Any]) -> dict[str, Any]:
    """One TFDS example (plain Python values, see `to_python`) as the HF record."""
    out = {}
    for hf, tf_name, convert in self.fields:
      value = example[tf_name]
      out[hf] = convert(value) if convert is not None else value
    return out


def _same(*names: str) -> tuple[tuple[str, str, None], ...]:
  return tuple((n, n, None) for n in names)


_TVT = ("train", "validation", "test")


def _splits(tfds_name: str, *names: str, renamed: Mapping[str, str] | None = None):
  renamed = renamed or {}
  return tuple((n, tfds_name, renamed.get(n, n)) for n in names)


def _super_glue(subset: str, *fields: str) -> FieldMap:
  # TFDS super_glue builds each config from the same jsonl files as HF's super_glue, with the same
  # label ClassLabel names (copa's label is ClassLabel(['choice1', 'choice2']): 0 / 1 as in HF),
  # `idx` int32, -1 labels on test, and the same wsc.fixed span fixes.
  return FieldMap("super_glue", subset, _splits(f"super_glue/{subset}", *_TVT), _same(*fields, "idx", "label"))


FIELD_MAPS: tuple[FieldMap, ...] = (
    # Held-out targets.
    _super_glue("rte", "premise", "hypothesis"),
    _super_glue("cb", "premise", "hypothesis"),
    _super_glue("copa", "premise", "choice1", "choice2", "question"),
    _super_glue("wsc.fixed", "text", "span1_index", "span2_index", "span1_text", "span2_text"),
    _super_glue("wic", "word", "sentence1", "sentence2", "start1", "start2", "end1", "end2"),
    # HF anli: one dataset with splits train_r1 / dev_r1 / test_r1 ...; TFDS: configs r1 / r2 / r3 with
    # train / validation / test, built from the same anli_v0.1 files. Labels e / n / c = HF's
    # entailment / neutral / contradiction (0, 1, 2). TFDS has no `reason`.
    FieldMap("anli", None,
             tuple((f"{hf}_{r}", f"anli/{r}", tf) for r in ("r1", "r2", "r3")
                   for hf, tf in (("train", "train"), ("dev", "validation"), ("test", "test"))),
             (("uid", "uid", None), ("premise", "context", None), ("hypothesis", "hypothesis", None),
              ("label", "label", None)),
             absent=("reason",)),
    # TFDS hellaswag keeps only `ctx` (the joined context) of ctx_a / ctx_b / ctx, and no ind / split.
    FieldMap("hellaswag", None, _splits("hellaswag", *_TVT),
             (("activity_label", "activity_label", None), ("ctx", "context", None), ("endings", "endings", None),
              ("source_id", "source_id", None), ("split_type", "split_type", None),
              ("label", "label", _hellaswag_label)),
             absent=("ind", "ctx_a", "ctx_b", "split")),
    # HF winogrande_xl's train split is TFDS winogrande's train_xl (the same winogrande_1.1 files).
    FieldMap("winogrande", "winogrande_xl", _splits("winogrande", *_TVT, renamed={"train": "train_xl"}),
             (("sentence", "sentence", None), ("option1", "option1", None), ("option2", "option2", None),
              ("answer", "label", _winogrande_answer))),
    # T0 training sources.
    FieldMap("glue", "mrpc", _splits("glue/mrpc", *_TVT), _same("sentence1", "sentence2", "label", "idx")),
    FieldMap("glue", "qqp", _splits("glue/qqp", *_TVT), _same("question1", "question2", "label", "idx")),
    # TFDS labeled_final_tokenized reads the same final/{train,dev,test}.tsv as HF's paws; no `id`.
    FieldMap("paws", "labeled_final", _splits("paws_wiki/labeled_final_tokenized", *_TVT),
             _same("sentence1", "sentence2", "label"), absent=("id",)),
    FieldMap("cos_e", "v1.11", _splits("cos_e", "train", "validation"),
             _same("id", "question", "choices", "answer", "abstractive_explanation", "extractive_explanation")),
    FieldMap("cosmos_qa", None, _splits("cosmos_qa", *_TVT),
             _same("id", "context", "question", "answer0", "answer1", "answer2", "answer3", "label")),
    FieldMap("qasc", None, _splits("qasc", *_TVT),
             _same("id", "question", "choices", "answerKey", "fact1", "fact2", "combinedfact",
                   "formatted_question")),
    FieldMap("imdb", None, _splits("imdb_reviews/plain_text", "train", "test", "unsupervised"),
             _same("text", "label")),
    FieldMap("samsum", None, _splits("samsum", *_TVT), _same("id", "dialogue", "summary")),
    FieldMap("trec", None, _splits("trec", "train", "test"), _same("label-coarse", "label-fine", "text")),
)

_BY_KEY = {(m.dataset, m.subset): m for m in FIELD_MAPS}


def field_map(dataset: str, subset: str | None) -> FieldMap | None:
  return _BY_KEY.get((dataset, subset))


# ---------------------------------------------------------------------------------------------------
# Finding prepared data (file system only).


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """A prepared TFDS split: `<root>/<name>[/<config>]/<version>/`."""

  field_map: FieldMap
  root: pathlib.Path
  name: str  # `name[/config]`
  version: str
  split: str

  @property
  def folder(self) -> pathlib.Path:
    return self.root / self.name / self.version


_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def _split_lengths(info_file: pathlib.Path) -> dict[str, int] | None:
  """{split: examples} from a dataset_info.json (None if it lists no splits or is unreadable)."""
  try:
    info = json.loads(info_file.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None
  splits = info.get("splits") if isinstance(info, dict) else None
  if not splits:
    return None
  out = {}
  for s in splits:
    lengths = s.get("shardLengths") or []
    out[s.get("name")] = sum(int(n) for n in lengths)
  return out


def locate(dataset: str, subset: str | None, split: str, root: os.PathLike | None = None) -> TfdsSplit | None:
  """The prepared TFDS split holding an HF split, or None (no map, no data, or no such split there).

  The newest version folder with a dataset_info.json is used; when that file lists its splits, the
  split must be among them.
  """
  base = pathlib.Path(root) if root is not None else tfds_dir()
  fmap = field_map(dataset, subset)
  if base is None or fmap is None:
    return None
  target = fmap.tfds_split(split)
  if target is None:
    return None
  name, tfds_split = target
  folder = base / name
  if not folder.is_dir():
    return None
  versions = sorted((p.name for p in folder.iterdir()
                     if _VERSION.match(p.name) and (p / "dataset_info.json").is_file()),
                    key=lambda v: tuple(int(x) for x in v.split(".")))
  if not versions:
    return None
  lengths = _split_lengths(folder / versions[-1] / "dataset_info.json")
  if lengths is not None and tfds_split not in lengths:
    return None
  return TfdsSplit(fmap, base, name, versions[-1], tfds_split)


def expected_folder(dataset: str, subset: str | None, split: str,
                    root: os.PathLike | None = None) -> str | None:
  """Where prepared TFDS data for an HF split would be looked for (for error messages), or None."""
  fmap = field_map(dataset, subset)
  target = fmap.tfds_split(split) if fmap else None
  if target is None:
    return None
  base = pathlib.Path(root) if root is not None else tfds_dir()
  where = f"{base}/{target[0]}" if base is not None else f"$ROSPR_TFDS_DIR/{target[0]}"
  return f"{where}/<version>/ (TFDS {target[0]}, split {target[1]!r})"


def count(loc: TfdsSplit) -> int | None:
  """Examples of the split from its dataset_info.json (no TFDS import)."""
  lengths = _split_lengths(loc.folder / "dataset_info.json")
  return None if lengths is None else lengths.get(loc.split)


# ---------------------------------------------------------------------------------------------------
# Reading.


def to_python(value: Any) -> Any:
  """`tfds.as_numpy` values as plain Python: bytes -> str, numpy scalars -> int / float / bool,
  arrays -> lists, dicts (Sequence of a dict) recursively."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(value, dict):
    return {k: to_python(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return [to_python(v) for v in value.tolist()] if value.ndim else to_python(value.item())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (list, tuple)):
    return [to_python(v) for v in value]
  return value


def _offline_tfds():
  """tensorflow_datasets with its GCS lookups switched off."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.utils import gcs_utils  # pylint: disable=g-import-not-at-top
  gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
  return tfds


def iter_records(loc: TfdsSplit) -> Iterator[dict[str, Any]]:
  """The split's examples as HF records, in file order."""
  tfds = _offline_tfds()
  builder = tfds.builder(loc.name, data_dir=str(loc.root), version=loc.version, try_gcs=False)
  ds = builder.as_dataset(split=loc.split, shuffle_files=False,
                          read_config=tfds.ReadConfig(interleave_cycle_length=1))

  def generate():
    for example in tfds.as_numpy(ds):
      yield loc.field_map.to_hf(to_python(example))

  return generate()

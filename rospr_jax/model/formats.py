"""Checkpoint formats, registered: how a checkpoint of each is recognized, read, located and written.

A format is one `CheckpointFormat`, registered by the module that reads and writes it
(`register(CheckpointFormat(...))`: `hf_checkpoint.py`, `t5x_checkpoint.py`). `model/checkpoints.py`
(load, fingerprint, the manifest check) and `rospr convert` reach the formats through this registry
only, so a new format is one module that registers itself and is imported by `model/checkpoints.py`
(as a backbone family is one `register_family`). `tests/model/format_registry_test.py` registers a
throwaway format and converts through it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rospr_jax.model.config import T5Config
from rospr_jax.registry import Registry

# open(path) -> (the checked config, the stream of (T5X name, tensor as stored)), reading no tensor yet.
Open = Callable[[Path], tuple[T5Config, Iterator[tuple[str, np.ndarray]]]]


@dataclasses.dataclass(frozen=True)
class WriteOptions:
  """What a format's writer is asked by `rospr convert` (each format reads the options it has).

  Attributes:
    source: the checkpoint converted (a local folder; a writer may copy files of it, as a Hugging Face
      source's tokenizer files).
    vocabulary: the source's SentencePiece model, copied along so the result loads without --vocab.
    step: the step number of a format that records one (T5X's `checkpoint_<step>`).
    max_shard_bytes: the largest weight file of a format that shards (None: its default).
    manifest_facts: facts for the written checkpoint's manifest.json (the weights' fingerprint).
  """
  source: Path
  vocabulary: Path | None = None
  step: int = 0
  max_shard_bytes: int | None = None
  manifest_facts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
  """One checkpoint format.

  Attributes:
    name: its name (`rospr convert --format`, the message `converted A (hf) -> B (t5x)`).
    kind: the manifest's "kind" of a checkpoint of it that this project writes.
    layout: what a checkpoint of it looks like, for messages ("T5X: checkpoint_<step>/checkpoint").
    destination: what `rospr convert --to` names for it ("the directory to create").
    recognizes: path -> whether it is (or claims to be) a checkpoint of this format; never raises.
    missing: what a folder lacks to be one, for the message naming a folder no format recognizes.
    open: `Open`: the checked config and the tensor stream.
    folder: path -> the folder that holds its files and the manifest.json its writer leaves.
    files: path -> the files its weights are read from (the fingerprint cache's key).
    write: (folder, config, params, `WriteOptions`) -> the written checkpoint's folder.
  """
  name: str
  kind: str
  layout: str
  destination: str
  recognizes: Callable[[Path], bool]
  missing: str
  open: Open
  folder: Callable[[Path], Path]
  files: Callable[[Path], list[Path]]
  write: Callable[[Path, T5Config, Any, WriteOptions], Path]


FORMATS = Registry("checkpoint format", ("name", "kind"))  # in registration order (the order of recognition)


def register(checkpoint_format: CheckpointFormat) -> CheckpointFormat:
  """Adds a format; its name and kind must be new."""
  return FORMATS.add(checkpoint_format)


def get(name: str) -> CheckpointFormat:
  return FORMATS.named(name)


def format_of(path) -> CheckpointFormat:
  """The format of the checkpoint at `path`, the first registered one that recognizes it; a path that
  is none is refused in one line naming it and what each format would need."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no such checkpoint.")
  for checkpoint_format in FORMATS.values():
    if checkpoint_format.recognizes(path):
      return checkpoint_format
  if path.is_file():
    layouts = "; ".join(f.layout for f in FORMATS.values())
    raise ValueError(f"{path}: expected a checkpoint directory ({layouts}), got a file.")
  raise FileNotFoundError(f"{path}: " + "; ".join(f.missing for f in FORMATS.values()) + ".")

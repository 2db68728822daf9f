"""Training batches from tokenized examples: seeded shuffling, fixed shapes, a resumable position.

The trainer consumes an iterator of numpy batches

    {"inputs": [B, T] int32, "targets": [B, L] int32, "source_ids": [B] int32}

and never imports TensorFlow. `SourceExamples` holds the tokenized examples of S sources (from SeqIO
tasks via `seqio_input.py`, from a JSONL file via `read_jsonl`, or built by a test), and `BatchIterator`
turns them into batches.

Order: the example stream is an endless sequence of epochs, each a permutation of all examples drawn
from `numpy.random.default_rng([seed, epoch])`; batch i holds stream items i*B .. i*B + B - 1 (a batch
may straddle two epochs). Batch i is therefore a function of (examples, seed, i) alone, and a run that
resumes at position i sees exactly the batches an uninterrupted run would.

Shapes: inputs are cut to T tokens; targets longer than L keep their first L - 1 tokens and their final
EOS (SeqIO's trim-then-append). Truncations are counted and logged once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Iterator, Sequence

import numpy as np

from rospr_jax import storage
from rospr_jax.model.config import EOS_ID

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Example:
  """One tokenized example: inputs without EOS, targets with EOS."""
  source_id: int
  inputs: Sequence[int]
  targets: Sequence[int]


@dataclasses.dataclass
class SourceExamples:
  """The training examples of S named sources; `examples[i].source_id` indexes `names`."""
  names: list[str]
  examples: list[Example]
  vocabulary: str | None = None  # the SentencePiece model the ids come from, when known
  merged_from: list[str] | None = None  # the sources `as_one_source` mapped to the one source, if it did

  def __post_init__(self):
    if len(set(self.names)) != len(self.names):
      dup = sorted({n for n in self.names if self.names.count(n) > 1})
      raise ValueError(f"Duplicate source names {dup}.")
    for i, ex in enumerate(self.examples):
      if not 0 <= ex.source_id < len(self.names):
        raise ValueError(f"Example {i} has source id {ex.source_id}; there are {len(self.names)} sources.")
      if len(ex.targets) == 0 or not any(int(t) > 0 for t in ex.targets):
        raise ValueError(f"Example {i} (source {self.names[ex.source_id]!r}) has no target tokens.")

  def digest(self) -> str:
    """16 hex digits of the names and every example's source and tokens: a run resumed on other data
    (whose data position would carry into other examples) is refused."""
    h = hashlib.sha256(json.dumps(list(self.names)).encode())
    for ex in self.examples:
      h.update(f"{ex.source_id}|{list(ex.inputs)}|{list(ex.targets)};".encode())
    return h.hexdigest()[:16]

  def counts(self) -> np.ndarray:
    """[S] examples per source."""
    return np.bincount([ex.source_id for ex in self.examples], minlength=len(self.names))

  def check_token_ids(self, vocab_size: int) -> None:
    """Raises naming the first example with a token id outside [0, vocab_size): examples tokenized with
    a vocabulary that is not the backbone's (JAX's embedding lookup returns NaN there, not an error)."""
    for field in ("inputs", "targets"):
      arrays = [np.asarray(getattr(ex, field)) for ex in self.examples]
      if not arrays:
        continue
      ids = np.concatenate(arrays)
      if ids.size == 0 or (ids.min() >= 0 and ids.max() < vocab_size):
        continue
      i = next(i for i, a in enumerate(arrays) if a.size and (a.min() < 0 or a.max() >= vocab_size))
      bad = [int(t) for t in arrays[i] if not 0 <= t < vocab_size]
      raise ValueError(f"Example {i} (source {self.names[self.examples[i].source_id]!r}) has {field} token "
                       f"ids {bad[:5]} outside the backbone's vocabulary of {vocab_size}: were the "
                       f"examples tokenized with another vocabulary?")

  def check_every_source_has_examples(self) -> None:
    empty = [n for n, c in zip(self.names, self.counts()) if c == 0]
    if empty:
      raise ValueError(f"Sources without training examples: {empty}.")


MULTITASK_SOURCE = "multitask"  # the one source of a multitask prompt run


def as_one_source(data: SourceExamples, name: str = MULTITASK_SOURCE) -> SourceExamples:
  """Every example of `data` mapped to one source `name`: the multitask prompt (SPoT's multi-task
  source prompt, ATTEMPT's shared prompt), trained on the union of the sources.

  The examples and their order are kept, so the batch stream (`BatchIterator`: a function of the
  examples, the seed and the position) is the one per-source prompts see, each source in the same
  proportion; only the prompt each example trains changes. `merged_from` lists the sources merged.
  """
  examples = [Example(0, ex.inputs, ex.targets) for ex in data.examples]
  return SourceExamples([name], examples, data.vocabulary, merged_from=list(data.names))


def _fit(ids: Sequence[int], length: int, keep_eos: bool) -> tuple[np.ndarray, bool]:
  """Pads or truncates `ids` to `length`; returns (array [length], truncated)."""
  ids = np.asarray(ids, np.int32)
  out = np.zeros(length, np.int32)
  if len(ids) <= length:
    out[:len(ids)] = ids
    return out, False
  out[:] = ids[:length]
  if keep_eos and ids[-1] == EOS_ID:
    out[-1] = EOS_ID
  return out, True


class BatchIterator:
  """Endless, seeded, resumable batches of fixed shape (see the module docstring).

  `position` is the number of batches taken so far; save it with a checkpoint and pass it back to
  resume.
  """

  def __init__(self, data: SourceExamples, *, batch_size: int, input_length: int, target_length: int,
               seed: int = 0, position: int = 0, shuffle: bool = True):
    if not data.examples:
      raise ValueError("No training examples.")
    if batch_size < 1 or input_length < 1 or target_length < 1:
      raise ValueError(f"batch_size ({batch_size}), input_length ({input_length}) and target_length "
                       f"({target_length}) must be >= 1.")
    if position < 0:
      raise ValueError(f"position must be >= 0, got {position}.")
    self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
    self.position = position
    n = len(data.examples)
    self.inputs = np.zeros((n, input_length), np.int32)
    self.targets = np.zeros((n, target_length), np.int32)
    self.source_ids = np.asarray([ex.source_id for ex in data.examples], np.int32)
    cut_inputs = cut_targets = 0
    for i, ex in enumerate(data.examples):
      self.inputs[i], a = _fit(ex.inputs, input_length, keep_eos=False)
      self.targets[i], b = _fit(ex.targets, target_length, keep_eos=True)
      cut_inputs, cut_targets = cut_inputs + a, cut_targets + b
    if cut_inputs or cut_targets:
      logger.warning("Truncated %d of %d inputs to %d tokens and %d targets to %d tokens.",
                      cut_inputs, n, input_length, cut_targets, target_length)
    self.truncated = {"inputs": cut_inputs, "targets": cut_targets}
    self._order_epoch = -1
    self._order = np.arange(n)

  @property
  def num_examples(self) -> int:
    return len(self.source_ids)

  def _epoch_order(self, epoch: int) -> np.ndarray:
    if epoch != self._order_epoch:
      n = self.num_examples
      self._order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                     else np.arange(n))
      self._order_epoch = epoch
    return self._order

  def batch_at(self, position: int) -> dict[str, np.ndarray]:
    """Batch number `position` of the stream."""
    items = position * self.batch_size + np.arange(self.batch_size)
    epochs, within = np.divmod(items, self.num_examples)
    rows = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(epochs):
      where = epochs == epoch
      rows[where] = self._epoch_order(int(epoch))[within[where]]
    return {"inputs": self.inputs[rows], "targets": self.targets[rows], "source_ids": self.source_ids[rows]}

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.batch_at(self.position)
    self.position += 1
    return batch


def read_jsonl(path: str, vocabulary: str | None = None,
               sources: Sequence[str] | None = None) -> SourceExamples:
  """Reads examples from a JSON-lines file, one `{"source": name, "inputs": ..., "targets": ...}` a line.

  `inputs` / `targets` are token id lists (targets ending in EOS), or strings, which are tokenized with
  the SentencePiece model `vocabulary` (inputs without EOS, targets with EOS). Sources are numbered in
  order of first appearance unless `sources` fixes the list (then a line naming another is an error).
  """
  storage.require_local(vocabulary, "VOCABULARY", "read_jsonl")  # the run file hands it a local copy
  if not storage.as_path(path, "EXAMPLES_FILE").is_file():  # read where it is, a URL (gs://...) too
    raise FileNotFoundError(f"Examples file not found: {path}")
  tokenizer = None
  names: list[str] = list(sources or [])
  index = {n: i for i, n in enumerate(names)}
  examples = []
  for line_no, line in storage.text_lines(path):
    if not line.strip():
      continue
    where = f"{path}:{line_no}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{where}: not JSON ({e.msg}).") from None
    if not isinstance(record, dict):
      raise ValueError(f"{where}: a JSON {type(record).__name__}, expected an object with source, inputs, targets.")
    missing = [k for k in ("source", "inputs", "targets") if k not in record]
    if missing:
      raise ValueError(f"{where}: missing keys {missing}.")
    name = record["source"]
    if not isinstance(name, str) or not name.strip():
      raise ValueError(f"{where}: source is {name!r}; every example names its source (a non-empty string).")
    if name not in index:
      if sources is not None:
        raise ValueError(f"{where}: source {name!r} is not among the configured sources.")
      index[name] = len(names)
      names.append(name)
    fields = []
    for key in ("inputs", "targets"):
      value = record[key]
      if isinstance(value, str):
        if vocabulary is None:
          raise ValueError(f"{where}: {key} is text; pass a SentencePiece vocabulary to tokenize it.")
        if tokenizer is None:
          from rospr_jax.tokenization import Tokenizer
          tokenizer = Tokenizer(vocabulary)
        value = tokenizer.encode_input(value) if key == "inputs" else tokenizer.encode_target(value)
      elif not (isinstance(value, list) and all(isinstance(t, int) and t >= 0 for t in value)):
        raise ValueError(f"{where}: {key} must be a string or a list of non-negative token ids.")
      fields.append(value)
    for key, ids in zip(("inputs", "targets"), fields):
      if not any(t not in (0, EOS_ID) for t in ids):  # "" tokenizes to nothing, or to EOS alone
        raise ValueError(f"{where}: {key} is empty; every example needs its text.")
    examples.append(Example(index[name], fields[0], fields[1]))
  return SourceExamples(names, examples)

"""What the evaluation scores and what it keeps: a rendered target, and one record per (target, method)
written as soon as it is scored, so that a killed run resumes.

    <records_dir>/<target>/<method>.json   {"method", "dataset", "template", "target", "examples",
                                            "skipped", "truncated_inputs", "target_digest",
                                            "accuracy", "correct",
                                            "predictions", "predictions_sha256",
                                            "selection_sha256" (retrieval methods and the oracle)}

`truncated_inputs` counts the examples whose input is longer than the model's input length (the
scorer keeps its first tokens), `predictions` are the chosen choice index of each example ([E]), `predictions_sha256` their digest
(`predictions_digest`), `correct` how many of them are right. A record is resumed only into a target
with the same examples (`Target.digest`), and only when it agrees with itself: its predictions match
their digest and index the target's choices, `correct` is what they score on the target's labels, and
`accuracy` is correct / examples; `selection_sha256` holds the sha256 of the files of the selection the
record was scored with (selection.json or oracle.json, and prompt.npy), checked when it is resumed. An
edited or damaged record or selection is refused, naming the file. On several hosts
process 0 alone reads and writes the records, and `read_records` broadcasts what it read, so that
every process skips the same pairs. Which pairs an evaluation asks for, and in what order, is the
caller's (`rospr_jax.pipeline.evaluate`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Callable, Mapping, Sequence

import numpy as np

from rospr_jax import multihost, storage

RECORDS_DIR = "records"  # under the output folder: one record per (target, method), for resuming


@dataclasses.dataclass(frozen=True)
class Target:
  """One evaluated (dataset, template): rendered examples with their answer choices."""
  name: str
  dataset: str
  template: str
  inputs: tuple[str, ...]                 # [E]
  choices: tuple[tuple[str, ...], ...]    # [E][C_e]
  is_correct: tuple[tuple[bool, ...], ...]  # [E][C_e]
  skipped: int = 0  # examples of the split the template skips by design (no target): not in E

  def digest(self) -> str:
    """16 hex digits of the examples (inputs, choices, correct flags): a record scored on other
    examples of the same target is never resumed into this one."""
    payload = json.dumps([self.name, self.inputs, self.choices, self.is_correct], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def path_name(name: str) -> str:
  """`name` as one path component (a target's or a method's folder or file)."""
  return re.sub(r"[^\w.+-]", "_", name)


def record_path(records_dir: str, target: str, method: str) -> str:
  return os.path.join(records_dir, path_name(target), path_name(method) + ".json")


def new_record(target: Target, method: str, examples: int, truncated_inputs: int = 0) -> dict:
  """The fields of a (target, method) record but its scores (`scored`); `truncated_inputs`: examples
  whose input was cut to the model's input length."""
  return {"method": method, "dataset": target.dataset, "template": target.template,
          "target": target.name, "examples": examples, "skipped": target.skipped,
          "truncated_inputs": truncated_inputs, "target_digest": target.digest()}


def predictions_digest(predictions: Sequence[int]) -> str:
  """sha256 of the predicted choice indices (as a JSON list of integers)."""
  return hashlib.sha256(json.dumps([int(p) for p in predictions]).encode("utf-8")).hexdigest()


def scored(target: Target, predictions: Sequence[int]) -> dict:
  """The score fields of a record: {"accuracy", "correct", "predictions", "predictions_sha256"}."""
  predictions = [int(p) for p in predictions]
  correct = sum(bool(flags[p]) for flags, p in zip(target.is_correct, predictions))
  return {"accuracy": correct / len(predictions), "correct": correct, "predictions": predictions,
          "predictions_sha256": predictions_digest(predictions)}


def files_sha256(directory: str, names: Sequence[str]) -> dict[str, str]:
  """{name: sha256} of the files `names` in `directory`: what a record of a retrieval method or the
  oracle records of the selection it was scored with (`selection_sha256`)."""
  return {name: storage.sha256_file(os.path.join(directory, name)) for name in names}


def read_record(path: str, target: Target, method: str, selection_dir: str | None = None) -> float:
  """The accuracy of a record written by an earlier run, checked against this run's target and
  against itself (its predictions, their digest, its count of correct ones) and, given the
  `selection_dir` it was scored with, against the sha256 of those files that it records."""
  def refuse(what: str) -> ValueError:
    return ValueError(f"Record {path} {what}; delete it to score {target.name} {method} again.")
  try:
    record = storage.read_json(path)
    accuracy = float(record["accuracy"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise refuse(f"is unreadable ({type(e).__name__}: {e})") from None
  if not 0.0 <= accuracy <= 1.0:
    raise refuse(f"holds accuracy {accuracy!r}, outside [0, 1]")
  if record.get("target_digest") != target.digest() or record.get("examples") != len(target.inputs):
    raise ValueError(
        f"Record {path} was scored on other examples of {target.name} ({record.get('examples')} "
        f"examples, digest {record.get('target_digest')}; now {len(target.inputs)}, {target.digest()}): "
        "the target data changed. Give another OUTPUT_DIR, or delete the records to start over.")
  predictions, correct = record.get("predictions"), record.get("correct")
  if not isinstance(predictions, list) or len(predictions) != len(target.inputs) or not all(
      type(p) is int and 0 <= p < len(c) for p, c in zip(predictions, target.choices)):
    raise refuse(f"does not hold one choice index per example of its {len(target.inputs)} (\"predictions\")")
  if record.get("predictions_sha256") != predictions_digest(predictions):
    raise refuse(f"holds predictions whose sha256 is {predictions_digest(predictions)}, not the "
                 f"{record.get('predictions_sha256')!r} it records: it was edited or damaged")
  expected = scored(target, predictions)
  if correct != expected["correct"]:
    raise refuse(f"counts {correct!r} correct examples, but its predictions get {expected['correct']} "
                 f"of {len(predictions)} right")
  if abs(accuracy - expected["accuracy"]) > 1e-12:
    raise refuse(f"holds accuracy {accuracy!r}, not its {correct} correct of {len(predictions)} examples "
                 f"({expected['accuracy']!r}): it was edited")
  recorded = record.get("selection_sha256") if selection_dir else None
  for name, digest in (recorded or {}).items():
    file = os.path.join(selection_dir, name)
    found = storage.sha256_file(file) if storage.as_path(file).is_file() else "no file"
    if found != digest:
      raise refuse(f"was scored with the selection file {file} of sha256 {digest}, which now has {found}: "
                   "the selection was edited or damaged")
  return expected["accuracy"]


def read_records(records_dir: str | None, pairs: Sequence[tuple[Target, str]],
                 selection_dir: Callable[[str, str], str | None] = lambda target, method: None
                 ) -> dict[tuple[str, str], float]:
  """{(target name, method): accuracy} of the `pairs` an earlier run already wrote to `records_dir`
  (`selection_dir(target name, method)`: where each pair's selection is, checked by `read_record`).

  Process 0 reads them and broadcasts the accuracies, so that on several hosts every process skips
  the same pairs (each scoring is a computation over all of them). A record process 0 refuses stops
  every process.
  """
  accuracies = np.full(len(pairs), np.nan)
  problem = ""
  if records_dir and multihost.is_writer():
    for i, (target, method) in enumerate(pairs):
      path = record_path(records_dir, target.name, method)
      if storage.as_path(path).exists():
        try:
          accuracies[i] = read_record(path, target, method, selection_dir(target.name, method))
        except ValueError as e:
          problem = str(e)
          break
  if multihost.broadcast(np.int32(bool(problem))):  # every process stops, not only process 0
    raise ValueError(problem or "process 0 refused a record of the output folder")
  accuracies = multihost.broadcast(accuracies)
  return {(t.name, m): float(a) for (t, m), a in zip(pairs, accuracies) if not np.isnan(a)}


def write_record(records_dir: str | None, record: Mapping) -> None:
  """Writes a scored record (process 0 only; nothing without `records_dir`)."""
  if records_dir and multihost.is_writer():
    storage.write_json(record_path(records_dir, record["target"], record["method"]), dict(record))

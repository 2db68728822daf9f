"""BIG-bench JSON tasks, read from the store `bigbench_sources` builds (`<cache>/bigbench/`).

The store is made from whatever form the user has (a google/BIG-bench checkout, Hugging Face parquet,
the old sdist, or GitHub): `rospr fetch --bigbench SOURCE` or `$ROSPR_BIGBENCH` (see
`bigbench_sources`). Every task.json read from it is checked against the sha256 its manifest records.

Examples are formatted as BIG-bench's own JSON task API formats a zero-shot multiple-choice query
(bigbench/api/json_task.py `default_format_fn`, and bbseqio for the SeqIO side), with each task's
(or subtask's) own prefixes (`bigbench_sources.query_text`):

  inputs  = strip(task_prefix + example_input_prefix + input
                  [+ choice_prefix + choice_prefix.join(permuted choices)]  # if append_choices_to_input
                  + example_output_prefix)
  choices = the keys of target_scores, in file order, each stripped; scores = their values [C].

Defaults: example_input_prefix "\\nQ: ", example_output_prefix "\\nA: ", choice_prefix "\\n  choice: ",
append_choices_to_input true (a non-empty string such as "false" counts as true, as in Python and
BIG-bench). The appended choices are `np.random.RandomState(42).permutation(sorted(choices))`, a fresh
generator per example, as BIG-bench does. Duplicate examples (equal JSON) are dropped, keeping order.
A container task (no "examples") reads its subtasks in sorted folder order.

Splits: "all" (every distinct example: what zero-shot targets are evaluated on), and "train" /
"validation" cut as bbseqio cuts one task: Python's `random.seed(42); random.shuffle`, then the last
max(20 %, 16) examples are validation (here the subtasks of a container task are cut together, since
some subtasks have fewer than 17 examples).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib
import random
import zipfile
from typing import Any, Sequence

from rospr_jax.data import bigbench_sources

BIGBENCH_SEED = 42
MIN_VALIDATION_EXAMPLES = 16
SPLITS = ("all", "train", "validation")


@dataclasses.dataclass(frozen=True)
class BigBenchExample:
  """One multiple-choice query.

  Attributes:
    inputs: the formatted query (task prefix, example prefixes, appended choices).
    choices: [C] answer texts, stripped.
    scores: [C] target scores; a choice is correct when its score is the maximum.
    target: the first choice with the maximum score (the training target when the task is a source;
      BIG-bench's free-text "target" field, used only by its generative metrics, is not read).
    subtask: the subtask the example came from, or None.
  """

  inputs: str
  choices: tuple[str, ...]
  scores: tuple[float, ...]
  target: str
  subtask: str | None = None

  @property
  def is_correct(self) -> tuple[bool, ...]:
    top = max(self.scores)
    return tuple(s == top for s in self.scores)


@dataclasses.dataclass
class LoadReport:
  """Examples kept, duplicates dropped and malformed examples skipped (with the first messages)."""

  kept: int = 0
  duplicates: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  messages: list = dataclasses.field(default_factory=list)

  def skip(self, reason: str, message: str) -> None:
    self.skipped[reason] += 1
    if len(self.messages) < 5:
      self.messages.append(message)

  @property
  def num_failed(self) -> int:
    return sum(self.skipped.values())

  def summary(self) -> str:
    lines = [f"{self.kept} kept, {self.duplicates} duplicates dropped, skipped: {dict(self.skipped) or 'none'}"]
    return "\n".join(lines + [f"  {m}" for m in self.messages])


class ExampleError(ValueError):
  """A malformed BIG-bench example; `reason` is a short category for counting."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def format_example(sample: dict[str, Any], task: dict[str, Any], where: str = "") -> BigBenchExample:
  """Formats one example with the prefixes of `task` (the task or subtask JSON holding it).

  Raises:
    ExampleError: no input, no target_scores, no choices, or no correct choice; names `where`.
  """
  if not isinstance(sample, dict) or not isinstance(sample.get("input"), str):
    raise ExampleError("no input", f"{where}: an example needs a string 'input'")
  scores = sample.get("target_scores")
  if not isinstance(scores, dict):
    raise ExampleError("no choices", f"{where}: the example has no 'target_scores' (not multiple choice)")
  if not scores:
    raise ExampleError("no choices", f"{where}: the example has no answer choices (empty 'target_scores')")
  try:
    values = [float(v) for v in scores.values()]
  except (TypeError, ValueError) as e:
    raise ExampleError("bad scores", f"{where}: target_scores must be numbers ({e})") from e
  if (len(values) == 1 and values[0] == 0) or (len(values) > 1 and max(values) <= min(values)):
    raise ExampleError("no correct choice", f"{where}: no correct choice (every target score is {values[0]})")
  keys = list(scores.keys())
  text = bigbench_sources.query_text(task, sample["input"], keys)
  target = keys[values.index(max(values))]
  return BigBenchExample(inputs=text, choices=tuple(k.strip() for k in keys), scores=tuple(values),
                         target=target.strip(), subtask=None)


class BigBenchStore:
  """The BIG-bench store (tasks.zip, index.json, manifest.json; default: `bigbench_sources.bigbench_dir()`).

  Raises (on construction): FileNotFoundError when BIG-bench is not configured (one line naming
  `rospr fetch --bigbench` and ROSPR_BIGBENCH); ValueError when index.json differs from its manifest.
  """

  def __init__(self, folder: pathlib.Path | None = None):
    self.folder = pathlib.Path(folder) if folder is not None else bigbench_sources.bigbench_dir()
    manifest = bigbench_sources.read_store_manifest(self.folder)  # index.json's sha256 checked
    self.source: dict = manifest["source"]
    self._sha256: dict[str, str] = manifest["files"]
    self.index: dict[str, dict] = json.loads((self.folder / "index.json").read_bytes())["tasks"]

  def __repr__(self) -> str:
    return f"BigBenchStore({str(self.folder)!r})"

  def _check(self, raw: bytes, name: str, expected: str | None) -> None:
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
      raise ValueError(f"BIG-bench store {self.folder}: {name} has sha256 {got[:16]}..., its manifest records "
                       f"{str(expected)[:16]}... (changed after the store was built); refusing it. Rebuild "
                       "the store: rospr fetch --bigbench SOURCE --force")

  def task_names(self, multiple_choice_only: bool = True) -> list[str]:
    return sorted(k for k, v in self.index.items() if v["multiple_choice"] or not multiple_choice_only)

  def info(self, task: str) -> dict:
    if task not in self.index:
      raise KeyError(f"BIG-bench has no JSON task {task!r} (the store has {len(self.index)} JSON tasks)")
    return self.index[task]

  def read_json(self, member: str) -> dict:
    with zipfile.ZipFile(self.folder / "tasks.zip") as zf:
      try:
        raw = zf.read(member)
      except KeyError as e:
        raise KeyError(f"{self.folder / 'tasks.zip'} has no {member} (only multiple-choice tasks are kept)") from e
    self._check(raw, f"tasks.zip:{member}", self._sha256.get(member))
    try:
      return json.loads(raw)
    except json.JSONDecodeError as e:
      raise ValueError(f"{self.folder / 'tasks.zip'}:{member} is not valid JSON: {e}") from e

  def parts(self, task: str) -> list[tuple[str | None, dict]]:
    """[(subtask name or None, task JSON)] in BIG-bench's order."""
    info = self.info(task)
    if not info["subtasks"]:
      return [(None, self.read_json(f"{task}/task.json"))]
    return [(sub, self.read_json(f"{task}/{sub}/task.json")) for sub in info["subtasks"]]

  def examples(self, task: str, report: LoadReport | None = None) -> list[BigBenchExample]:
    """Every distinct, well-formed example of a task, subtasks in order."""
    return examples_from_parts(task, self.parts(task), report)


def examples_from_parts(task: str, parts: Sequence[tuple[str | None, dict]],
                        report: LoadReport | None = None) -> list[BigBenchExample]:
  """Formats the examples of (subtask, task JSON) parts; malformed examples are counted in `report`."""
  report = report if report is not None else LoadReport()
  out = []
  for sub, data in parts:
    seen = set()
    raw_examples = data.get("examples")
    name = f"{task}/{sub}" if sub else task
    if not isinstance(raw_examples, list):
      report.skip("no examples", f"BIG-bench {name}: the task has no 'examples' list")
      continue
    for i, sample in enumerate(raw_examples):
      key = json.dumps(sample)
      if key in seen:
        report.duplicates += 1
        continue
      seen.add(key)
      try:
        example = format_example(sample, data, where=f"BIG-bench {name} example {i}")
      except ExampleError as e:
        report.skip(e.reason, str(e))
        continue
      out.append(dataclasses.replace(example, subtask=sub))
      report.kept += 1
  return out


def can_split(num_examples: int) -> bool:
  """Whether a task of `num_examples` examples has a train/validation cut (a validation part of at
  least MIN_VALIDATION_EXAMPLES and a non-empty train part)."""
  return max(int(0.2 * num_examples), MIN_VALIDATION_EXAMPLES) < num_examples


def split_examples(examples: Sequence[BigBenchExample], split: str) -> list[BigBenchExample]:
  """"all", or bbseqio's "train" / "validation" cut.

  Raises:
    ValueError: an unknown split, or too few examples for a validation cut.
  """
  if split == "all":
    return list(examples)
  if split not in SPLITS:
    raise ValueError(f"BIG-bench splits are {SPLITS}, got {split!r}")
  shuffled = list(examples)
  random.Random(BIGBENCH_SEED).shuffle(shuffled)
  num_validation = max(int(0.2 * len(shuffled)), MIN_VALIDATION_EXAMPLES)
  if num_validation >= len(shuffled):
    raise ValueError(f"{len(shuffled)} examples are too few for a train/validation split "
                     f"(validation takes {num_validation})")
  num_train = len(shuffled) - num_validation
  return shuffled[:num_train] if split == "train" else shuffled[num_train:]

"""Source instances as plain files, and the seeded draw of n instances per source.

Two JSONL layouts are read (one JSON value per line, blank lines skipped):

- one file per source: each line a JSON string (the rendered text) or an object with "text"
  (an optional "source" must then equal the source's name);
- one file for all sources: each line an object {"source": name, "text": rendered text}.

Targets' query files use objects {"text": ..., "choices": [...], "target": name} (choices are needed
by VAR only; the target, which `rospr tasks --show NAME --queries FILE` records on every line, is
checked against the one `rospr retrieve --target` names, so the queries of RTE never retrieve for CB).
A prompted task (`rospr_jax.data.prompted`, the layer under the SeqIO tasks) gives its texts directly:
`draw_task_texts` renders only the drawn examples, so a library of the 313 P3 sources does not
render the millions of examples of their training splits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Iterator, Sequence

import numpy as np

from rospr_jax import storage



@dataclasses.dataclass(frozen=True)
class SourceTexts:
  """A source's rendered training instances (dataset inputs with its own template) and prompt file."""

  name: str
  texts: Sequence[str]
  prompt_file: str | None = None
  prompt_file_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Query:
  """One unlabeled input of a target; `choices` (rendered answer choices) only for VAR; `target`: the
  target the queries file says it is of, if it says."""

  text: str
  choices: tuple[str, ...] | None = None
  target: str | None = None


def _json_lines(path: str) -> Iterator[tuple[int, object]]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"Input file not found: {path}")
  for line_no, line in storage.text_lines(path):
    if not line.strip():
      continue
    try:
      yield line_no, json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: line {line_no} is not valid JSON ({e.msg}).") from e


def _text(path: str, line_no: int, value: object) -> str:
  text = value.get("text") if isinstance(value, dict) else value
  if not isinstance(text, str):
    raise ValueError(f"{path}: line {line_no} has no string \"text\" (got {value!r:.80}).")
  if not text.strip():
    raise ValueError(f"{path}: line {line_no} has an empty text.")
  return text


def read_source_file(path: str, name: str) -> list[str]:
  """Texts of one source's file (JSON strings or {"text": ...} objects per line)."""
  texts = []
  for line_no, value in _json_lines(path):
    if isinstance(value, dict) and "source" in value and value["source"] != name:
      raise ValueError(f"{path}: line {line_no} belongs to source {value['source']!r}, but the file "
                       f"was given for source {name!r}.")
    texts.append(_text(path, line_no, value))
  if not texts:
    raise ValueError(f"{path}: no instances for source {name!r}.")
  return texts


def read_instances(path: str) -> dict[str, list[str]]:
  """Texts per source of a combined file ({"source": ..., "text": ...} per line), in file order."""
  by_source: dict[str, list[str]] = {}
  for line_no, value in _json_lines(path):
    if not isinstance(value, dict) or not isinstance(value.get("source"), str):
      raise ValueError(f"{path}: line {line_no} needs a string \"source\" and a \"text\".")
    by_source.setdefault(value["source"], []).append(_text(path, line_no, value))
  if not by_source:
    raise ValueError(f"{path}: no instances.")
  return by_source


def _query_target(path: str, line_no: int, value: object) -> str | None:
  """The target a query line names, or None."""
  found = value.get("target") if isinstance(value, dict) else None
  if found is not None and not isinstance(found, str):
    raise ValueError(f"{path}: line {line_no} has a \"target\" that is not a string (got {found!r:.80}).")
  return found


def _check_query_target(path: str, line_no: int, found: str | None, target: str | None,
                        first: tuple[int, str] | None) -> None:
  """Refuses a line of another target than `target` (--target) or than the `first` (line, target)."""
  if found is not None and target is not None and found != target:
    raise ValueError(f"{path}: line {line_no} is a query of the target {found!r}, not of --target {target!r}; "
                     f"give the queries of {target!r} (rospr tasks --show {target} --queries FILE writes them).")
  if found is not None and first is not None and found != first[1]:
    raise ValueError(f"{path}: line {line_no} is a query of the target {found!r}, line {first[0]} of "
                     f"{first[1]!r}; a queries file holds the queries of one target.")


def read_queries(path: str, target: str | None = None) -> list[Query]:
  """A target's inputs: {"text": ..., "choices": [...], "target": ...} objects (or JSON strings) per
  line. A line that names its target must name `target` (--target, when given) and the target of the
  other lines: a mismatch is refused naming the file, the line and both targets. Each query carries
  the target its file names (or `target`)."""
  queries, first = [], None
  for line_no, value in _json_lines(path):
    text = _text(path, line_no, value)
    found = _query_target(path, line_no, value)
    _check_query_target(path, line_no, found, target, first)
    first = first or ((line_no, found) if found is not None else None)
    choices = value.get("choices") if isinstance(value, dict) else None
    if choices is not None:
      if (not isinstance(choices, list) or not choices
          or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise ValueError(f"{path}: line {line_no} has \"choices\" that are not a non-empty list of "
                         "non-empty strings.")
      choices = tuple(choices)
    queries.append(Query(text, choices, found or target))
  if not queries:
    raise ValueError(f"{path}: no queries.")
  return queries


def source_seed(seed: int, name: str) -> list[int]:
  """The seed sequence of a source's draw: independent of the other sources and of their order."""
  return [int(seed), zlib.crc32(name.encode("utf-8"))]


def sample_texts(source: SourceTexts, n: int, seed: int) -> list[str]:
  """n of the source's texts drawn without replacement (all of them, in order, if it has <= n)."""
  if n < 1:
    raise ValueError(f"n (instances per source) must be >= 1; got {n}.")
  if len(source.texts) <= n:
    return list(source.texts)
  rng = np.random.default_rng(source_seed(seed, source.name))
  picked = np.sort(rng.choice(len(source.texts), size=n, replace=False))
  return [source.texts[i] for i in picked]


def draw_task_texts(task, split: str, n: int, seed: int) -> list[str]:
  """The inputs of n examples of a prompted task's split, drawn without rendering the whole split.

  `task` is any object with `name`, `count(split)` and `examples(split, positions=None)` (a
  `rospr_jax.data.prompted.PromptedTask`).

  The draw is a permutation of the split's positions seeded by `source_seed(seed, task.name)`; the
  result is the first n positions of it whose example renders to a non-blank input (examples the
  template skips by design, T0's empty-output rule, are passed over; a drawn example whose data the
  template cannot render, such as a missing field, is refused by the task as a ValueError naming its
  file and line), in permutation order. Each round renders only
  the positions it needs, in one pass over the split. A split whose size is unknown (a hub dataset)
  is rendered whole and drawn with `sample_texts`.

  Returns:
    min(n, non-blank examples) texts.
  """
  if n < 1:
    raise ValueError(f"n (instances per source) must be >= 1; got {n}.")
  count = task.count(split)
  if count is None:  # not on disk: read it whole (this also raises when the split is nowhere)
    texts = [ex.inputs for ex in task.examples(split) if ex.inputs.strip()]
    return sample_texts(SourceTexts(task.name, texts), n, seed)
  order = np.random.default_rng(source_seed(seed, task.name)).permutation(count)
  rank = np.empty(count, np.int64)  # position -> its place in the permutation
  rank[order] = np.arange(count)
  found: dict[int, str] = {}  # permutation rank -> text
  start = 0
  while len(found) < n and start < count:
    wanted = 2 * (n - len(found)) if start else n  # later rounds overshoot: drops come in runs
    chunk = {int(p) for p in order[start:start + wanted]}
    for example in task.examples(split, positions=chunk):  # idx: the example's position in the split
      if example.inputs.strip():
        found[int(rank[example.idx])] = example.inputs
    start += wanted
  return [found[r] for r in sorted(found)[:n]]

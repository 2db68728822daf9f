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
import re
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


CHARS_PER_TOKEN = 32  # characters of a text kept per input token: more than a vocabulary piece spans
_BYTES_PER_CHAR = 6  # the most bytes one character takes in a JSON line (an escape such as \\u00e9)
_LINE_SLACK = 4096  # bytes of a line beside its text ("source", keys, brackets)


@dataclasses.dataclass
class TextBound:
  """How much of each text a reader holds: its first `max_chars` characters (and of each line its first
  `max_line_bytes`, the rest skipped unread into memory), so that memory follows the model's input
  length, not the longest line. `cut` counts the texts cut."""

  max_chars: int
  cut: int = 0

  @classmethod
  def for_tokens(cls, max_length: int) -> "TextBound":
    """The bound of texts that are tokenized to their first `max_length` tokens."""
    return cls(max_length * CHARS_PER_TOKEN)

  @property
  def max_line_bytes(self) -> int:
    return self.max_chars * _BYTES_PER_CHAR + _LINE_SLACK

  def keep(self, text: str, cut: bool) -> str:
    """`text` to its first max_chars characters; counts it when it was cut (here, or its line)."""
    if cut or len(text) > self.max_chars:
      self.cut += 1
    return text[:self.max_chars]


def _bounded_lines(path: str, limit: int) -> Iterator[tuple[int, str, bool]]:
  """(line number, the line's first `limit` bytes as text, whether the line was longer) of `path`; the
  rest of a longer line is read a MiB at a time and dropped."""
  with storage.as_path(path).open("rb") as f:
    line_no = 0
    while raw := f.readline(limit + 1):
      line_no += 1
      cut = len(raw) > limit and not raw.endswith(b"\n")
      while cut and (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
        pass
      yield line_no, storage.decode_line(raw, path, line_no, cut=cut), cut


def _cut_string(text: str, start: int) -> str:
  """The JSON string that opens at `text[start - 1]` and is cut short (no closing quote): decoded, an
  escape cut in two and a lone high surrogate left out."""
  for end in range(len(text), max(start, len(text) - 12) - 1, -1):
    try:
      value = json.loads('"' + text[start:end] + '"')
    except json.JSONDecodeError:
      continue
    return value[:-1] if value and "\ud800" <= value[-1] <= "\udbff" else value
  raise ValueError("not a JSON string")


_SPACE, _COLON, _COMMA = re.compile(r"\s*"), re.compile(r"\s*:\s*"), re.compile(r"\s*,\s*")


def _skip(pattern: re.Pattern, text: str, at: int) -> int:
  match = pattern.match(text, at)
  if match is None:
    raise ValueError(f"unexpected {text[at:at + 10]!r}")
  return match.end()


def _cut_json(text: str) -> object:
  """The value of a JSON line cut short: a string, or an object whose cut member is a string (the
  members before it whole, those after it lost). ValueError when it is neither."""
  decoder, text = json.JSONDecoder(), text.lstrip()
  if text.startswith('"'):
    return _cut_string(text, 1)
  if not text.startswith("{"):
    raise ValueError("neither a JSON string nor an object")
  value, at = {}, _skip(_SPACE, text, 1)
  while True:
    if not text.startswith('"', at):
      raise ValueError("an object key is not a string")
    key, at = json.decoder.scanstring(text, at + 1)
    at = _skip(_COLON, text, at)
    if text.startswith('"', at):
      try:
        value[key], at = json.decoder.scanstring(text, at + 1)
      except json.JSONDecodeError:  # the cut member
        value[key] = _cut_string(text, at + 1)
        return value
    else:
      value[key], at = decoder.raw_decode(text, at)
    if not text[at:].strip(" \t\r\n}"):  # cut after its last member
      return value
    at = _skip(_COMMA, text, at)


def _line_value(path: str, line_no: int, line: str, cut: bool, bound: TextBound | None) -> object:
  """The JSON value of a line (of its first bytes, when it was `cut`), refused naming the line."""
  if not cut:
    try:
      return json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: line {line_no} is not valid JSON ({e.msg}).") from e
  try:
    return _cut_json(line)
  except ValueError:
    raise ValueError(f"{path}: line {line_no} is longer than the {bound.max_line_bytes} bytes read of a line, and "
                     "those do not hold a JSON string or an object whose long member is its text.") from None


def _json_lines(path: str, bound: TextBound | None = None) -> Iterator[tuple[int, object, bool]]:
  """(line number, JSON value, whether the line was cut) of each non-blank line; with `bound`, only a
  line's first `bound.max_line_bytes` are read."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Input file not found: {path}")
  lines = ((n, line, False) for n, line in storage.text_lines(path)) if bound is None else _bounded_lines(
      path, bound.max_line_bytes)
  for line_no, line, cut in lines:
    if line.strip():
      value = _line_value(path, line_no, line, cut, bound)
      yield line_no, value, cut


def _text(path: str, line_no: int, value: object, bound: TextBound | None = None, cut: bool = False) -> str:
  text = value.get("text") if isinstance(value, dict) else value
  if not isinstance(text, str):
    lost = " (the line is longer than the bytes read of it: write \"text\" last)" if cut else ""
    raise ValueError(f"{path}: line {line_no} has no string \"text\" (got {value!r:.80}){lost}.")
  if not text.strip():
    raise ValueError(f"{path}: line {line_no} has an empty text.")
  return text if bound is None else bound.keep(text, cut)


def read_source_file(path: str, name: str, bound: TextBound | None = None) -> list[str]:
  """Texts of one source's file (JSON strings or {"text": ...} objects per line), each within `bound`."""
  texts = []
  for line_no, value, cut in _json_lines(path, bound):
    if isinstance(value, dict) and "source" in value and value["source"] != name:
      raise ValueError(f"{path}: line {line_no} belongs to source {value['source']!r}, but the file "
                       f"was given for source {name!r}.")
    texts.append(_text(path, line_no, value, bound, cut))
  if not texts:
    raise ValueError(f"{path}: no instances for source {name!r}.")
  return texts


def read_instances(path: str, bound: TextBound | None = None) -> dict[str, list[str]]:
  """Texts per source of a combined file ({"source": ..., "text": ...} per line), in file order, each
  within `bound`."""
  by_source: dict[str, list[str]] = {}
  for line_no, value, cut in _json_lines(path, bound):
    if not isinstance(value, dict) or not isinstance(value.get("source"), str):
      lost = " (the line is longer than the bytes read of it: write \"source\" before \"text\")" if cut else ""
      raise ValueError(f"{path}: line {line_no} needs a string \"source\" and a \"text\"{lost}.")
    by_source.setdefault(value["source"], []).append(_text(path, line_no, value, bound, cut))
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
  for line_no, value, _ in _json_lines(path):
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

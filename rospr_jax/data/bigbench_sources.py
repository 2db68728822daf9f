"""BIG-bench from the forms users have, into one store (`<cache>/bigbench/`); none is needed at set-up.

A source (`rospr fetch --bigbench SOURCE`, or `$ROSPR_BIGBENCH`) is one of:

  checkout    a google/BIG-bench checkout: the repo root, its `bigbench/` or `bigbench/benchmark_tasks/`
              (`<task>/task.json`, a container's `<task>/<subtask>/task.json`; `bigbench/api/json_task.py`,
              BIG-bench's formatting code, is copied into the store when present).
  tasksource  Hugging Face parquet, tasksource/bigbench's layout: `<task>/{train,validation}-*.parquet`
              (or `<task>/default-*.parquet`); a split may also be a folder (`<task>/train/*.parquet`).
  hails       hails/bigbench's: `<task>_zero_shot/{default,train,validation}-*.parquet` or `.arrow`
              (Arrow IPC stream or file); other `<task>_<n>_shot` folders are ignored.
  sdist       the old `bigbench-1.0.0.tar.gz`, refused unless its sha256 is `archives.BIGBENCH`'s.
  github      `github`: google/BIG-bench's task files at GITHUB_COMMIT, a commit of main that other
              projects pin for these files (no machine here reaches GitHub to look up a newer one),
              streamed from the codeload tarball (`$ROSPR_BIGBENCH_GITHUB_URL`, `{commit}` filled in,
              overrides the URL). Nothing pins a tarball's bytes, so the sha256 of every task.json is
              recorded in the store's manifest at the first download and checked on every later read of
              the store (`bigbench.BigBenchStore`) and every later download of that commit (a changed
              file is refused, named).

Hugging Face rows (idx, inputs, targets, multiple_choice_targets, multiple_choice_scores) come
pre-formatted; `unformat_rows` turns them back into json_task form, exactly: the part it returns
renders (`query_text`) every row's inputs unchanged, else the verbatim part is used. The rows of all
split files are merged: equal (idx, inputs, choices, scores) rows are one, the rest stably sorted by
idx, taken as the example's position in its task (a container's subtasks in order, numbered on). Not
recoverable from rows: subtask names (a container read from parquet is one part, subtask None, and
duplicates across its subtasks are dropped); fractional scores where the files hold them as int32, as
the published ones do (0.5 arrives as 0). Scores stored as floats are kept: BIG-bench's target_scores
are numbers, and the correct choices are those of the highest score. Each row is checked as it is read
(`check_rows`): a field of another type or null, fewer or more scores than choices, or a choice given
twice is refused naming the file, the row, the task and the column (was: cut to one choice, which T0
and chance both got right).

The store: `tasks.zip` (every multiple-choice `<task>[/<subtask>]/task.json`), `index.json` (every task:
subtasks, multiple choice or not, counts), `json_task.py` if the source had it, `manifest.json` (source
{form, path or commit, key}; sha256 of every task.json read, of index.json, of parquet/arrow files or
the sdist). Written under a temporary name and renamed whole: two processes building it at once both
succeed, the last rename wins (equal contents).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pathlib
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Iterable, Sequence

import numpy as np

from rospr_jax import storage
from rospr_jax.data import archives, catalog

STORE_NAME = "bigbench"
STORE_KIND = "bigbench-store"
FORMAT_VERSION = 1
ENV_SOURCE = "ROSPR_BIGBENCH"
ENV_GITHUB_URL = "ROSPR_BIGBENCH_GITHUB_URL"
GITHUB_REPOSITORY = "google/BIG-bench"
GITHUB_COMMIT = "092b196c1f8f14a54bbc62f24759d43bde46dd3b"
GITHUB_URL = "https://codeload.github.com/google/BIG-bench/tar.gz/{commit}"
HF_FIELDS = ("idx", "inputs", "targets", "multiple_choice_targets", "multiple_choice_scores")
HF_SPLITS = ("default", "train", "validation")
SOURCE_HINT = ("give a google/BIG-bench checkout, a Hugging Face parquet folder (tasksource/bigbench or "
               "hails/bigbench) or bigbench-1.0.0.tar.gz: rospr fetch --bigbench PATH or ROSPR_BIGBENCH=PATH")
NOT_CONFIGURED = ("BIG-bench is not configured: give a source with `rospr fetch --bigbench PATH|github` or set "
                  "ROSPR_BIGBENCH (a google/BIG-bench checkout, a Hugging Face parquet folder, or "
                  "bigbench-1.0.0.tar.gz)")
DEFAULT_PREFIXES = {"example_input_prefix": "\nQ: ", "example_output_prefix": "\nA: ", "choice_prefix": "\n  choice: "}
_VERBATIM = {"task_prefix": "", "example_input_prefix": "", "example_output_prefix": "", "append_choices_to_input": False}
_TAR_TASK = re.compile(r"^[^/]+/bigbench/benchmark_tasks/([^/]+(?:/[^/]+)?)/task\.json$")
_TAR_REFERENCE = re.compile(r"^[^/]+/bigbench/api/json_task\.py$")

Parsed = dict[str, tuple[dict, bytes]]  # "<task>" or "<task>/<subtask>" -> (task JSON, its bytes)


class SourceError(ValueError):
  """A BIG-bench source that cannot be used (its message is one line that names it)."""


# ---------------------------------------------------------------------------------------------------
# The query rule (BIG-bench's `default_format_fn` as bbseqio feeds it) and its inverse for HF rows.


@functools.lru_cache(maxsize=None)
def permutation(n: int) -> tuple[int, ...]:
  """BIG-bench permutes the sorted choices with a fresh RandomState(42): the order depends on n only."""
  return tuple(int(i) for i in np.random.RandomState(seed=42).permutation(n))


def appended_order(keys: Iterable[str]) -> list[str]:
  ordered = sorted(keys)
  return [ordered[i] for i in permutation(len(ordered))]


def query_text(part: dict, text: str, keys: Sequence[str]) -> str:
  """strip(task_prefix + input_prefix + text [+ choice_prefix + choice_prefix.join(permuted keys)]
  + output_prefix), with `part`'s prefixes (DEFAULT_PREFIXES where absent); choices are appended when
  `append_choices_to_input` is truthy (a non-empty string such as "false" counts as true)."""
  ip, op, cp = (part.get(k, v) for k, v in DEFAULT_PREFIXES.items())
  if part.get("append_choices_to_input", True):
    text = text + cp + cp.join(appended_order(keys))
  return (str(part.get("task_prefix", "")) + ip + text + op).strip()


def _infer_choice_prefix(text: str, order: list[str]) -> str | None:
  """The separator s with s + s.join(order) in `text` (the rightmost such block), for >= 2 choices."""
  end = len(text)
  while len(order) >= 2 and (j := text.rfind(order[1], 0, end)) > 0:
    i = text.rfind(order[0], 0, j)
    sep = text[i + len(order[0]):j] if i >= 0 else ""
    if sep and text[:i].endswith(sep) and text.startswith(sep + sep.join(order), i - len(sep)):
      return sep
    end = j + len(order[1]) - 1
  return None


def unformat_rows(task: str, rows: Sequence[dict]) -> dict:
  """The json_task part of one Hugging Face task (rows merged, in idx order).

  Rule (each step taken only if it holds for every row, else the weaker one):
    1. choices: the block cp + cp.join(appended order of the choices) is found at its last place, with
       cp the default "\\n  choice: ", else the separator found in the first row with >= 2 choices;
       the text after it (the same in every row) is the output prefix ("\\nA:" is stored as "\\nA: ").
       Without a block: append_choices_to_input false, output prefix "\\nA: " if every row ends in "\\nA:".
    2. the text before: "Q: " + input, or task_prefix + "\\nQ: " + input with the same task_prefix in
       every row; else the whole text is the input (input prefix "").
    3. the part must render every row's inputs unchanged (`query_text`); else the verbatim part: the
       inputs as input, every prefix "" and no appended choices.
  A task whose rows have no choices is generative: examples {input, target}, metric exact_str_match.
  """
  if not rows or not all(r["multiple_choice_targets"] for r in rows):
    return {"name": task, "metrics": ["exact_str_match"], **_VERBATIM,
            "examples": [{"input": r["inputs"], "target": list(r["targets"] or [])} for r in rows]}
  texts = [r["inputs"] for r in rows]
  scores = [dict(zip(r["multiple_choice_targets"], r["multiple_choice_scores"])) for r in rows]  # checked: same lengths
  orders = [appended_order(s) for s in scores]
  cp = DEFAULT_PREFIXES["choice_prefix"]
  if not all(cp + cp.join(o) in t for t, o in zip(texts, orders)):
    cp = next((_infer_choice_prefix(t, o) for t, o in zip(texts, orders) if len(o) >= 2), None)
  cuts = [t.rfind(cp + cp.join(o)) if cp else -1 for t, o in zip(texts, orders)]
  tails = {t[c + len(cp + cp.join(o)):] for t, o, c in zip(texts, orders, cuts)} if cp else set()
  if not cp or min(cuts) < 0 or len(tails) != 1:
    cp, tail = None, ("\nA:" if all(t.endswith("\nA:") for t in texts) else "")
    heads = [t[:len(t) - len(tail)] for t in texts]
  else:
    tail, heads = tails.pop(), [t[:c] for t, c in zip(texts, cuts)]
  prefix, cut = "", 0
  if all(h.startswith("Q: ") for h in heads):
    cut = 3
  elif all("\nQ: " in h for h in heads) and len({h[:h.index("\nQ: ")] for h in heads}) == 1:
    prefix = heads[0][:heads[0].index("\nQ: ")]
    cut = len(prefix) + 4
  part = {"name": task, "metrics": ["multiple_choice_grade"], "task_prefix": prefix,
          "example_input_prefix": "\nQ: " if cut else "",
          "example_output_prefix": "\nA: " if tail == "\nA:" else tail,
          "choice_prefix": cp or DEFAULT_PREFIXES["choice_prefix"], "append_choices_to_input": cp is not None,
          "examples": [{"input": h[cut:], "target_scores": s} for h, s in zip(heads, scores)]}
  if any(query_text(part, e["input"], list(e["target_scores"])) != t for e, t in zip(part["examples"], texts)):
    part = {"name": task, "metrics": ["multiple_choice_grade"], **_VERBATIM,
            "examples": [{"input": t, "target_scores": s} for t, s in zip(texts, scores)]}
  return part


# ---------------------------------------------------------------------------------------------------
# Reading each form.


def _checkout_tasks_dir(path: pathlib.Path) -> pathlib.Path | None:
  return next((c for c in (path / "bigbench" / "benchmark_tasks", path / "benchmark_tasks", path) if c.is_dir()
               and any((d / "task.json").is_file() for d in c.iterdir() if d.is_dir())), None)


def _loads(raw: bytes, where: str) -> dict:
  try:
    return json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SourceError(f"{where} is not valid JSON: {e}") from None


def read_checkout(tasks_dir: pathlib.Path) -> tuple[Parsed, bytes | None]:
  """Every `<task>/task.json` and `<task>/<subtask>/task.json` below `benchmark_tasks`."""
  parsed: Parsed = {}
  for folder in sorted(d for d in tasks_dir.iterdir() if d.is_dir()):
    for path in [folder / "task.json"] + sorted(folder.glob("*/task.json")):
      if path.is_file():
        raw = path.read_bytes()
        parsed[path.parent.relative_to(tasks_dir).as_posix()] = (_loads(raw, str(path)), raw)
  reference = tasks_dir.parent / "api" / "json_task.py"
  return parsed, (reference.read_bytes() if reference.is_file() else None)


def read_tar(fileobj, where: str) -> tuple[Parsed, bytes | None]:
  """The task.json files (and json_task.py) of a BIG-bench tree in a .tar.gz, read front to back."""
  parsed, reference = {}, None
  with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
    for member in tar:
      match = _TAR_TASK.match(member.name) if member.isfile() else None
      if match:
        raw = tar.extractfile(member).read()
        parsed[match.group(1)] = (_loads(raw, f"{where}:{member.name}"), raw)
      elif member.isfile() and _TAR_REFERENCE.match(member.name):
        reference = tar.extractfile(member).read()
  if not parsed:
    raise SourceError(f"{where} holds no bigbench/benchmark_tasks/<task>/task.json; {SOURCE_HINT}")
  return parsed, reference


def _split_of(relative: pathlib.PurePath) -> str | None:
  names = ([relative.parts[0]] if len(relative.parts) > 1 else []) + [re.split(r"[-.]", relative.name)[0]]
  return next((n for n in names if n in HF_SPLITS), None)


def hf_task_files(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """{task: its parquet/arrow files of the default, train and validation splits} of an HF folder."""
  found = {}
  for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
    files = [p for pattern in ("*.parquet", "*.arrow", "*/*.parquet", "*/*.arrow")
             for p in sorted(folder.glob(pattern)) if _split_of(p.relative_to(folder))]
    if files:
      found[folder.name] = sorted(files, key=lambda p: (HF_SPLITS.index(_split_of(p.relative_to(folder))), p))
  if any(name.endswith("_zero_shot") for name in found):
    found = {name.removesuffix("_zero_shot"): v for name, v in found.items() if name.endswith("_zero_shot")}
  return found


def _is_number(value) -> bool:
  """A finite int or float (a bool is no score)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row_problem(row: dict) -> str | None:
  """What is wrong with one Hugging Face row (its column and why), or None."""
  if not isinstance(row["idx"], int) or isinstance(row["idx"], bool):
    return f"column idx holds {row['idx']!r}, not an integer"
  if not isinstance(row["inputs"], str):
    return f"column inputs holds {row['inputs']!r:.60}, not a string"
  lists = {f: row[f] if row[f] is not None else [] for f in HF_FIELDS[2:]}
  for field, value in lists.items():
    element_ok = _is_number if field == "multiple_choice_scores" else (lambda v: isinstance(v, str))
    kind = "finite numbers" if field == "multiple_choice_scores" else "strings"
    if not isinstance(value, list) or not all(element_ok(v) for v in value):
      return f"column {field} holds {value!r:.80}, not a list of {kind}"
  choices, scores = lists["multiple_choice_targets"], lists["multiple_choice_scores"]
  if len(scores) != len(choices):
    return (f"column multiple_choice_scores holds {len(scores)} scores for the {len(choices)} "
            "multiple_choice_targets")
  repeated = sorted({c for c in choices if choices.count(c) > 1})
  if repeated:
    return f"column multiple_choice_targets holds the choices {repeated} more than once"
  return None


def check_rows(rows: Sequence[dict], path: pathlib.Path, task: str) -> list[dict]:
  """Refuses (SourceError naming the file, the row, the task and the column) a row that would be read
  wrong: a field of another type or null where a value is needed, fewer or more scores than choices
  (zip would cut the choices), or a choice given twice (one would replace the other). Scores may be
  fractional (BIG-bench's target_scores are numbers; the correct choices are those of the maximum)."""
  for number, row in enumerate(rows):
    problem = _row_problem(row)
    if problem:
      raise SourceError(f"{path}: row {number} (idx {row['idx']!r}) of BIG-bench task {task}: {problem}; "
                        "fix or remove the row and fetch again.")
  return rows


def _read_rows(path: pathlib.Path, task: str) -> list[dict]:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    if path.suffix == ".parquet":
      table = pq.read_table(path)
    else:
      try:
        table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()  # what `datasets` writes
      except pa.ArrowInvalid:
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
  except (pa.ArrowException, OSError) as e:
    raise SourceError(f"{path} is not a readable {path.suffix[1:]} file: {e}") from None
  missing = [f for f in HF_FIELDS if f not in table.column_names]
  if missing:
    raise SourceError(f"{path} lacks the BIG-bench fields {missing} (it has {table.column_names})")
  return check_rows(table.select(list(HF_FIELDS)).to_pylist(), path, task)


def merge_rows(tables: Iterable[list[dict]]) -> list[dict]:
  """Rows of all split files: equal (idx, inputs, choices, scores) rows once, stably sorted by idx."""
  unique: dict[str, dict] = {}
  for r in (r for rows in tables for r in rows):
    unique.setdefault(json.dumps([r[f] for f in HF_FIELDS if f != "targets"]), r)
  return sorted(unique.values(), key=lambda r: r["idx"])


def read_hf(root: pathlib.Path, files: dict[str, list[pathlib.Path]]) -> tuple[Parsed, dict[str, str]]:
  """(parts, {file relative to root: sha256}) of a Hugging Face folder."""
  parsed: Parsed = {}
  hashes = {p.relative_to(root).as_posix(): storage.sha256_file(p) for paths in files.values() for p in paths}
  for task, paths in files.items():
    part = unformat_rows(task, merge_rows(_read_rows(p, task) for p in paths))
    parsed[task] = (part, json.dumps(part, ensure_ascii=False, indent=1).encode("utf-8"))
  return parsed, hashes


def download_github(url: str | None = None) -> tuple[Parsed, bytes | None]:
  """The task files of google/BIG-bench at GITHUB_COMMIT, streamed from its tarball (ConnectionError,
  one line naming what to do, when the host cannot be reached or the download breaks off)."""
  url = (url or os.environ.get(ENV_GITHUB_URL) or GITHUB_URL).format(commit=GITHUB_COMMIT)
  host = urllib.parse.urlsplit(url).netloc or url
  try:
    with urllib.request.urlopen(url, timeout=60) as response:
      return read_tar(response, url)
  except (urllib.error.URLError, OSError, tarfile.TarError, EOFError) as e:
    reason = getattr(e, "reason", None) or e
    raise ConnectionError(f"cannot download {GITHUB_REPOSITORY}@{GITHUB_COMMIT[:12]} from {host} "
                          f"({reason}); give a checkout, parquet folder or sdist: rospr fetch --bigbench "
                          "PATH or ROSPR_BIGBENCH=PATH") from None


# ---------------------------------------------------------------------------------------------------
# The store.


def _is_multiple_choice(task: dict) -> bool:
  """BIG-bench's own rule: scored by multiple_choice_grade, every example has target_scores."""
  examples = task.get("examples") or []
  return "multiple_choice_grade" in task.get("metrics", []) and bool(examples) and all(
      isinstance(e, dict) and "target_scores" in e for e in examples)


def index_tasks(parsed: Parsed) -> dict[str, dict]:
  """{task: subtasks, multiple_choice, num_examples, num_distinct_examples}. A task.json without
  "examples" is a container: its subtasks are the task.json files one folder below, sorted."""
  tasks = {}
  for name in sorted(k for k in parsed if "/" not in k):
    data = parsed[name][0]
    if "examples" in data:
      parts = [(None, data)]
    else:
      parts = [(k.split("/", 1)[1], parsed[k][0]) for k in sorted(parsed) if k.startswith(name + "/")]
    if not parts:
      continue
    tasks[name] = {
        "subtasks": [s for s, _ in parts if s is not None],
        "multiple_choice": all(_is_multiple_choice(d) for _, d in parts),
        "num_examples": sum(len(d.get("examples", [])) for _, d in parts),
        "num_distinct_examples": sum(len({json.dumps(e) for e in d.get("examples", [])}) for _, d in parts),
    }
  return tasks


def check_registered_names(tasks: dict[str, dict]) -> None:
  """Refuses two multiple-choice tasks that the registry would name alike (`x y` and `x-y` both become
  `bigbench_x_y`, and one would be lost), naming both."""
  by_name: dict[str, list[str]] = {}
  for task in sorted(t for t, info in tasks.items() if info["multiple_choice"]):
    by_name.setdefault(catalog.bigbench_task_name(task), []).append(task)
  clash = next(((name, found) for name, found in by_name.items() if len(found) > 1), None)
  if clash:
    raise SourceError(f"the BIG-bench tasks {' and '.join(repr(t) for t in clash[1])} would both be registered as "
                      f"{clash[0]}, and one of them lost; rename or remove one of the folders.")


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def check_pins(parsed: Parsed, pinned: dict[str, str], where: str) -> None:
  """Refuses a task.json whose sha256 differs from the one recorded at its first download."""
  for name, sha in sorted((f"{k}/task.json", _sha256(raw)) for k, (_, raw) in parsed.items()):
    if pinned.get(name, sha) != sha:
      raise SourceError(f"{where}: {name} has sha256 {sha[:16]}..., but the store recorded {pinned[name][:16]}... "
                        "at its first download; refusing it (remove the store to trust the new file)")


def write_store(cache: pathlib.Path, parsed: Parsed, reference: bytes | None, source: dict,
                extra: dict | None = None) -> pathlib.Path:
  """Writes `<cache>/bigbench/` (tasks.zip, index.json, json_task.py, manifest.json) atomically."""
  tasks = index_tasks(parsed)
  check_registered_names(tasks)
  if not tasks:
    raise SourceError(f"{source.get('path') or source['key']} holds no BIG-bench JSON task; {SOURCE_HINT}")
  final = cache / STORE_NAME
  with storage.output_folder(final, "The BIG-bench store", kind=STORE_KIND, overwrite=True) as tmp:
    tmp = pathlib.Path(tmp)
    with zipfile.ZipFile(tmp / "tasks.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
      for name, info in tasks.items():
        if info["multiple_choice"]:
          for rel in [name] + [f"{name}/{sub}" for sub in info["subtasks"]]:
            zf.writestr(f"{rel}/task.json", parsed[rel][1])
    if reference is not None:  # BIG-bench's own formatting code, the reference some tests compare with.
      (tmp / "json_task.py").write_bytes(reference)
    index = json.dumps({"source": source, "tasks": tasks}, indent=1).encode("utf-8")
    (tmp / "index.json").write_bytes(index)
    facts = {"source": source, "files": {f"{rel}/task.json": _sha256(raw) for rel, (_, raw) in parsed.items()},
             "index_sha256": _sha256(index), **(extra or {}),
             **({"json_task_py_sha256": _sha256(reference)} if reference is not None else {})}
    STORE.manifest(facts).write(tmp)
  return final


def _listed_files(facts: dict) -> dict[str, str]:
  """{name: sha256} of the store's files its manifest lists: index.json and json_task.py (the task
  files in tasks.zip, its "files", are checked one by one as they are read: `bigbench.BigBenchStore`)."""
  return {"index.json": facts["index_sha256"],
          **({"json_task.py": facts["json_task_py_sha256"]} if "json_task_py_sha256" in facts else {})}


STORE = storage.ManifestKind("BIG-bench store", STORE_KIND, required=("source", "files", "index_sha256"),
                             format_version=FORMAT_VERSION, listed=_listed_files,
                             rebuild="Rebuild it: rospr fetch --bigbench SOURCE --force.")


def read_store_manifest(folder: pathlib.Path) -> dict:
  """The checked facts of a store's manifest, index.json and json_task.py checked against their sha256
  (FileNotFoundError if absent, ValueError if damaged)."""
  return STORE.read(folder).facts


def _recorded(cache: pathlib.Path) -> dict:
  """The store's manifest, or {} when there is none or it is damaged (then it is rebuilt)."""
  try:
    return read_store_manifest(cache / STORE_NAME)
  except (FileNotFoundError, ValueError):
    return {}


def source_key(source: str | os.PathLike) -> str:
  """What identifies a source: `github:<repo>@<commit>`, or the path, absolute."""
  if os.fspath(source) == "github":
    return f"github:{GITHUB_REPOSITORY}@{GITHUB_COMMIT}"
  return str(pathlib.Path(source).expanduser().resolve())


def detect_form(path: pathlib.Path) -> str:
  """"checkout", "tasksource", "hails" or "sdist" (one-line errors name the path and what to give)."""
  if not path.exists():
    raise FileNotFoundError(f"BIG-bench source {path} does not exist; {SOURCE_HINT}")
  if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
    return "sdist"
  if path.is_dir() and _checkout_tasks_dir(path) is not None:
    return "checkout"
  if path.is_dir() and hf_task_files(path):
    return "hails" if any(d.name.endswith("_zero_shot") for d in path.iterdir()) else "tasksource"
  raise SourceError(f"{path} is none of the BIG-bench forms (no bigbench/benchmark_tasks/<task>/task.json, no "
                    f"<task>/*.parquet or *.arrow, not a .tar.gz); {SOURCE_HINT}")


def build_store(source: str | os.PathLike, cache: pathlib.Path | None = None) -> pathlib.Path:
  """Builds `<cache>/bigbench/` from `source` (a path or "github"); returns the store folder. Errors are
  one line: FileNotFoundError (no such path), SourceError (none of the forms, broken JSON or parquet,
  an sdist of another sha256, a changed GitHub file), ConnectionError (GitHub unreachable)."""
  cache = pathlib.Path(cache) if cache is not None else archives.cache_dir()
  key, extra = source_key(source), {}
  if os.fspath(source) == "github":
    parsed, reference = download_github()
    info = {"form": "github", "repository": GITHUB_REPOSITORY, "commit": GITHUB_COMMIT, "key": key}
    previous = _recorded(cache)
    if previous.get("source", {}).get("key") == key:
      check_pins(parsed, previous["files"], f"{GITHUB_REPOSITORY}@{GITHUB_COMMIT[:12]}")
    return write_store(cache, parsed, reference, info)
  path = pathlib.Path(source).expanduser().resolve()
  form = detect_form(path)
  info = {"form": form, "path": str(path), "key": key}
  if form == "checkout":
    parsed, reference = read_checkout(_checkout_tasks_dir(path))
  elif form == "sdist":
    spec, got = archives.BIGBENCH, storage.sha256_file(path)
    if got != spec.sha256:
      raise SourceError(f"{path} has sha256 {got}, not the pinned {spec.filename}'s {spec.sha256}; only that "
                        "sdist is read (extract another archive and give its folder)")
    with open(path, "rb") as f:
      parsed, reference = read_tar(f, str(path))
    info["sha256"] = got
  else:
    (parsed, extra["source_files"]), reference = read_hf(path, hf_task_files(path)), None
  return write_store(cache, parsed, reference, info, extra)


def ensure_store(source: str | os.PathLike, cache: pathlib.Path | None = None,
                 force: bool = False) -> tuple[pathlib.Path, bool]:
  """(the store, whether it was built now): built unless the cache holds one from the same source."""
  cache = pathlib.Path(cache) if cache is not None else archives.cache_dir()
  if not force and _recorded(cache).get("source", {}).get("key") == source_key(source):
    return cache / STORE_NAME, False
  return build_store(source, cache), True


def bigbench_dir(cache: pathlib.Path | None = None) -> pathlib.Path:
  """The BIG-bench store; built first from `$ROSPR_BIGBENCH` when that names another source than the
  store's manifest records (or there is none). FileNotFoundError (one line): no store and no
  ROSPR_BIGBENCH (NOT_CONFIGURED), or a damaged store; with ROSPR_BIGBENCH, `build_store`'s errors."""
  cache = pathlib.Path(cache) if cache is not None else archives.cache_dir()
  wanted = os.environ.get(ENV_SOURCE, "").strip()
  if wanted:
    return ensure_store(wanted, cache)[0]
  try:
    read_store_manifest(folder := cache / STORE_NAME)
  except FileNotFoundError:
    old = archives.archive_path(archives.BIGBENCH, cache)
    hint = f" (this cache holds the old archive: rospr fetch --bigbench {old})" if old.is_file() else ""
    raise FileNotFoundError(NOT_CONFIGURED + hint) from None
  except ValueError as e:
    raise FileNotFoundError(f"The BIG-bench store {folder} is damaged: {e}") from None
  return folder


def bigbench_configured(cache: pathlib.Path | None = None) -> bool:
  """Whether BIG-bench can be listed: ROSPR_BIGBENCH is set, or the cache has a store (not checked)."""
  cache = pathlib.Path(cache) if cache is not None else archives.cache_dir()
  return bool(os.environ.get(ENV_SOURCE, "").strip()) or (cache / STORE_NAME / storage.MANIFEST).is_file()

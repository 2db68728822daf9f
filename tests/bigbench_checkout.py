"""A small google/BIG-bench checkout written by the tests, and the same tasks in the other forms users have.

`write_checkout(root)` writes `root/BIG-bench/bigbench/benchmark_tasks/<task>[/<subtask>]/task.json`:
generated (deterministic) examples under real task names. Every one of the 14 held-out targets, the
sources `anachronisms` and `arithmetic` (with exact duplicates), and:

  novel_concepts          32 examples (16 train / 16 validation) and a task_prefix
  logical_deduction       a container: five_objects, three_objects (one with a task_prefix)
  conceptual_combinations a container: contradictions, emergent_properties
  code_line_description   custom prefixes (input, output and choice prefix)
  misconceptions          append_choices_to_input false
  simple_arithmetic_json  generative (exact_str_match, no target_scores): left out of the store
  boolean_expressions     programmatic (task.py only): not a JSON task

Scores are 0/1 (Hugging Face keeps int32 scores). No `bigbench/api/json_task.py` is written: that is
Google's code. `write_parquet` writes the same tasks as Hugging Face rows in the tasksource/bigbench or
hails/bigbench layout, formatted here independently of the package (BIG-bench's `default_format_fn`
with the task_prefix in front, stripped, as bbseqio feeds the HF script); `write_tarball` writes the
tree as the bigbench-1.0.0 sdist or as a GitHub tarball lays it out.
"""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import random
import tarfile

import numpy as np

TARGETS = ("code_line_description", "conceptual_combinations", "hindu_knowledge", "known_unknowns",
           "language_identification", "logic_grid_puzzle", "logical_deduction", "misconceptions",
           "movie_dialog_same_or_different", "novel_concepts", "strategyqa", "formal_fallacies_syllogisms_negation",
           "vitaminc_fact_verification", "winowhy")
# Real multiple-choice BIG-bench task names for `extra_sources` (generated content, like the rest).
EXTRA_SOURCE_NAMES = (
    "analogical_similarity", "causal_judgment", "date_understanding", "disambiguation_qa", "emoji_movie",
    "epistemic_reasoning", "fantasy_reasoning", "figure_of_speech_detection", "general_knowledge", "hyperbaton",
    "implicatures", "intent_recognition", "logical_fallacy_detection", "navigate", "odd_one_out", "physics",
    "presuppositions_as_nli", "riddle_sense", "ruin_names", "snarks", "sports_understanding",
    "temporal_sequences", "timedial", "understanding_fables")
WORDS = ("river", "apple", "violet", "granite", "orbit", "lantern", "meadow", "copper", "whistle", "harbor",
         "ember", "falcon", "quartz", "saddle", "tundra", "willow", "zephyr", "basalt", "cobalt", "delta")
NOVEL_PREFIX = ("Let's do some find-the-common-concept problems. In these problems, your goal is to identify "
                "the underlying concept or theme that relates the things listed. Make sure to answer carefully.\n")


def _examples(task: str, n: int, num_choices: int, seed: int) -> list[dict]:
  rng = random.Random(f"{task}/{seed}")
  out = []
  for i in range(n):
    words = rng.sample(WORDS, num_choices)
    correct = rng.randrange(num_choices)
    out.append({"input": f"{task.replace('_', ' ')} #{i}: which goes with {rng.choice(WORDS)} {i}?",
                "target_scores": {w: int(k == correct) for k, w in enumerate(words)}})
  return out


def _mc(task: str, n: int, num_choices: int, seed: int = 0, **fields) -> dict:
  return {"name": task, "description": f"{task} (generated for the tests)", "keywords": ["multiple choice"],
          "metrics": ["multiple_choice_grade"], **fields, "examples": _examples(task, n, num_choices, seed)}


def checkout_tasks(extra_sources: int = 0, extra_examples: int = 200) -> dict[str, dict]:
  """{"<task>" or "<task>/<subtask>": task JSON} of the test checkout."""
  sizes = {"hindu_knowledge": (10, 4), "known_unknowns": (8, 2), "language_identification": (10, 5),
           "logic_grid_puzzle": (8, 3), "movie_dialog_same_or_different": (10, 2), "strategyqa": (10, 2),
           "formal_fallacies_syllogisms_negation": (10, 2), "vitaminc_fact_verification": (10, 3),
           "winowhy": (10, 2), "anachronisms": (40, 2)}
  tasks = {name: _mc(name, n, c) for name, (n, c) in sizes.items()}
  tasks["novel_concepts"] = _mc("novel_concepts", 32, 4, task_prefix=NOVEL_PREFIX)
  tasks["code_line_description"] = _mc(
      "code_line_description", 12, 4, example_input_prefix="\nPython code:\n",
      example_output_prefix="\nEnglish language description:\n", choice_prefix="\n  option: ")
  tasks["misconceptions"] = _mc("misconceptions", 12, 2, append_choices_to_input=False)
  arithmetic = _mc("arithmetic", 20, 5)
  arithmetic["examples"] += [dict(arithmetic["examples"][i]) for i in (3, 7, 7, 15)]  # exact duplicates
  tasks["arithmetic"] = arithmetic
  for container, subtasks in (("logical_deduction", {"three_objects": (12, 3), "five_objects": (10, 5)}),
                              ("conceptual_combinations", {"contradictions": (6, 4), "emergent_properties": (6, 4)})):
    tasks[container] = {"name": container, "description": f"{container} (container)",
                        "keywords": ["multiple choice"], "metrics": ["multiple_choice_grade"],
                        "subtasks": [{"name": f"{container}:{s}"} for s in subtasks]}
    for s, (n, c) in subtasks.items():
      extra = {"task_prefix": "Answer about three objects.\n"} if s == "three_objects" else {}
      tasks[f"{container}/{s}"] = _mc(f"{container}:{s}", n, c, seed=len(s), **extra)
  tasks["simple_arithmetic_json"] = {
      "name": "simple_arithmetic_json", "description": "generative", "keywords": ["arithmetic"],
      "metrics": ["exact_str_match"], "examples": [{"input": f"{i} + {i} =", "target": str(2 * i)} for i in range(6)]}
  for name in EXTRA_SOURCE_NAMES[:extra_sources]:
    tasks[name] = _mc(name, extra_examples, 3)
  return tasks


def write_checkout(root: pathlib.Path, extra_sources: int = 0, extra_examples: int = 200) -> pathlib.Path:
  """Writes the checkout under `root/BIG-bench` and returns that folder (the repository root).

  Args:
    extra_sources: add that many more multiple-choice source tasks (real names, generated content,
      `extra_examples` examples each), for runs that need many sources.
  """
  repo = pathlib.Path(root) / "BIG-bench"
  tasks_dir = repo / "bigbench" / "benchmark_tasks"
  for rel, data in checkout_tasks(extra_sources, extra_examples).items():
    (tasks_dir / rel).mkdir(parents=True, exist_ok=True)
    (tasks_dir / rel / "task.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
  (tasks_dir / "boolean_expressions").mkdir(exist_ok=True)
  (tasks_dir / "boolean_expressions" / "task.py").write_text("# a programmatic task: not JSON\n")
  (tasks_dir / "README.md").write_text("# BIG-bench tasks (test checkout)\n")
  (repo / "README.md").write_text("BIG-bench (a small checkout written by the tests)\n")
  return repo


def tasks_dir(checkout: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(checkout) / "bigbench" / "benchmark_tasks"


# ---------------------------------------------------------------------------------------------------
# Hugging Face rows.


def bigbench_inputs(part: dict, example: dict) -> str:
  """BIG-bench's zero-shot `default_format_fn` (choices permuted by a fresh RandomState(42)), with the
  task_prefix in front, stripped: the `inputs` the HF script stores."""
  text = example["input"]
  if "target_scores" in example and part.get("append_choices_to_input", True):
    cp = part.get("choice_prefix", "\n  choice: ")
    permuted = np.random.RandomState(seed=42).permutation(sorted(example["target_scores"].keys()))
    text = text + cp + cp.join(permuted)
  text = part.get("example_input_prefix", "\nQ: ") + text + part.get("example_output_prefix", "\nA: ")
  return (part.get("task_prefix", "") + text).strip()


def hf_rows(parts: list[dict], min_validation: int = 16) -> dict[str, list[dict]]:
  """{"default", "train", "validation": rows} of one task as the HF script yields them: idx numbers the
  examples (duplicates kept) across the subtasks in order; each subtask is cut as bbseqio cuts it
  (shuffled with seed 42, validation = the last max(20 %, min_validation // #subtasks))."""
  splits: dict[str, list[dict]] = {"default": [], "train": [], "validation": []}
  idx = 0
  per_part = min_validation // len(parts)
  for part in parts:
    rows = []
    for e in part["examples"]:
      scores = e.get("target_scores", {})
      top = max(scores.values()) if scores else None
      rows.append({"idx": idx, "inputs": bigbench_inputs(part, e),
                   "targets": [k.strip() for k, v in scores.items() if v == top] or [e.get("target", "")],
                   "multiple_choice_targets": [k.strip() for k in scores],
                   "multiple_choice_scores": [int(v) for v in scores.values()]})
      idx += 1
    splits["default"] += rows
    shuffled = list(rows)
    random.Random(42).shuffle(shuffled)
    num_validation = max(int(0.2 * len(rows)), per_part)
    if num_validation < len(rows):
      splits["train"] += shuffled[:len(rows) - num_validation]
      splits["validation"] += shuffled[len(rows) - num_validation:]
  return splits


def _table(rows: list[dict]):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  schema = pa.schema([("idx", pa.int32()), ("inputs", pa.string()), ("targets", pa.list_(pa.string())),
                      ("multiple_choice_targets", pa.list_(pa.string())),
                      ("multiple_choice_scores", pa.list_(pa.int32()))])
  return pa.Table.from_pylist(rows, schema=schema)


def write_parquet(root: pathlib.Path, checkout: pathlib.Path, layout: str = "tasksource",
                  arrow_tasks: tuple[str, ...] = ("novel_concepts",)) -> pathlib.Path:
  """The checkout's JSON tasks as HF files under `root`; returns `root`.

  tasksource: `<task>/{train,validation}-00000-of-00001.parquet` (`default-...` only where there is no
  train split). hails: `<task>_zero_shot/{default,train,validation}-00000-of-00001.parquet`, and the
  tasks of `arrow_tasks` as `<task>_zero_shot/<split>/data-00000-of-00001.arrow` (Arrow IPC streams, as
  `datasets` writes them), with a `<task>_one_shot` folder beside one task, which is ignored.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(root)
  base = tasks_dir(checkout)
  for task_file in sorted(base.glob("*/task.json")):
    task = task_file.parent.name
    data = json.loads(task_file.read_text())
    subtasks = sorted(base.glob(f"{task}/*/task.json"))
    parts = [data] if "examples" in data else [json.loads(p.read_text()) for p in subtasks]
    splits = hf_rows(parts)
    folder = root / (task if layout == "tasksource" else f"{task}_zero_shot")
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
      if not rows or (layout == "tasksource" and split == "default" and splits["train"]):
        continue
      if layout == "hails" and task in arrow_tasks:
        (folder / split).mkdir(exist_ok=True)
        with pa.OSFile(str(folder / split / "data-00000-of-00001.arrow"), "wb") as sink:
          table = _table(rows)
          with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
      else:
        pq.write_table(_table(rows), folder / f"{split}-00000-of-00001.parquet")
    if layout == "hails" and task == "anachronisms":
      (root / f"{task}_one_shot").mkdir(exist_ok=True)
      pq.write_table(_table(splits["default"][:2]), root / f"{task}_one_shot" / "default-00000-of-00001.parquet")
  return root


def write_tarball(path: pathlib.Path, checkout: pathlib.Path, top: str = "bigbench-1.0.0") -> pathlib.Path:
  """The checkout's task files as a .tar.gz with top folder `top` (the sdist's `bigbench-1.0.0`, or a
  GitHub tarball's `BIG-bench-<commit>`), byte-for-byte the same on every call."""
  buf = io.BytesIO()
  base = tasks_dir(checkout)
  with tarfile.open(fileobj=buf, mode="w") as tar:
    members = [(f"{top}/setup.py", b"# setup\n")]
    members += [(f"{top}/bigbench/benchmark_tasks/{p.relative_to(base).as_posix()}", p.read_bytes())
                for p in sorted(base.rglob("*")) if p.is_file()]
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size, info.mtime = len(data), 0
      tar.addfile(info, io.BytesIO(data))
  path = pathlib.Path(path)
  path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
  return path

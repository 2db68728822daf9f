"""The README, walked as a new user walks it: every fenced block is found, and every `rospr` line of
it runs as written against tiny artifacts this test makes (no T0 and no P3 reach these machines).

What changes between the README's text and what runs is this table and nothing else; a block or a
command the test does not know fails it, so the README cannot grow a command no test runs.

| README text | what runs | why |
|---|---|---|
| `/ckpt/T0_3B`, `/ckpt/retriever` | a tiny T5 (Hugging Face format, its own `spiece.model`) | no T0 here |
| `/ckpt/t0_3b_t5x`, `/runs` | folders under the test's tmp_path | |
| `/data/p3` | RTE validation rows in Hugging Face form | no P3 here |
| `models/t0_3b.gin` | `models/checkpoint.gin` | t0_3b.gin pins size `xl`; the tiny checkpoint's comes from its config.json |
| `rospr_t0_train` | two sources of the generated family | no P3 sources here |
| `EXAMPLES_PER_SOURCE=5000`, `TRAIN_STEPS=20000`, `--n 100` | 8, 2, 8 | minutes, not days |
| `gs://my-bucket/` | `file://{tmp}/bucket/` | a local folder through the same storage code (no network here; the gs:// backend itself runs against an emulator in `tests/storage/`) |
| `rospr` | `python -m rospr_jax.cli` | the same entry point, in this interpreter |

Flags appended (gin takes the last binding): train-prompts gets short lengths and batch
(`APPENDED`); evaluate gets one target (RTE GPT-3 style) and retrieval counts that fit its 8 examples.
The fenced blocks that set up and test (`scripts/setup.sh`, pytest) are what `.ci/run` runs; the
demo is `tests/commands/demo_test.py` on a shrunk configuration; the Python snippet is run by
`tests/tasks/seqio_vocabulary_test.py`; `run_tpu.sh` by `tests/run_tpu_test.py`; the SLURM job's
variables by `tests/multiprocess/`; `bench/tpu_plan.py` by `tests/bench/tpu_plan_test.py` (`ELSEWHERE`).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ["generated_sentiment_yesno_f0", "generated_weather_words_f2"]
RTE = "super_glue_rte_GPT_3_style"

SUBSTITUTIONS = [  # (README text, what runs instead); {tmp} and {ckpt} are filled per test, in order
    ("gs://my-bucket/", "file://{tmp}/bucket/"),
    ("/ckpt/T0_3B", "{ckpt}"),
    ("/ckpt/retriever", "{ckpt}"),
    ("/ckpt/t0_3b_t5x", "{tmp}/t0_3b_t5x"),
    ("/runs/", "{tmp}/runs/"),
    ("/data/p3", "{tmp}/data"),
    ("models/t0_3b.gin", "models/checkpoint.gin"),
    ("['rospr_t0_train']", str(SOURCES)),
    ("--tasks rospr_t0_train", "--tasks " + " ".join(SOURCES)),
    ("EXAMPLES_PER_SOURCE=5000", "EXAMPLES_PER_SOURCE=8"),
    ("TRAIN_STEPS=20000", "TRAIN_STEPS=2"),
    ("--n 100", "--n 8"),
]
APPENDED = {
    "train-prompts": ["--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=48", "--gin.TARGET_LENGTH=8",
                      "--gin.PROMPT_LENGTH=4", "--gin_bindings=configs.LoopConfig.summaries = False"],
    "plan": ["--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=48", "--gin.TARGET_LENGTH=8", "--gin.PROMPT_LENGTH=4"],
    "evaluate": [f"--gin.TARGETS=['{RTE}']", "--gin.NUM_QUERIES=4", "--gin.NUM_NEIGHBORS=2",
                 "--gin.NUM_PROMPTS=2", "--gin.TOP_K=2", "--gin.BATCH_SIZE=4"],
}
# Blocks run elsewhere, by the first words of their first command line.
ELSEWHERE = {
    "bash scripts/setup.sh": ".ci/run (the test command) and tests/commands/demo_test.py (the demo)",
    "./run_tpu.sh": "tests/run_tpu_test.py",
    "export JAX_COORDINATOR_ADDRESS=": "tests/multiprocess/ (the same variables, two processes on loopback)",
    "export ROSPR_NUM_PROCESSES=": "tests/multiprocess/",
    "srun ./worker.sh ": "tests/multiprocess/ (a SLURM job's processes are what its fixture starts)",
    "rospr fetch --bigbench ": "tests/data/bigbench_sources_test.py (each form on files the test writes in "
                               "that form; `github` without network: one line)",
    "python bench/tpu_plan.py": "tests/bench/tpu_plan_test.py (its cells' `rospr plan` lines, the table from "
                                "the kept plans; a T0-sized compile takes minutes)",
}


def readme_blocks() -> list[tuple[str, str]]:
  """(language, text) of every fenced block of README.md, in order."""
  return re.findall(r"```(\w*)\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def command_lines(block: str) -> list[str]:
  """The block's command lines, continuations joined, comments and blank lines dropped."""
  joined = block.replace("\\\n", " ")
  return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def substitute(line: str, tmp: pathlib.Path, ckpt: str) -> str:
  for text, instead in SUBSTITUTIONS:
    line = line.replace(text, instead.format(tmp=tmp, ckpt=ckpt))
  return line


def test_every_block_of_the_readme_is_run_by_a_test():
  unknown = []
  for language, text in readme_blocks():
    lines = command_lines(text)
    if language == "python":
      assert "evaluate_task_with_seqio" in text  # tests/tasks/seqio_vocabulary_test.py runs it
      continue
    for line in lines:
      if line.startswith("rospr ") or any(line.startswith(k) for k in ELSEWHERE):
        continue
      unknown.append(line)
  assert not unknown, f"README commands no test runs (add them to tests/readme_walk_test.py): {unknown}"
  ci = (ROOT / ".ci" / "run").read_text()
  (test_block,) = [t for _, t in readme_blocks() if "pytest" in t]
  assert command_lines(test_block)[0] in ci  # CI runs the README's test command, as written


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
  tmp = tmp_path_factory.mktemp("readme")
  ckpt = tmp / "T0_3B"  # `rospr convert` writes beside it: a copy of the session's tiny checkpoint
  shutil.copytree(tiny_model.checkpoint, ckpt)
  rte = tmp / "data" / "super_glue" / "rte"
  rte.mkdir(parents=True)
  rows = [{"premise": f"The cat {i} sat on the mat.", "hypothesis": "A cat sat.", "idx": i, "label": i % 2}
          for i in range(8)]
  (rte / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return tmp, str(ckpt)


def _readme_rospr_lines() -> list[str]:
  return [line for language, text in readme_blocks() if language == "bash"
          for line in command_lines(text) if line.startswith("rospr ") and not any(map(line.startswith, ELSEWHERE))]


@pytest.mark.slow
def test_the_readme_rospr_commands_run_as_written_in_order(world):
  tmp, ckpt = world
  env = {**os.environ, "ROSPR_DATA_DIR": str(tmp / "data"), "ROSPR_REMOTE_CACHE": str(tmp / "copies")}
  ran = []
  for line in _readme_rospr_lines():
    argv = shlex.split(substitute(line, tmp, ckpt))
    name = argv[1]
    command = [sys.executable, "-m", "rospr_jax.cli", *argv[1:], *APPENDED.get(name, [])]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
    ran.append((name, done.stdout))
  names = [name for name, _ in ran]
  assert names == ["score", "convert", "train-prompts", "build-library", "evaluate", "tasks", "retrieve",
                   "plan", "train-prompts", "build-library", "evaluate"], names
  scores = json.loads(dict(ran)["score"])
  assert scores["choices"] == ["yes", "no"] and len(scores["scores"]) == 2 and scores["prediction"] in (0, 1)
  assert (tmp / "t0_3b_t5x").is_dir()
  plan = json.loads((tmp / "runs" / "plan.json").read_text())  # the tiny checkpoint's train step on a v4-8
  assert plan["devices"] == 4 and plan["fits"] and plan["steps"][0]["shapes"]["batch_size"] == 8
  assert (tmp / "runs" / "library" / "manifest.json").is_file()
  results = json.loads(next((tmp / "runs" / "eval").rglob("results.json")).read_text())
  assert {r["target"] for r in results["per_template"]} == {RTE}
  assert {r["method"] for r in results["per_template"]} >= {"T0", "RoSPr", "INTER", "VAR", "INTER+VAR"}
  queries = (tmp / "runs" / "rte_queries.jsonl").read_text().splitlines()
  assert len(queries) == 8 and all("label" not in json.loads(q) and json.loads(q)["choices"] for q in queries)
  selection = json.loads((tmp / "runs" / "rte_selection" / "selection.json").read_text())
  assert selection["rule"] == "var" and selection["params"]["target"] == RTE
  assert (tmp / "runs" / "rte_selection" / "prompt.npy").is_file()
  # The bucket block: the prompts exported, the library committed by its manifest, the report as local.
  assert (tmp / "bucket" / "library" / "manifest.json").is_file()
  assert list((tmp / "bucket" / "prompts" / "export").glob("checkpoint_*/manifest.json"))
  at_url = json.loads((tmp / "bucket" / "eval" / "results.json").read_text())
  assert at_url["per_template"] == results["per_template"]

"""T0_3B and T0pp on Cloud TPU slices, compiled by libtpu on a machine without a TPU: `rospr plan` per cell.

Usage:
  python bench/tpu_plan.py                              # every cell not yet measured, then the table
  python bench/tpu_plan.py --models t0_3b --topologies v4-8 --remat none minimal full --partitions 1
  python bench/tpu_plan.py --models t0pp --topologies v3-8 --remat minimal --partitions 4
  python bench/tpu_plan.py --render                      # bench/TPU_PLAN.md from what is measured

A cell is one `rospr plan` run, the command a user types, with the project's own gin files: the model
file (`models/t0_3b.gin`, `models/t0.gin`: T0pp's shape, 11B parameters) and either the training run
file (`prompt_tuning/train_seqio.gin`, base.gin's settings: B 32, inputs 512 + a 100-token prompt,
targets 64, dropout 0.1, Adafactor) at a REMAT_POLICY and NUM_PARTITIONS, or the paper's evaluation
run file (`eval/paper.gin`: the encode-once scoring step at B 64 rows of 1,024 + 100 input tokens and 2
choices of 256, and the retriever's embedding step at the library-build batch) at a NUM_PARTITIONS.
`--no_search`: a cell that does not fit is recorded as such (the remedies are other cells). Each plan is
kept as bench/tpu_plan/<cell>.json; bench/TPU_PLAN.md is rendered from all of them, with the paper's
pipeline projected in hours for each slice where its cells are measured, and lists the cells not run
and the command that runs them.

One compile at a time (T0_3B's training step takes 5 to 15 minutes on 2 busy cores); libtpu's
machine-wide lock is shared (ALLOW_MULTIPLE_LIBTPU_LOAD=1). `--dry_run` prints the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS_DIR = os.path.join(ROOT, "bench", "tpu_plan")
OUT = os.path.join(ROOT, "bench", "TPU_PLAN.md")

MODELS = {"t0_3b": ("models/t0_3b.gin", "T0_3B (2.85B)"), "t0pp": ("models/t0.gin", "T0pp (11B)")}
TOPOLOGIES = ["v3-8", "v4-8", "v5litepod-8", "v5p-8", "v4-32"]
DEVICES = {"v3-8": 8, "v4-8": 4, "v5litepod-8": 8, "v5p-8": 4, "v4-32": 16}  # JAX devices of each slice
REMAT = ["none", "minimal", "full"]
PARTITIONS = [1, 2, 4, 8]
TRAIN_FILE = "prompt_tuning/train_seqio.gin"
EVAL_FILE = "eval/paper.gin"

# The paper's pipeline (RoSPr, arXiv 2210.03029, with T0's training mixture): one prompt trained for
# every T0 training template, the library embedded, then 11 held-out datasets and 14 BIG-bench tasks
# scored with 5 methods and the oracle. Step counts as the projections take them:
PIPELINE_TRAIN_STEPS = 20_000  # the README example's TRAIN_STEPS, for the joint table of every template's prompt
PIPELINE_METHODS = 5  # T0, RoSPr, INTER, VAR, INTER+VAR each score every example once
LIBRARY_TEXTS = 313 * 100  # a prompt per T0 training template (313 in promptsource 0.2.3), n = 100 each


def cell_name(model: str, topology: str, step: str, partitions: int, remat: str | None) -> str:
  return f"{model}_{topology}_{step}_np{partitions}" + (f"_{remat}" if remat else "")


def cell_command(model: str, topology: str, step: str, partitions: int, remat: str | None) -> list[str]:
  gin_model, _ = MODELS[model]
  argv = [sys.executable, "-m", "rospr_jax.cli", "plan", f"--gin_file={gin_model}",
          f"--gin_file={TRAIN_FILE if step == 'train' else EVAL_FILE}", "--topology", topology,
          f"--gin.NUM_PARTITIONS={partitions}", "--no_search", "--log_level=WARNING"]
  if step == "train":
    argv.append(f"--gin.REMAT_POLICY='{remat}'")
  return argv


def cells(args) -> list[tuple]:
  out = []
  for model in args.models:
    for topology in args.topologies:
      for partitions in args.partitions:
        if DEVICES.get(topology, partitions) % partitions:
          continue  # a model axis the slice's devices cannot hold
        if "train" in args.steps:
          out += [(model, topology, "train", partitions, remat) for remat in args.remat]
        if "eval" in args.steps:
          out.append((model, topology, "eval", partitions, None))
  return out


def run_cell(cell: tuple, dry_run: bool) -> None:
  path = os.path.join(CELLS_DIR, cell_name(*cell) + ".json")
  argv = cell_command(*cell) + ["--out", path]
  print(" ".join(argv[1:]), flush=True)
  if dry_run:
    return
  os.makedirs(CELLS_DIR, exist_ok=True)
  env = {**os.environ, "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
  start = time.perf_counter()
  done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - start
  print(done.stdout[-3000:], done.stderr[-2000:], f"exit {done.returncode} in {wall:.0f} s", sep="\n", flush=True)
  if os.path.exists(path):  # exit 2 (does not fit) writes the plan too
    with open(path) as f:
      plan = json.load(f)
    plan["bench"] = {"exit_code": done.returncode, "wall_seconds": round(wall, 1), "cores": os.cpu_count(),
                     "measured": time.strftime("%Y-%m-%d")}
    with open(path, "w") as f:
      json.dump(plan, f, indent=1)


def load_cells() -> dict[str, dict]:
  if not os.path.isdir(CELLS_DIR):
    return {}
  out = {}
  for name in sorted(os.listdir(CELLS_DIR)):
    if name.endswith(".json"):
      with open(os.path.join(CELLS_DIR, name)) as f:
        out[name[:-5]] = json.load(f)
  return out


def _gib(n) -> str:
  return "" if n is None else f"{n / 2**30:.2f}"


def _tflops(step: dict) -> str:
  return "" if step.get("flops") is None else f"{step['flops'] / 1e12:.3g}"


def _seconds(step: dict) -> str:
  return "" if step.get("seconds") is None else f"{step['seconds']:.3g}"


def _step(plan: dict, name: str) -> dict | None:
  return next((s for s in plan["steps"] if s["step"] == name), None)


def _tokens_per_second(step: dict) -> str:
  """Training tokens (prompt + inputs + targets of every row) per second at the step's estimate."""
  if not step.get("seconds") or not step.get("fits"):
    return ""
  s = step["shapes"]
  tokens = s["batch_size"] * (s["prompt_length"] + s["input_length"] + s["target_length"])
  return f"{tokens / step['seconds']:,.0f}"


def _fits(step: dict) -> str:
  if step.get("fits"):
    return "yes"
  return "no (not compiled)" if (step.get("refused") or "").startswith("not compiled") else "no"


def render(measured: dict[str, dict], wanted: list[tuple]) -> str:
  lines = ["# Before you rent a TPU: the steps compiled for Cloud TPU slices", "",
           "Written by `python bench/tpu_plan.py` (each cell is one `rospr plan ... --no_search` run, libtpu "
           "0.0.42.1 compiling for the slice on a 2-core machine without a TPU; the plans are kept in "
           "bench/tpu_plan/). GiB per device (a v3 core, a v4 / v5p chip, a v5e chip): the total is what the "
           "step holds at once (arguments, temporaries, outputs not written into donated arguments, "
           "code). s/step is the TPU compiler's optimum where it is positive and plausible, else the bound "
           "max(FLOPs / peak, bytes / HBM bandwidth) (a lower bound: `estimate` says which); tokens/s "
           "(prompt + input + target tokens of the whole batch, on the whole slice) at that.", "",
           "## Prompt training (train_seqio.gin: B 32, inputs 512 + prompt 100, targets 64, dropout 0.1)", "",
           "| model | slice | NUM_PARTITIONS | REMAT_POLICY | arguments | temporaries | total | HBM | fits | "
           "TFLOP/step | s/step | estimate | tokens/s | compile s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for key, plan in sorted(measured.items()):
    step = _step(plan, "train")
    if step is None:
      continue
    model, topology, _, partitions, remat = _parse(key)
    lines.append(
        f"| {MODELS[model][1]} | {topology} | {partitions} | {remat} | {_gib(step['arguments'])} | "
        f"{_gib(step['temporaries'])} | {_gib(step['total'])} | {_gib(step['hbm'])} | {_fits(step)} | "
        f"{_tflops(step)} | {_seconds(step)} | {step['seconds_source']} | "
        f"{_tokens_per_second(step)} | {step['compile_seconds']:.0f} |")
  lines += ["", "## Evaluation (paper.gin: scoring B 64 rows of 1,024 + 100 inputs, 2 choices of 256; "
            "the library's embedding step)", "",
            "| model | slice | NUM_PARTITIONS | step | arguments | temporaries | total | HBM | fits | "
            "TFLOP/step | s/step | estimate | compile s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for key, plan in sorted(measured.items()):
    model, topology, kind, partitions, _ = _parse(key)
    if kind != "eval":
      continue
    for step in plan["steps"]:
      lines.append(
          f"| {MODELS[model][1]} | {topology} | {partitions} | {step['step']} | {_gib(step['arguments'])} | "
          f"{_gib(step['temporaries'])} | {_gib(step['total'])} | {_gib(step['hbm'])} | {_fits(step)} | "
          f"{_tflops(step)} | {_seconds(step)} | {step['seconds_source']} | "
          f"{step['compile_seconds']:.0f} |")
  lines += ["", *pipeline_section(measured)]
  missing = [c for c in wanted if cell_name(*c) not in measured]
  if missing:
    lines += ["", f"## Not run ({len(missing)} of {len(wanted)} cells)", "",
              "A full-size compile takes 4 to 15 minutes on 2 busy cores, so these cells of the matrix were "
              "not compiled in the session that wrote this file. `python bench/tpu_plan.py` runs every cell "
              "not yet measured (one compile at a time; each adds its bench/tpu_plan/<cell>.json and rewrites "
              "this file); a row's command runs its own cells. A cell is the `rospr plan` line printed before "
              "it runs, e.g. `rospr plan --gin_file=models/t0.gin --gin_file=prompt_tuning/train_seqio.gin "
              "--topology v4-8 --gin.NUM_PARTITIONS=2 --gin.REMAT_POLICY='full' --no_search`.", "",
              "| model | slice | training cells not run (NUM_PARTITIONS: REMAT_POLICY) | evaluation cells not run "
              "(NUM_PARTITIONS) | command |", "|---|---|---|---|---|"]
    for model in MODELS:
      for topology in TOPOLOGIES:
        train = [c for c in missing if c[:3] == (model, topology, "train")]
        evaluation = [c for c in missing if c[:3] == (model, topology, "eval")]
        if not train and not evaluation:
          continue
        by_partitions: dict[int, list[str]] = {}
        for c in train:
          by_partitions.setdefault(c[3], []).append(c[4])
        cells_text = "; ".join(f"{p}: {', '.join(r)}" for p, r in sorted(by_partitions.items()))
        lines.append(f"| {MODELS[model][1]} | {topology} | {cells_text} | "
                     f"{', '.join(str(c[3]) for c in evaluation)} | "
                     f"`python bench/tpu_plan.py --models {model} --topologies {topology}` |")
  return "\n".join(lines) + "\n"


def pipeline_section(measured: dict[str, dict]) -> list[str]:
  """The paper's pipeline in hours on each slice whose training (at remat 'minimal') and evaluation
  cells are measured and fit, at the smallest NUM_PARTITIONS that fits."""
  rows = []
  for model in MODELS:
    for topology in TOPOLOGIES:
      train = _smallest_fitting(measured, model, topology, "train", "minimal")
      evaluation = _smallest_fitting(measured, model, topology, "eval", None)
      if train is None or evaluation is None:
        continue
      t, plan = _step(train[1], "train"), evaluation[1]
      scoring, embedding = _step(plan, "scoring"), _step(plan, "embed")
      train_h = PIPELINE_TRAIN_STEPS * t["seconds"] / 3600
      examples = plan.get("eval_examples", {}).get("rows")
      score_h = (examples * PIPELINE_METHODS / scoring["shapes"]["batch_size"] * scoring["seconds"] / 3600
                 if examples else None)
      embed_h = (LIBRARY_TEXTS / embedding["shapes"]["batch_size"] * embedding["seconds"] / 3600
                 if embedding else None)
      total = train_h + (score_h or 0) + (embed_h or 0)
      rows.append(f"| {MODELS[model][1]} | {topology} | {train[0]} / {evaluation[0]} | {train_h:,.1f} | "
                  f"{'' if embed_h is None else f'{embed_h:.2g}'} | {'' if score_h is None else f'{score_h:,.1f}'} | "
                  f"{total:,.1f} | {2 * total:,.1f} |")
  hows = sorted({plan.get("eval_examples", {}).get("how", "") for key, plan in measured.items() if "_eval_" in key} - {""})
  if not rows:
    return ["## The paper's pipeline in hours", "",
            "No slice has both its training (REMAT_POLICY 'minimal') and its evaluation cells measured yet."]
  return ["## The paper's pipeline in hours", "",
          f"Prompts for every T0 training template trained jointly for {PIPELINE_TRAIN_STEPS:,} steps (remat "
          f"'minimal'), the library's {LIBRARY_TEXTS:,} texts embedded (313 templates x n 100, 512-token "
          f"bucket), and the evaluation rows of paper.gin's targets scored by {PIPELINE_METHODS} methods "
          "(the oracle, which scores every library prompt, and VAR's extra scoring of its top prompts not "
          "counted); each at the smallest NUM_PARTITIONS that fits, at the step estimate (a lower bound) "
          "and at 50% of it. The evaluation rows, as `rospr plan` counted them: " + "; ".join(hows) + ".", "",
          "| model | slice | NUM_PARTITIONS (train / eval) | train h | library h | evaluation h | total h | "
          "at 50% h |", "|---|---|---|---|---|---|---|---|", *rows]


def _smallest_fitting(measured, model, topology, kind, remat):
  for partitions in PARTITIONS:
    plan = measured.get(cell_name(model, topology, kind, partitions, remat))
    if plan is not None and plan.get("fits"):
      return partitions, plan
  return None


def _parse(key: str) -> tuple:
  for model in MODELS:
    if key.startswith(model + "_"):
      rest = key[len(model) + 1:].split("_")
      topology, kind, partitions = rest[0], rest[1], int(rest[2][2:])
      return model, topology, kind, partitions, rest[3] if len(rest) > 3 else None
  raise ValueError(f"not a cell: {key}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
  parser.add_argument("--topologies", nargs="+", default=TOPOLOGIES)
  parser.add_argument("--remat", nargs="+", default=REMAT, choices=REMAT)
  parser.add_argument("--partitions", nargs="+", type=int, default=PARTITIONS)
  parser.add_argument("--steps", nargs="+", default=["train", "eval"], choices=["train", "eval"])
  parser.add_argument("--render", action="store_true", help="only rewrite bench/TPU_PLAN.md")
  parser.add_argument("--rerun", action="store_true", help="compile cells already measured again")
  parser.add_argument("--dry_run", action="store_true", help="print the commands, compile nothing")
  args = parser.parse_args()
  measured = load_cells()
  if not args.render:
    for cell in cells(args):
      if args.rerun or cell_name(*cell) not in measured:
        run_cell(cell, args.dry_run)
  full = argparse.Namespace(models=list(MODELS), topologies=TOPOLOGIES, remat=REMAT, partitions=PARTITIONS,
                            steps=["train", "eval"])
  if not args.dry_run:
    with open(OUT, "w") as f:
      f.write(render(load_cells(), cells(full)))
    print(f"wrote {OUT}")


if __name__ == "__main__":
  main()

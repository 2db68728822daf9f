"""The GPU issue's figures from the JSON files `bench/gpu.sh` wrote: one small JSON for bench/results/.

Usage: python bench/gpu_summary.py SECTIONS_DIR [--write FILE] [--bundle FILE]
  (default FILE: SECTIONS_DIR/gpu-<date>.json; --bundle also writes every section JSON into one file,
  {file name: its content}, since a device call brings back at most 8 files)

Reads scoring.json (ours), prompt_tuning.json (ours), anchor_hf_<size>.json (the Hugging Face peer),
evaluate.json (bench/evaluate_e2e.py) and plan_train.json / plan_scoring.json (bench/plan_memory.py),
and writes
  card: the device that ran them;
  prompt_step_dropout_speedup: the peer's prompt-tuning step time / ours, 1 prompt, dropout on, at the
    same B / inputs / prompt / targets (the goal: 3 or more);
  joint32_over_single: our step time with 32 prompts trained jointly / with 1 (the goal: 1.1 or less);
  scoring_speedup_64x3: our encode-once examples/s / the peer's at 64 examples x 3 choices, same lengths
    (the goal: 8 or more);
  evaluate_end_to_end_over_bench: evaluation's examples/s end to end / the bench scorer's at the same
    batches (the goal: 0.8 or more);
  plan_over_measured_peak: the plan's memory figure / the card's measured peak, the smallest over the
    planned steps (1 or more: the plan covered what the card held);
  goals: each figure against its goal (null where the figure is);
  reasons: why a figure is null (its section did not run, failed, or has no matching row);
  raw: the times and bytes they come from.
A missing or partial section gives null and its reason, never an error.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os

GOALS = {"prompt_step_dropout_speedup": (">=", 3.0), "joint32_over_single": ("<=", 1.1),
         "scoring_speedup_64x3": (">=", 8.0), "evaluate_end_to_end_over_bench": (">=", 0.8),
         "plan_over_measured_peak": (">=", 1.0)}


class Missing(Exception):
  """A figure that cannot be computed: its message is the reason."""


def load(out: str, name: str) -> dict:
  """The JSON file `name` under `out` (a glob pattern: the first match), or Missing naming it."""
  paths = sorted(glob.glob(os.path.join(out, name)))
  if not paths:
    raise Missing(f"{name} was not written (its section did not run, or failed before its first row)")
  with open(paths[0]) as f:
    return json.load(f)


def finite(value) -> float:
  if not isinstance(value, (int, float)) or not math.isfinite(value):
    raise Missing(f"not a finite number: {value!r}")
  return float(value)


def prompt_speedup(out: str, raw: dict) -> float:
  """The peer's first prompt-tuning step time / our 1-prompt step with dropout at the same shape."""
  ours = [r for r in load(out, "prompt_tuning.json")["rows"] if r["S"] == 1 and r["dropout"] > 0]
  peer = [r for r in load(out, "anchor_hf_*.json")["results"] if r["kind"] == "prompt_tune_step"]
  if not ours or not peer:
    raise Missing("no 1-prompt step with dropout in prompt_tuning.json" if not ours else "the peer timed no step")
  mine, theirs = ours[0], peer[0]
  raw["prompt_step"] = {"ours_s": mine["step_s"], "ours_compile_s": mine["compile_s"], "peer_s": theirs["median_s"],
                        "shape": [mine["B"], mine["T"], mine["P"], mine["L"]], "variant": mine["attention"]}
  if [mine["B"], mine["T"], mine["P"], mine["L"]] != [theirs["B"], theirs["S"], theirs["prompt"], theirs["T"]]:
    raise Missing(f"shapes differ: ours B/inputs/prompt/targets {mine['B']}/{mine['T']}/{mine['P']}/{mine['L']}, "
                  f"the peer's {theirs['B']}/{theirs['S']}/{theirs['prompt']}/{theirs['T']}")
  return finite(theirs["median_s"]) / finite(mine["step_s"])


def joint_over_single(out: str, raw: dict) -> float:
  """Our joint step's time over the 1-prompt step's (the first variant, which also runs joint)."""
  rows = load(out, "prompt_tuning.json")["rows"]
  joint = [r for r in rows if r["S"] > 1]
  if not joint:
    raise Missing("prompt_tuning.json has no joint row (it failed or timed out)")
  raw["joint_step"] = {"prompts": joint[0]["S"], "joint_s": joint[0]["step_s"],
                       "single_s": [r["step_s"] for r in rows if r["S"] == 1][0]}
  return finite(joint[0]["joint_over_single"])


def scoring_speedup(out: str, raw: dict) -> float:
  """Our encode-once examples/s / the peer's at 64 x 3 (same lengths): our first attention's row."""
  ours = [r for r in load(out, "scoring.json")["results"] if r["scorer"] == "encode-once"]
  peer = [r for r in load(out, "anchor_hf_*.json")["results"] if r["kind"] == "rank_classification"]
  raw["scoring"] = {"ours": [{k: r[k] for k in ("attention", "examples", "choices", "median_s", "examples_per_s")}
                             for r in ours],
                    "peer": [{k: r[k] for k in ("examples", "choices", "median_s", "examples_per_s")} for r in peer]}
  shape = lambda r, length: (r["examples"], r["choices"], r[length], r["targets" if length == "inputs" else "T"])
  matched = [(m, p) for m in ours for p in peer if m["examples"] == 64 and m["choices"] == 3
             and shape(m, "inputs") == shape(p, "S")]
  if not matched:
    raise Missing("no 64 x 3 row at the same lengths in both scoring.json and the peer's results")
  mine, theirs = matched[0]
  return finite(mine["examples_per_s"]) / finite(theirs["examples_per_s"])


def evaluate_over_bench(out: str, raw: dict) -> float:
  result = load(out, "evaluate.json")
  raw["evaluate"] = {k: result.get(k) for k in ("examples", "batch_size", "median_s", "examples_per_s",
                                                  "first_run_s", "profile")}
  raw["evaluate"]["bench_examples_per_s"] = (result.get("bench") or {}).get("examples_per_s")
  if "over_bench" not in result:
    raise Missing("evaluate.json has no over_bench (the section stopped before the bench scorer ran)")
  return finite(result["over_bench"])


def plan_over_peak(out: str, raw: dict) -> float:
  """The smallest plan total / measured peak over the planned steps."""
  ratios, reasons = [], []
  for step in ("train", "scoring"):
    try:
      result = load(out, f"plan_{step}.json")
    except Missing as missing:
      reasons.append(str(missing))
      continue
    raw[f"plan_{step}"] = {k: result.get(k) for k in ("plan_total_bytes", "peak_bytes", "in_use_before_step_bytes",
                                                       "peak_after_plan_bytes", "plan_s", "first_call_s")}
    if "plan_over_peak" in result:
      ratios.append(finite(result["plan_over_peak"]))
    else:
      reasons.append(f"{step}: {result.get('unmeasured', 'no measured peak')}")
  if not ratios:
    raise Missing("; ".join(reasons))
  return min(ratios)


FIGURES = {"prompt_step_dropout_speedup": prompt_speedup, "joint32_over_single": joint_over_single,
           "scoring_speedup_64x3": scoring_speedup, "evaluate_end_to_end_over_bench": evaluate_over_bench,
           "plan_over_measured_peak": plan_over_peak}


def card(out: str) -> str | None:
  """The device named by the first section JSON that names one."""
  for name in ("scoring.json", "prompt_tuning.json", "evaluate.json", "plan_train.json", "anchor_hf_*.json"):
    try:
      return load(out, name)["device"]
    except (Missing, KeyError):
      continue
  return None


def summarize(out: str) -> dict:
  """The summary of the section JSONs under `out` (see the module doc)."""
  summary, reasons, raw = {"card": card(out)}, {}, {}
  for key, figure in FIGURES.items():
    try:
      summary[key] = figure(out, raw)
    except (Missing, KeyError, IndexError, TypeError, ValueError) as error:
      summary[key] = None
      reasons[key] = str(error) if isinstance(error, Missing) else f"unreadable: {type(error).__name__}: {error}"
  summary["goals"] = {key: None if summary[key] is None else
                      (summary[key] >= bound if sign == ">=" else summary[key] <= bound)
                      for key, (sign, bound) in GOALS.items()}
  summary.update(reasons=reasons, raw=raw)
  return summary


def bundle(out: str, path: str) -> None:
  """Writes {file name: content} of every JSON file under `out` to `path` (one file to bring back)."""
  sections = {}
  for name in sorted(glob.glob(os.path.join(out, "*.json"))):
    with open(name) as f:
      sections[os.path.basename(name)] = json.load(f)
  with open(path, "w") as f:
    json.dump(sections, f, indent=1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="the folder of the section JSONs (gpu.sh's $OUT/sections)")
  parser.add_argument("--write", default=None, help="the summary's path (default: OUT/gpu-<date>.json)")
  parser.add_argument("--bundle", default=None, help="also write every section JSON into this one file")
  args = parser.parse_args()
  summary = summarize(args.out)
  path = args.write or os.path.join(args.out, f"gpu-{datetime.date.today().isoformat()}.json")
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=1))
  print(f"written to {path}")
  if args.bundle:
    bundle(args.out, args.bundle)
    print(f"section JSONs bundled in {args.bundle}")


if __name__ == "__main__":
  main()

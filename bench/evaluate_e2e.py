"""Evaluation end to end, on the path `rospr evaluate` runs, against the bench scorer at the same shapes.

Usage: python bench/evaluate_e2e.py [--size xl] [--dtype bfloat16] [--attention cudnn] [--split train]
                                    [--max_examples N] [--batch_size 32] [--reps 3] [--json FILE]
       (CPU dry run: --size tiny --vocab_size 2000 --max_examples 4 --reps 1)

What runs: `rospr_jax.commands.evaluate.run`, the function `rospr evaluate --gin_file=models/t0_3b.gin
--gin_file=eval/generated_targets.gin --gin.CHECKPOINT=None --gin.METHODS="['T0']"` calls once gin has
parsed its files (gin itself is the only step left out), with the backbone of `backbone.load_backbone`
(random weights of --size, the project's offline SentencePiece vocabulary): the generated family's 12
held-out targets read from the data layer (--split train: 400 examples each, 4,800 in all), tokenized
by the evaluator, bucketed at T0's lengths (inputs up to 1024 tokens, choices up to 256), scored with the
hard prompt alone (method 'T0') batch by batch with the memory check on an accelerator, every record and
the report (results.json, results.md, the plots) written to a fresh folder. A first run compiles every
batch shape; the next --reps runs are timed, each into a new folder.

The bench scorer: the same jitted step (`eval.batching.scoring_step`, what `score_examples` calls) timed
as `bench/scoring.py` times it (median of 5 after 2 warm-up calls, arrays already on the device), at
each batch shape of the first run (counted as `score_examples` scored them: per target, BATCH_SIZE rows,
the last batch padded), summed over its batches: the examples/s the card gives the scorer alone. With
the offline vocabulary the generated inputs fall in the 32- and 64-token buckets, 2 choices of 8 tokens.
`over_bench` = end-to-end examples/s / the bench's; below --profile_below (0.8) one more run goes under cProfile and its top
functions (by own time) say what starves the card. Writes --json after each stage.

Random weights come from `init_params` already on the device; a checkpoint's come from
`model.param_tree.collect` as host (NumPy) arrays, which on one device without a mesh (NUM_PARTITIONS 1)
the scorer is handed as they are: that case is not what this measures.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import dataclasses
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp

from common import median_time
from rospr_jax import backbone as backbone_lib
from rospr_jax.commands import evaluate as evaluate_command
from rospr_jax.commands import targets as targets_lib
from rospr_jax.data import vocabulary
from rospr_jax.eval import batching
from rospr_jax.model import init_params

PATH = ("rospr_jax.commands.evaluate.run (what `rospr evaluate` runs after gin), methods ['T0'], targets "
        "['generated']")


def target_list(config: evaluate_command.TargetConfig) -> list:
  """The targets as the command reads them (`commands.targets`)."""
  tasks = targets_lib.resolve_target_tasks(config.targets, config.data_dir)
  return [targets_lib.target_from_task(t, config.split, max_examples=config.max_examples, seed=config.seed)
          for t in tasks]


def random_backbone(args: argparse.Namespace):
  """The command's loader (`backbone.load_backbone`) with random weights of --size and the offline
  vocabulary; --vocab_size widens the embedding of a size whose vocabulary is smaller than that one's
  2,000 pieces (`tiny`, for the CPU dry run of bench/gpu.sh)."""
  path = vocabulary.offline_vocabulary_path()
  if not args.vocab_size:
    return backbone_lib.load_backbone(None, size=args.size, dtype=args.dtype, attention=args.attention,
                                      vocabulary=path)
  loaded = backbone_lib.load_backbone(None, size=args.size, dtype=args.dtype, attention=args.attention)
  config = loaded.config.replace(vocab_size=args.vocab_size)
  return dataclasses.replace(loaded, config=config, params=init_params(config, jax.random.PRNGKey(0)),
                             vocabulary=path)


def recording_batches(shapes: collections.Counter):
  """A stand-in for `batching._score_batch` that counts each batch's (rows, input length, choice slots,
  target length) in `shapes`, then scores it as the original does."""
  original = batching._score_batch  # pylint: disable=protected-access

  def score_batch(params, model, batch, *args):
    shapes[batch.inputs.shape + batch.targets.shape[1:]] += 1
    return original(params, model, batch, *args)

  return score_batch


def bench_scorer(backbone, shapes: collections.Counter) -> list[dict]:
  """The scoring step alone at each evaluation shape: median seconds of one batch, as bench/scoring.py
  times it (random tokens, arrays on the device, no prompt: the method 'T0')."""
  step = batching.scoring_step(backbone.model, None)
  key, rows = jax.random.PRNGKey(0), []
  for (b, t, c, length), count in sorted(shapes.items()):
    key, k1, k2 = jax.random.split(key, 3)
    vocab = min(backbone.config.vocab_size, 2000)
    inputs = jax.random.randint(k1, (b, t), 3, vocab, jnp.int32)
    targets = jax.random.randint(k2, (b, c, length), 3, vocab, jnp.int32)
    seconds = median_time(lambda: step(backbone.params, inputs, targets, None).block_until_ready())
    rows.append({"rows": b, "inputs": t, "choices": c, "targets": length, "batches": count, "median_s": seconds})
    print(f"  bench scorer, {count} batches of {b} x {t} / {c} x {length}: {seconds:.4g} s each", flush=True)
  return rows


def evaluate_once(backbone, config, batch_size: int, profile: cProfile.Profile | None = None) -> float:
  """Seconds of one `rospr evaluate` run (method 'T0') into a new folder, removed afterwards."""
  with tempfile.TemporaryDirectory(prefix="rospr-e2e-") as out:
    start = time.perf_counter()
    if profile:
      profile.enable()
    evaluate_command.run(backbone=backbone, output_dir=out, targets=config, methods=["T0"],
                         scoring=evaluate_command.ScoringConfig(batch_size=batch_size))
    if profile:
      profile.disable()
    return time.perf_counter() - start


def first_run(backbone, config, batch_size: int) -> tuple[float, collections.Counter]:
  """(seconds, {batch shape: batches}) of the first run, which compiles every batch shape; the shapes
  are those `score_examples` scored (counted by a wrapper of `batching._score_batch`)."""
  shapes = collections.Counter()
  original = batching._score_batch  # pylint: disable=protected-access
  batching._score_batch = recording_batches(shapes)  # pylint: disable=protected-access
  try:
    return evaluate_once(backbone, config, batch_size), shapes
  finally:
    batching._score_batch = original  # pylint: disable=protected-access


def top_functions(profile: cProfile.Profile, count: int = 15) -> list[dict]:
  """The profile's `count` functions of most own time, printed as pstats prints them."""
  text = io.StringIO()
  stats = pstats.Stats(profile, stream=text).sort_stats("tottime")
  stats.print_stats(count)
  print(text.getvalue(), flush=True)
  rows = []
  for (filename, line, name), (_, calls, own, cumulative, _) in sorted(
      stats.stats.items(), key=lambda item: -item[1][2])[:count]:
    rows.append({"function": f"{os.path.basename(filename)}:{line}({name})", "calls": calls, "own_s": own,
                 "cumulative_s": cumulative})
  return rows


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="einsum", choices=["einsum", "xla", "cudnn"])
  parser.add_argument("--split", default="train", help="the targets' split (train: 400 examples each)")
  parser.add_argument("--max_examples", type=int, default=None, help="per target (MAX_EXAMPLES)")
  parser.add_argument("--batch_size", type=int, default=32, help="BATCH_SIZE")
  parser.add_argument("--reps", type=int, default=3, help="timed runs after the first")
  parser.add_argument("--profile_below", type=float, default=0.8,
                      help="profile one more run when end to end / bench falls below this (1 or more: always)")
  parser.add_argument("--vocab_size", type=int, default=None,
                      help="embedding rows instead of the size's (tiny: 2000, to take the offline vocabulary)")
  parser.add_argument("--json", help="write the results to this JSON file")
  return parser.parse_args()


def main() -> None:
  args = parse_args()
  result = {"path": PATH, "device": jax.devices()[0].device_kind, "jax": jax.__version__, "size": args.size,
            "dtype": args.dtype, "attention": args.attention, "split": args.split, "batch_size": args.batch_size}

  def save(**fields) -> None:
    result.update(fields)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f, indent=1)

  start = time.perf_counter()
  backbone = random_backbone(args)
  jax.block_until_ready(backbone.params)
  config = evaluate_command.TargetConfig(targets=("generated",), split=args.split, max_examples=args.max_examples)
  targets = target_list(config)
  examples = sum(len(t.inputs) for t in targets)
  save(init_s=time.perf_counter() - start, targets=len(targets), examples=examples)
  print(f"{len(targets)} generated targets, {examples} examples ({args.split}); {args.size} random weights "
        f"({args.dtype}, {args.attention} attention) in {result['init_s']:.1f} s", flush=True)
  seconds, batch_shapes = first_run(backbone, config, args.batch_size)
  save(first_run_s=seconds)
  print(f"  first run (compiles every batch shape): {result['first_run_s']:.2f} s", flush=True)
  runs = [evaluate_once(backbone, config, args.batch_size) for _ in range(args.reps)]
  median = statistics.median(runs)
  save(runs_s=runs, median_s=median, examples_per_s=examples / median)
  print(f"  end to end: {examples / median:.1f} examples/s (median of {runs})", flush=True)
  shapes = bench_scorer(backbone, batch_shapes)
  bench_s = sum(s["batches"] * s["median_s"] for s in shapes)
  save(bench={"shapes": shapes, "seconds": bench_s, "examples_per_s": examples / bench_s},
       over_bench=bench_s / median)
  print(f"  bench scorer at the same batches: {examples / bench_s:.1f} examples/s; end to end / bench = "
        f"{result['over_bench']:.3f}", flush=True)
  profile = None
  if result["over_bench"] < args.profile_below:
    profile = cProfile.Profile()
    save(profiled_run_s=evaluate_once(backbone, config, args.batch_size, profile))
  save(profile=top_functions(profile) if profile else None)


if __name__ == "__main__":
  main()

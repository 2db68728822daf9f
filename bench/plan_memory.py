"""`rospr plan --topology local`'s memory figure for one step against the card's measured peak.

Usage: python bench/plan_memory.py --step train|scoring [--size xl] [--dtype bfloat16] [--attention cudnn]
                                   [--train_shape 32x256x16] [--scoring_shape 64x256x3x8]
                                   [--prompt_length 100] [--dropout 0.1] [--remat minimal] [--json FILE]

One step per process, since a device's `peak_bytes_in_use` only grows:
1. `rospr_jax.plan.planner.plan`, the function `rospr plan` calls once gin has given it the run's settings
   (model shape, dtype and attention of the model file; the training run file's shapes, dropout, remat
   policy and Adafactor, or the scoring batch of an evaluation run file, here with a [P, H] prompt per
   row as the retrieval methods score), compiles the step for this process's devices as
   `--topology local` does, before any weight is on the device, and gives its figure
   (`report.StepCost.total`: arguments, temporaries, outputs not written into donated arguments, code,
   per device).
2. Random weights of that shape, a prompt state and a batch of random tokens are placed as the plan's
   abstract arguments are laid out, and the same step (the partitioned `MeshStep` the plan lowered, from
   JAX's compilation cache when the plan's compile was stored) runs 3 times.
3. `jax.devices()[0].memory_stats()["peak_bytes_in_use"]` is read: `plan_over_peak` = the plan's total /
   that peak (1 or more: the plan's figure covered what the card held).
Imports no TensorFlow or seqio (only gin-config, which the training step imports: see bench/gpu.sh).
On a backend without memory stats (the CPU) the measured fields are null and `unmeasured` says why; the
plan's figures are still written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import parse_shape
from rospr_jax.eval import batching
from rospr_jax.model import get_config, init_params, model_for, partitioning
from rospr_jax.plan import planner, steps, targets
from rospr_jax.prompt.train_step import default_optimizer, dropout_key, init_state, make_train_step

REPS = 3


def memory() -> dict | None:
  """This process's first device's memory stats (None where the backend reports none)."""
  try:
    return jax.devices()[0].memory_stats() or None
  except Exception:  # noqa: BLE001 - a backend without memory stats
    return None


def placed(abstract, values):
  """`values` laid out as the plan's abstract arguments `abstract` are (their shardings)."""
  return jax.device_put(values, jax.tree.map(lambda a: a.sharding, abstract))


def random_tokens(rng: np.random.Generator, abstract, vocab_size: int) -> np.ndarray:
  return rng.integers(3, min(vocab_size, 32000), abstract.shape).astype(np.int32)


def train_case(config, args, partitioner):
  """(plan settings, step, placed arguments) of the prompt-training step."""
  batch, inputs, targets_length = args.train_shape
  shapes = steps.TrainShapes(batch, inputs, targets_length, args.prompt_length, num_sources=1)
  optimizer = default_optimizer()
  settings = planner.TrainSettings(shapes, dropout_rate=args.dropout, remat_policy=args.remat, optimizer=optimizer)
  model = model_for(config.replace(dropout_rate=args.dropout, remat_policy=args.remat))  # as the planner builds it
  state, params, data, rng = steps.train_step_arguments(model, optimizer, partitioner, shapes, settings.rng_impl)

  def arguments():
    tokens = np.random.default_rng(0)
    table = jax.random.uniform(jax.random.PRNGKey(1), state.prompts.shape, minval=-0.5, maxval=0.5)
    values = {"inputs": random_tokens(tokens, data["inputs"], config.vocab_size),
              "targets": random_tokens(tokens, data["targets"], config.vocab_size),
              "source_ids": np.zeros(data["source_ids"].shape, np.int32)}
    return (placed(state, init_state(table, optimizer)), placed(params, init_params(config, jax.random.PRNGKey(0))),
            placed(data, values), placed(rng, dropout_key(0, settings.rng_impl)))

  return {"train": settings}, make_train_step(model, optimizer, partitioner=partitioner), arguments


def scoring_case(config, args, partitioner):
  """(plan settings, step, placed arguments) of the encode-once scoring step with a prompt per row."""
  batch, inputs, choices, length = args.scoring_shape
  shapes = steps.ScoringShapes(batch, inputs, choices, length, args.prompt_length)
  model = model_for(config)
  params, inputs_a, targets_a, prompts_a = steps.scoring_step_arguments(model, partitioner, shapes)

  def arguments():
    tokens = np.random.default_rng(0)
    prompts = np.random.default_rng(1).uniform(-0.5, 0.5, prompts_a.shape).astype(np.float32)
    return (placed(params, init_params(config, jax.random.PRNGKey(0))),
            placed(inputs_a, random_tokens(tokens, inputs_a, config.vocab_size)),
            placed(targets_a, random_tokens(tokens, targets_a, config.vocab_size)), placed(prompts_a, prompts))

  return {"scoring": shapes}, batching.scoring_step(model, partitioner), arguments


def run_step(step, arguments, donates_first: bool) -> float:
  """Seconds of the first of REPS calls (compile or cache load included); a donated first argument is
  fed back from each call's output."""
  start, first_s = time.perf_counter(), None
  for _ in range(REPS):
    out = step(*arguments)
    jax.block_until_ready(out)
    first_s = first_s or time.perf_counter() - start
    if donates_first:
      arguments = (out[0], *arguments[1:])
  return first_s


def measure(args) -> dict:
  """The plan's figures for the step, then the measured peak of running it (see the module doc)."""
  config = get_config(args.size, dtype=jnp.dtype(args.dtype), param_dtype=jnp.dtype(args.dtype),
                      attention_impl=args.attention)
  target = targets.resolve(targets.LOCAL)
  partitioner = partitioning.Partitioner(1).for_devices(target.devices)
  case = train_case if args.step == "train" else scoring_case
  settings, step, arguments = case(config, args, partitioner)
  start = time.perf_counter()
  (cost,) = planner.plan(config, target, partitioner=partitioning.Partitioner(1), **settings)
  result = {"step": args.step, "device": target.devices[0].device_kind, "jax": jax.__version__, "size": args.size,
            "dtype": args.dtype, "attention": args.attention, "plan": cost.as_dict(),
            "plan_s": time.perf_counter() - start, "plan_total_bytes": cost.total}
  print(f"plan ({args.step}, {args.size}): {cost.total / 2**30:.3f} GiB per device "
        f"(arguments {cost.arguments / 2**30:.3f}, temporaries {cost.temporaries / 2**30:.3f}), "
        f"compiled in {cost.compile_seconds:.1f} s", flush=True)
  after_plan = memory()
  values = arguments()
  jax.block_until_ready(values)
  before = memory()
  result["first_call_s"] = run_step(step, values, donates_first=args.step == "train")
  stats = memory()
  if not stats or "peak_bytes_in_use" not in stats:
    result["unmeasured"] = f"the {jax.default_backend()} backend reports no memory stats"
    return result
  peak = int(stats["peak_bytes_in_use"])
  result.update(peak_bytes=peak, peak_after_plan_bytes=int(after_plan.get("peak_bytes_in_use", 0)),
                in_use_before_step_bytes=int(before.get("bytes_in_use", 0)), bytes_limit=stats.get("bytes_limit"),
                plan_over_peak=cost.total / peak)
  print(f"measured peak {peak / 2**30:.3f} GiB ({before['bytes_in_use'] / 2**30:.3f} GiB in use before the step, "
        f"peak {after_plan.get('peak_bytes_in_use', 0) / 2**30:.3f} GiB after the plan's compile): plan / peak "
        f"= {result['plan_over_peak']:.3f}", flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--step", required=True, choices=["train", "scoring"])
  parser.add_argument("--size", default="small")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="einsum", choices=["einsum", "xla", "cudnn"])
  parser.add_argument("--train_shape", type=parse_shape, default=(32, 256, 16), help="B x inputs x targets")
  parser.add_argument("--scoring_shape", type=lambda s: tuple(int(v) for v in s.split("x")), default=(64, 256, 3, 8),
                      help="B x inputs x choices x targets")
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--dropout", type=float, default=0.1)
  parser.add_argument("--remat", default="minimal")
  parser.add_argument("--json", help="write the result to this JSON file")
  args = parser.parse_args()
  result = measure(args)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()

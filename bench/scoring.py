"""Rank-classification throughput of the encode-once scorer (and of the naive every-pair scorer).

Usage: python bench/scoring.py [--size xl] [--examples 64] [--choices 3] [--inputs 256] [--targets 8]
On an accelerator use --size xl --dtype bfloat16 (the T0_3B shape); on this CPU the default is small.
Random weights: throughput does not depend on the checkpoint. Prints a markdown table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import numpy as np

from common import forward_flops, markdown_table, median_time
from rospr_jax.eval.scoring import score_choices, score_choices_naive
from rospr_jax.model import get_config, init_params


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--examples", type=int, default=64)
  parser.add_argument("--choices", type=int, nargs="+", default=[3, 2])
  parser.add_argument("--inputs", type=int, default=256)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--attention", default="einsum", choices=["einsum", "xla", "cudnn"])
  parser.add_argument("--skip-naive", action="store_true")
  parser.add_argument("--json", help="Also write the results to this JSON file.")
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  config = get_config(args.size, dtype=dtype, param_dtype=dtype, attention_impl=args.attention)
  params = jax.jit(lambda rng: init_params(config, rng))(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  rows, records = [], []
  for num_choices in args.choices:
    b, c = args.examples, num_choices
    inputs = jnp.asarray(rng.integers(3, 32000, (b, args.inputs)), jnp.int32)
    targets = jnp.asarray(rng.integers(3, 32000, (b, c, args.targets)), jnp.int32)
    scorers = [("encode-once", score_choices)] + ([] if args.skip_naive else [("every pair", score_choices_naive)])
    for name, scorer in scorers:
      run = lambda: scorer(params, inputs, targets, config=config).block_until_ready()
      seconds = median_time(run, reps=args.reps)
      encoder_batch = b if name == "encode-once" else b * c
      flops = forward_flops(config, b * c, args.inputs, args.targets, encoder_batch=encoder_batch)
      peer_flops = forward_flops(config, b * c, args.inputs, args.targets)  # the work the peer does
      rows.append([name, f"{b} x {c}", seconds, b / seconds, flops / seconds / 1e12,
                   peer_flops / seconds / 1e12])
      records.append(dict(scorer=name, examples=b, choices=c, inputs=args.inputs, targets=args.targets,
                          median_s=seconds, examples_per_s=b / seconds, tflops=flops / seconds / 1e12,
                          peer_equivalent_tflops=peer_flops / seconds / 1e12))
  device = jax.devices()[0]
  print(f"Rank classification, size={args.size} ({config.num_parameters() / 1e9:.2f}B params), "
        f"dtype={args.dtype}, attention={args.attention}, inputs={args.inputs}, targets={args.targets}, device={device.device_kind}")
  print(markdown_table(["scorer", "examples x choices", "median s", "examples/s", "TFLOP/s done",
                        "TFLOP/s peer-equivalent"], rows))
  result = {"device": device.device_kind, "size": args.size, "dtype": args.dtype,
            "attention": args.attention, "results": records}
  print(json.dumps(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()

"""`rospr demo`: the offline end-to-end run on a tiny model (see `pipeline.py`).

    rospr demo [--output_dir demo_output] [--quick]

Needs only what `scripts/setup.sh` installs and caches (the bigbench archive and the offline
vocabulary, from `rospr fetch`). Writes `report.md`, JSON and plots into the output directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr demo", description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", default="demo_output", help="where the report goes")
  parser.add_argument("--quick", action="store_true",
                      help="a much smaller run (a minute or two) to check the pipeline")
  parser.add_argument("--log_level", default="INFO")
  args = parser.parse_args(argv)
  from rospr_jax import gin_cli
  gin_cli.setup_logging(args.log_level)
  import jax
  from rospr_jax.data import archives
  from rospr_jax.demo import pipeline
  # Compiled programs are cached across runs (the demo compiles a few dozen shapes).
  jax.config.update("jax_compilation_cache_dir", str(archives.cache_dir() / "jax_compilation_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  settings = pipeline.DemoSettings()
  if args.quick:
    settings = dataclasses.replace(settings, num_sources=6, max_train_per_source=64, backbone_steps=30,
                                   prompt_steps=10, library_n=16, max_eval_examples=12,
                                   max_held_in_examples=12, input_length=96, target_length=16)
  start = time.perf_counter()
  summaries = pipeline.run(args.output_dir, settings)
  minutes = (time.perf_counter() - start) / 60
  print(f"Demo finished in {minutes:.1f} min; report: {os.path.join(args.output_dir, 'report.md')}")
  for name, summary in summaries.items():
    averages = ", ".join(f"{m} {100 * a:.1f}%" for m, a in summary["average_mean"].items())
    print(f"  {name}: {averages}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

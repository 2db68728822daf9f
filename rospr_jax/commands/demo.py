"""`rospr demo`: the offline end-to-end run, every step of RoSPr on a tiny model, on a laptop CPU.

    rospr demo [--output_dir demo_output] [--quick]

Needs nothing but the installed package: the data is the project's generated task family
(`rospr_jax.data.generated`: 4 skills x 4 answer formats x 8 frames, promptsource-style) and the
vocabulary the committed offline one. Writes `report.md`, `demo.json`, `results.*` and plots:

1. Data: the family's templates in three roles (the stand-in T0's, the sources', the held-out targets').
2. Backbone: a tiny T0-like T5 multitask-trained on every skill in two answer formats (yes/no, label
   words), as T0 was made from T5 on P3. Saved as a Hugging Face checkpoint.
3. Soft prompts: one per source template, all trained jointly with the backbone frozen.
4. Library: n instances per source embedded by the backbone's encoder (the retriever), ScaNN index.
5. Evaluation of the held-out targets: the hard prompt alone (T0), RoSPr, INTER, VAR, INTER+VAR, a
   random library prompt, the oracle (labels: an upper bound) and the baselines: one multitask prompt
   trained on every source (`MT prompt`), and prompts fine-tuned on 16 labelled training examples of
   each target, from RoSPr's prompt and from the default initializer; with Wilson 95% intervals.
6. Report: the tables, retrieval quality (does the retrieved source share the target's skill, its
   answer format?) and the paper's factor analysis in miniature (`demo_analysis.py`).

Every step reuses the project's one implementation of it (trainer, library builder, retrieval,
scorer, report); this module only wires them together with small settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Everything else (JAX, the steps in `demo_run`) is imported once the flags are parsed: `--help` and
# flag errors answer at once.


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr demo", description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--output_dir", default="demo_output", help="where the report goes")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an earlier demo's output at --output_dir (never a folder of other files)")
  parser.add_argument("--quick", action="store_true",
                      help="a much smaller run that checks the pipeline (no figures worth reading)")
  parser.add_argument("--log_level", default="INFO")
  args = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  from rospr_jax import gin_cli, storage  # pylint: disable=g-import-not-at-top
  from rospr_jax.commands import common, demo_analysis  # pylint: disable=g-import-not-at-top
  from rospr_jax.commands.demo_run import QUICK, DemoSettings, check_parent_writable, run  # pylint: disable=g-import-not-at-top
  from rospr_jax.data import archives  # pylint: disable=g-import-not-at-top
  gin_cli.setup_logging(args.log_level)
  # Compiled programs are cached across runs (the demo compiles a few dozen shapes).
  jax.config.update("jax_compilation_cache_dir", str(archives.cache_dir() / "jax_compilation_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  settings = QUICK if args.quick else DemoSettings()
  start = time.perf_counter()
  try:
    check_parent_writable(args.output_dir)
    result = run(args.output_dir, settings, overwrite=args.overwrite)
  except ValueError as e:
    return common.error("rospr demo", e)
  except OSError as e:  # a full disk, a folder that became read-only: named
    return common.error("rospr demo", storage.with_path(e, args.output_dir))
  minutes = (time.perf_counter() - start) / 60
  print(f"Demo finished in {minutes:.1f} min; report: {os.path.join(args.output_dir, 'report.md')}")
  entry = result["pooled"]["all"]
  print("  pooled over held-out targets: " + ", ".join(
      f"{m} {demo_analysis.cell(a, entry['examples'])}" for m, a in entry["accuracy"].items()))
  print("  " + demo_analysis.verdict(result["pooled"]))
  print("  " + demo_analysis.baselines_sentence(result["pooled"]))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

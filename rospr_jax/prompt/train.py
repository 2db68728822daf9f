"""`rospr train-prompts`: train soft prompts with a gin-configured run, in T5X's command-line style.

    rospr train-prompts \\
      --gin_file=models/t0_3b.gin --gin_file=prompt_tuning/train_seqio.gin \\
      --gin.BACKBONE_CHECKPOINT="'/ckpt/T0_3B'" --gin.MODEL_DIR="'/runs/rospr_prompts'" \\
      --gin.SOURCES="['some_task', 'some_mixture']" --gin.TRAIN_STEPS=20000

`--gin_file` may repeat; files are looked up in the working directory, the `--gin_search_paths`
and the project's gin directory. `--gin.NAME=VALUE` binds a macro (T5X's shorthand for
`--gin_bindings='NAME = VALUE'`); values are gin literals, so strings need inner quotes.
`%gin.REQUIRED` macros that are left unset are reported before anything runs. The operative config
lands in `<MODEL_DIR>/config.gin`; rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import sys

import gin

from rospr_jax import gin_cli


def main(argv: list[str]) -> int:
  args, bindings = gin_cli.parse_args(argv, "rospr train-prompts", __doc__, "prompt_tuning/train_seqio.gin")
  gin_cli.setup_logging(args.log_level)
  from rospr_jax.prompt import trainer  # Registers the configurables the gin files name.
  search = [p for p in args.gin_search_paths.split(",") if p]
  try:
    gin_cli.parse_gin(args.gin_file, bindings, search)
  except (OSError, SyntaxError, ValueError) as e:
    gin.clear_config()
    print(f"rospr train-prompts: gin config error: {e}", file=sys.stderr)
    return 2
  try:
    result = trainer.train()
  except trainer.NonFiniteLossError as e:
    print(f"rospr train-prompts: {e}", file=sys.stderr)
    return 1
  except (OSError, ValueError) as e:
    logging.debug("train-prompts failed", exc_info=True)
    print(f"rospr train-prompts: error: {e}", file=sys.stderr)
    return 2
  finally:
    gin.clear_config()  # Leave no bindings behind for callers in the same process.
  print(f"Trained {len(result.names)} prompts for {result.step} steps; exports in {result.export_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

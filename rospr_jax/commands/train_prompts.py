"""`rospr train-prompts`: train soft prompts with a gin-configured run, in T5X's command-line style.

    rospr train-prompts \\
      --gin_file=models/t0_3b.gin --gin_file=prompt_tuning/train_seqio.gin \\
      --gin.CHECKPOINT="'/ckpt/T0_3B'" --gin.MODEL_DIR="'/runs/rospr_prompts'" \\
      --gin.SOURCES="['some_task', 'some_mixture']" --gin.TRAIN_STEPS=20000

`--gin_file` may repeat; files are looked up in the working directory, the `--gin_search_paths`
and the project's gin directory. `--gin.NAME=VALUE` binds a macro (T5X's shorthand for
`--gin_bindings='NAME = VALUE'`); values are gin literals, so strings need inner quotes.
`%gin.REQUIRED` macros that are left unset are reported before anything runs. The model file
(`models/*.gin`) sets the backbone (CHECKPOINT, DTYPE, ATTENTION, VOCABULARY), the same file that
`rospr evaluate` takes. The operative config lands in `<MODEL_DIR>/config.gin`; rerunning the same
command resumes from the last checkpoint (refused, naming the setting, when the learning rate, the
optimizer, dropout or the examples changed) and writes that segment's config to
`<MODEL_DIR>/config-<step>.gin`.

SIGTERM (a spot or preemptible TPU VM's notice) or SIGINT stops the run, on every process, after the
step they agree on (JAX's preemption sync point), checkpointed there: one line `preempted at step N:
checkpoint saved; rerun the same command to resume.` and exit code 75.
"""

from __future__ import annotations

import sys

from rospr_jax.commands import common

PROG = "rospr train-prompts"


def main(argv: list[str]) -> int:
  from rospr_jax import gin_cli  # pylint: disable=g-import-not-at-top
  example_file = "prompt_tuning/train_seqio.gin"
  gin_cli.parse_args(argv, PROG, __doc__, example_file)  # --help and flag errors answer before JAX loads
  from rospr_jax.prompt import trainer  # pylint: disable=g-import-not-at-top  (registers the configurables)
  from rospr_jax.prompt.loop import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  code, result = common.run_gin_command(
      argv, prog=PROG, doc=__doc__, example_file=example_file, run=trainer.train,
      failures=((NonFiniteLossError, 1), (OSError, 2), (ValueError, 2)))
  if code == 0:
    resumed = result.resumed_from
    segment = "" if resumed is None else f" (resumed from step {resumed}: {result.step - resumed} more steps)"
    print(f"Trained {len(result.names)} prompts for {result.step} steps{segment}; exports in "
          f"{result.export_dir}")
  return code


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""`rospr plan`: compile the steps a run executes for a TPU slice (or this process's devices) ahead of
time and say, per device, whether they fit and how long a step takes, before anyone rents a TPU.

    rospr plan --gin_file=models/t0_3b.gin --gin_file=prompt_tuning/train_seqio.gin --topology v4-8
    rospr plan --gin_file=models/t0_3b.gin --gin_file=eval/held_out_targets.gin --topology v5litepod-8
    rospr plan --gin_file=models/tiny.gin --gin_file=prompt_tuning/train_jsonl.gin --topology local

It takes the gin model and run files of `rospr train-prompts` and `rospr evaluate` (their
`%gin.REQUIRED` values may stay unset: no weights and no data are read; the model's shape comes from
the model file's size, or from the checkpoint's config alone). A training run file plans the prompt
training step (BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH, PROMPT_LENGTH, SOURCES, DROPOUT_RATE,
REMAT_POLICY, NUM_PARTITIONS, the optimizer); an evaluation run file the encode-once scoring step at
its BATCH_SIZE and T0's largest bucket (inputs of 1024 tokens, 2 choices of 256 tokens per row), and
the library's embedding step (the retriever's encoder, RETRIEVER_CHECKPOINT's shape or else the
`small` one, at build-library's batch: 128 texts of 512 tokens). Each step is the run's own jitted
function, laid out by the run's own partitioner (`partitioning.Partitioner`, from NUM_PARTITIONS as the
command builds it), lowered for abstract parameters carrying its shardings and compiled by the
target's compiler (libtpu for a TPU topology: `pip install 'rospr-jax[tpu]'`).

--topology: a Cloud TPU slice (v3-8, v4-8, v4-32, v5p-8, v5litepod-8, v6e-8, ...), a topology such as
v4:2x2x1, or `local` (this process's devices: on a TPU VM or a GPU the compile the run will do).
Prints a markdown table (arguments, temporaries, outputs and their total per device against the
chip's HBM, TFLOPs and seconds per step: the TPU compiler's optimum when positive and plausible, else
a bound at the chip's peak, saying which), the training hours for TRAIN_STEPS, the evaluation hours
for the TARGETS' examples (`commands.workload`: counted, or the stated held-out sizes; --eval_examples
gives a count) with the METHODS, and a one-line verdict; --out writes the plan as JSON. On a
multi-host slice the global program is compiled, and the rows each host feeds are said. A step that does not fit is compiled again with the obvious
remedies (NUM_PARTITIONS doubled up to 8, a stronger REMAT_POLICY, half the BATCH_SIZE; --no_search
skips them) and the verdict names the first that fits. Exit 2 when a step does not fit (the verdict
says by how much) or on bad input.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rospr_jax.commands import common

PROG = "rospr plan"
EXAMPLE_FILE = "prompt_tuning/train_seqio.gin"
TRAIN = "rospr_jax.prompt.trainer.train"
EVALUATE = "rospr_jax.commands.evaluate.run"
BACKBONE = "rospr_jax.backbone.load_backbone"
LOOP = "rospr_jax.prompt.configs.LoopConfig"  # read, not made: TRAIN_STEPS may be left unset
TARGETS = "rospr_jax.commands.evaluate.TargetConfig"  # read, not made: TARGETS may be left unset
LIBRARY = "rospr_jax.commands.evaluate.LibraryConfig"
# evaluate's largest bucket: batching.T0_INPUT_LENGTH inputs, max_decoder_tokens (512) answer tokens
# per row as 2 choices of T0_TARGET_LENGTH.
SCORING_CHOICES = 2


def _add_arguments(parser) -> None:
  parser.add_argument("--topology", required=True,
                      help="v3-8, v4-8, v4-32, v5p-8, v5litepod-8, v6e-8, ..., a topology such as v4:2x2x1, "
                           "or local")
  parser.add_argument("--out", default=None, help="write the plan as JSON to this file")
  parser.add_argument("--eval_examples", type=common.positive_int, default=None,
                      help="evaluation examples to project the hours for (default: counted from TARGETS)")
  parser.add_argument("--library_texts", type=common.positive_int, default=None,
                      help="library texts to project the embedding hours for (default: none projected)")
  parser.add_argument("--no_search", action="store_true",
                      help="when a step does not fit, do not try the remedies (more NUM_PARTITIONS, a stronger "
                           "REMAT_POLICY, half the BATCH_SIZE; one compile each)")


def _resolve(value: Any) -> Any:
  """A gin value with its macros followed, and the path a local copy would be made of (the plan reads
  a checkpoint's config where it is); None for `%gin.REQUIRED` left unset."""
  import gin  # pylint: disable=g-import-not-at-top
  while isinstance(value, gin.config.ConfigurableReference):
    configurable = value.configurable
    if configurable.module == "gin" and configurable.name == "macro":
      value = gin.query_parameter("%" + value.scoped_selector.rsplit("/", 1)[0])
    elif configurable.module == "rospr_jax.storage.copies" and configurable.name == "local_copy":
      value = gin.query_parameter(value.scoped_selector + ".path")
    elif configurable.name == "REQUIRED":
      return None
    else:
      return value
  return value


def _bindings(name: str) -> dict[str, Any]:
  """The bound parameters of a configurable, macros followed, references to configurables kept."""
  import gin  # pylint: disable=g-import-not-at-top
  try:
    bindings = gin.get_bindings(name, resolve_references=False)
  except ValueError:  # not registered: its run file was not given
    return {}
  return {key: _resolve(value) for key, value in bindings.items()}


def _call(reference: Any) -> Any:
  """What a gin `@configurable()` reference evaluates to (with its bindings)."""
  return reference.scoped_configurable_fn() if reference.evaluate else reference.scoped_configurable_fn


def _read_config(checkpoint: str, setting: str):
  """The config of the checkpoint `checkpoint` (`setting` gave it), read where it is, without its weights:
  a local or mounted folder (the formats read local files, and a copy of a URL would fetch every weight)."""
  from rospr_jax import storage  # pylint: disable=g-import-not-at-top
  from rospr_jax.model import checkpoints  # pylint: disable=g-import-not-at-top
  if storage.is_url(checkpoint):
    raise ValueError(f"{setting} {checkpoint} is a URL: rospr plan reads the model's shape from the checkpoint's "
                     "config without its weights, in a local or mounted folder; mount the bucket (gcsfuse) and "
                     "give that path, or plan with the model file of its size (models/t0_3b.gin).")
  return checkpoints.read_config(checkpoint)


def _config():
  """The backbone's config as `load_backbone` would build it, from its size or the checkpoint's config."""
  from rospr_jax import backbone as backbone_lib  # pylint: disable=g-import-not-at-top
  from rospr_jax.model import get_config  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  args = _bindings(BACKBONE)
  dtype = jnp.dtype(backbone_lib.dtype_name(args.get("dtype", "float32")))
  attention = args.get("attention", "einsum")
  if args.get("size"):
    return get_config(args["size"], dtype=dtype, param_dtype=dtype, attention_impl=attention)
  if not args.get("checkpoint"):
    raise ValueError("the model file gives neither a size nor a CHECKPOINT to read the model's shape from.")
  return _read_config(args["checkpoint"], "CHECKPOINT").replace(dtype=dtype, param_dtype=dtype,
                                                               attention_impl=attention)


def _config_of(bindings: dict, name: str, default: Any) -> Any:
  """The config object a run file binds parameter `name` to (`@configs.ShapeConfig()`: made with its
  bindings, so checked), or `default`."""
  reference = bindings.get(name)
  return _call(reference) if hasattr(reference, "scoped_configurable_fn") else (reference or default)


def _train_settings(train: dict):
  from rospr_jax.plan import planner, steps  # pylint: disable=g-import-not-at-top
  from rospr_jax.prompt import configs, optimizers  # pylint: disable=g-import-not-at-top
  from rospr_jax.prompt.train_step import default_optimizer  # pylint: disable=g-import-not-at-top
  sources = _resolve(_bindings("rospr_tasks.seqio_input.seqio_sources").get("tasks"))
  optimizer = train.get("optimizer")
  transformation = (default_optimizer() if optimizer is None else
                    optimizers.resolve(_call(optimizer) if hasattr(optimizer, "scoped_configurable_fn")
                                       else optimizer)[0])
  shape, step = _config_of(train, "shapes", configs.ShapeConfig()), _config_of(train, "step", configs.StepConfig())
  shapes = steps.TrainShapes(batch_size=shape.batch_size, input_length=shape.input_length,
                             target_length=shape.target_length, prompt_length=shape.prompt_length,
                             num_sources=len(sources) if isinstance(sources, (list, tuple)) and sources else 1)
  return planner.TrainSettings(shapes, dropout_rate=step.dropout_rate, remat_policy=step.remat_policy,
                               optimizer=transformation, rng_impl=step.dropout_rng_impl), step.partitioner()


def _scoring_config(evaluate: dict):
  """evaluate's `ScoringConfig` (BATCH_SIZE, NUM_PARTITIONS; its defaults when the run file binds none)."""
  from rospr_jax.commands.evaluate import ScoringConfig  # pylint: disable=g-import-not-at-top
  return _config_of(evaluate, "scoring", ScoringConfig())


def _scoring_shapes(evaluate: dict, prompt_length: int):
  from rospr_jax.eval import batching  # pylint: disable=g-import-not-at-top
  from rospr_jax.plan import steps  # pylint: disable=g-import-not-at-top
  return steps.ScoringShapes(batch_size=_scoring_config(evaluate).batch_size, input_length=batching.T0_INPUT_LENGTH,
                             choices=SCORING_CHOICES, target_length=batching.T0_TARGET_LENGTH,
                             prompt_length=prompt_length)


def _embedding_settings():
  """The retriever's embedding step at build-library's batch: RETRIEVER_CHECKPOINT's shape (its config
  alone) or else the `small` one, weights in float32 computed in RETRIEVER_DTYPE (default float32)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rospr_jax.library import embed  # pylint: disable=g-import-not-at-top
  from rospr_jax.model import get_config  # pylint: disable=g-import-not-at-top
  from rospr_jax.plan import planner, steps  # pylint: disable=g-import-not-at-top
  library = _bindings(LIBRARY)
  dtype = jnp.dtype(library.get("retriever_dtype") or "float32")
  checkpoint = library.get("retriever_checkpoint")
  if checkpoint:
    config, source = _read_config(checkpoint, "RETRIEVER_CHECKPOINT"), f"RETRIEVER_CHECKPOINT {checkpoint}"
  else:
    config, source = get_config("small"), "the small shape (no RETRIEVER_CHECKPOINT given)"
  config = config.replace(dtype=dtype, param_dtype=jnp.float32)
  length = embed.DEFAULT_MAX_LENGTH
  rows = max(1, embed.DEFAULT_TOKENS_PER_BATCH // length)
  return planner.EmbeddingSettings(config, steps.EmbeddingShapes(batch_size=rows, input_length=length),
                                   source=f"{source}, {jnp.dtype(dtype).name}")


def _workload(flags):
  """The evaluation rows to project: --eval_examples, or those of TARGETS (MAX_EXAMPLES each)."""
  from rospr_jax.commands import workload  # pylint: disable=g-import-not-at-top
  if flags.eval_examples:
    rows = workload.scoring_rows(flags.eval_examples, SCORING_CHOICES)
    return workload.Workload(rows=rows, examples=flags.eval_examples, how="--eval_examples")
  targets = _bindings(TARGETS)
  return workload.evaluation_workload(targets.get("targets"), max_examples=targets.get("max_examples"))


def _methods(evaluate: dict) -> int:
  from rospr_jax.pipeline.evaluate import default_methods  # pylint: disable=g-import-not-at-top
  methods = evaluate.get("methods")
  return len(methods) if isinstance(methods, (list, tuple)) else len(default_methods())


def run(flags) -> dict:
  """Plans the configured steps for `flags.topology`; returns the plan (as written to --out)."""
  from rospr_jax.plan import planner, report, targets  # pylint: disable=g-import-not-at-top
  from rospr_jax.plan import remedies as remedies_lib  # pylint: disable=g-import-not-at-top
  from rospr_jax.prompt import prompts  # pylint: disable=g-import-not-at-top
  train, evaluate = _bindings(TRAIN), _bindings(EVALUATE)
  if not train and not evaluate:
    raise ValueError("no run file: give prompt_tuning/train_*.gin (the training step) and / or "
                     "eval/*_targets.gin (the scoring and embedding steps).")
  config = _config()
  # The partitioner the command builds (StepConfig's, or ScoringConfig's): laid over the target's devices.
  train_settings, partitioner = (_train_settings(train) if train else
                                 (None, _scoring_config(evaluate).partitioner()))
  target = targets.resolve(flags.topology)
  prompt_length = train_settings.shapes.prompt_length if train_settings else prompts.DEFAULT_LENGTH
  scoring = _scoring_shapes(evaluate, prompt_length) if evaluate else None
  embedding = _embedding_settings() if evaluate else None
  costs = planner.plan(config, target, partitioner=partitioner, train=train_settings, scoring=scoring,
                       embedding=embedding)
  remedies = {}
  for cost in costs if not flags.no_search else ():
    if not cost.fits and cost.step in ("train", "scoring"):
      found = remedies_lib.find_remedy(config, target, cost, partitioner=partitioner, train=train_settings,
                                       scoring=scoring)
      remedies[cost.step] = (found.describe() if found else
                             "none of NUM_PARTITIONS up to 8, a stronger REMAT_POLICY or half the BATCH_SIZE "
                             "(three times) fits")
  verdict = report.verdict(costs, target, remedies)
  evaluation = _workload(flags) if evaluate else None
  methods = _methods(evaluate) if evaluate else None
  notes = report.projections(costs, target, train_steps=_bindings(LOOP).get("num_steps") if train else None,
                             evaluation=evaluation, methods=methods, library_texts=flags.library_texts,
                             partitioner=partitioner)
  print(report.markdown(costs, target))
  print("\n".join(["", *notes, ""]) if notes else "")
  print(verdict)
  result = {"topology": flags.topology, "devices": len(target.devices), "hosts": target.hosts,
            "device_kind": target.devices[0].device_kind, "model": str(config),
            "num_partitions": partitioner.num_partitions, "steps": [c.as_dict() for c in costs],
            "fits": all(c.fits for c in costs), "notes": notes, "remedies": remedies, "verdict": verdict}
  if evaluation is not None:
    result["eval_examples"] = {**evaluation.as_dict(), "methods": methods}
  if flags.out:
    from rospr_jax import storage  # pylint: disable=g-import-not-at-top
    storage.write_json(flags.out, result, indent=1)
  return result


def main(argv: list[str]) -> int:
  from rospr_jax import gin_cli  # pylint: disable=g-import-not-at-top
  flags, _ = gin_cli.parse_args(argv, PROG, __doc__, EXAMPLE_FILE, _add_arguments)  # before JAX loads
  if flags.topology != "local":  # compiled for the topology, nothing computed: leave any device here alone
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  # The configurables of both run files register before gin parses and locks the config.
  from rospr_jax.plan import remedies  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from rospr_jax.prompt import trainer  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  code, result = common.run_gin_command(argv, prog=PROG, doc=__doc__, example_file=EXAMPLE_FILE, run=run,
                                        required=False, add_arguments=_add_arguments)
  if code == 0 and not result["fits"]:
    return 2
  return code


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

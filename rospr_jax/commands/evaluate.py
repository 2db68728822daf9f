"""`rospr evaluate`: zero-shot rank classification of target (dataset, template) pairs, with the hard
prompt alone (T0) and with the prompts RoSPr, INTER, VAR and INTER+VAR retrieve from a library; on
request (METHODS) also the reference rows 'Random' (a seeded random library prompt) and
'Oracle (labels)' (the best library prompt chosen with the target's labels: an upper bound), and the
baselines 'MT prompt' (one prompt trained on every source: MT_PROMPT names its export) and
'Fine-tuned (k labels, from RoSPr)' / 'Fine-tuned (k labels)' (prompts tuned on k labelled examples of
each target's training split: FINE_TUNE_*).

    rospr evaluate --gin_file=models/t0_3b.gin --gin_file=eval/bigbench_targets.gin \\
        --gin.CHECKPOINT="'/ckpt/T0_3B'" --gin.LIBRARY_DIR="'/runs/library'" \\
        --gin.RETRIEVER_CHECKPOINT="'/ckpt/retriever'" --gin.OUTPUT_DIR="'/runs/eval'"

The model file (`models/*.gin`: CHECKPOINT, DTYPE, ATTENTION, VOCABULARY) is the one `rospr
train-prompts` takes. Results land in OUTPUT_DIR: `results.json`, `results.md` (datasets as columns,
methods as rows), two plots (`accuracy.png`, `retrieval.png`; the four report files are replaced
together, never one without the others),
`selections/<target>/<method>/`, `records/` (one file per target and method, written as each is
scored: a rerun into the same folder resumes, first removing what a killed run left) and the
operative `config.gin`.

SIGTERM (a spot or preemptible TPU VM's notice) or SIGINT stops the evaluation, on every process,
once the record in progress is written, at the record they agree on: one line `preempted at record
N of M: records saved; rerun the same command to resume.` and exit code 75.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
from typing import Any, Sequence

import numpy as np

from rospr_jax import multihost, storage
from rospr_jax.config_fields import (NON_NEGATIVE, POSITIVE, check_fields, names, optional, path, problem, refuse,
                                     setting, string)
from rospr_jax.storage import copies
from rospr_jax.commands import common, targets as targets_lib
from rospr_jax.pipeline.labelled import FineTuneConfig
from rospr_jax.retrieval.selection import SelectionConfig

# rospr_jax.pipeline.evaluate (JAX) is imported where it is used: --help and flag errors answer at once.

PROG = "rospr evaluate"


@dataclasses.dataclass(frozen=True)
class TargetConfig:
  """What is scored: the targets (groups or task names), where their data is, which split, how many
  examples of each (a seeded sample) and the seed of that sample and of the queries."""
  targets: Sequence[str] = setting("TARGETS", rule=names("['held_out']"))
  data_dir: str | None = setting("DATA_DIR", None, optional(path))
  split: str | None = setting("SPLIT", None, optional(string))
  max_examples: int | None = setting("MAX_EXAMPLES", None, optional(POSITIVE))
  seed: int = setting("SEED", 0, NON_NEGATIVE)

  def __post_init__(self):
    check_fields(self)


@dataclasses.dataclass(frozen=True)
class LibraryConfig:
  """The library the retrieval methods search, its retriever, and the retriever's compute dtype (None:
  the one the library was built with)."""
  library_dir: str | None = setting("LIBRARY_DIR", None, optional(path))
  retriever_checkpoint: str | None = setting("RETRIEVER_CHECKPOINT", None, optional(path))
  retriever_dtype: str | None = setting("RETRIEVER_DTYPE", None, optional(string))

  def __post_init__(self):
    check_fields(self)


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  """How the examples are scored: rows per batch, and model-parallel partitions of the mesh."""
  batch_size: int = setting("BATCH_SIZE", 32, POSITIVE)
  num_partitions: int = setting("NUM_PARTITIONS", 1, POSITIVE)

  def __post_init__(self):
    check_fields(self)

  def partitioner(self):
    """The run's layout over every device (`model.partitioning.Partitioner`: NUM_PARTITIONS on the mesh's
    `model` axis); evaluate and `rospr plan` build theirs here."""
    from rospr_jax.model import partitioning  # pylint: disable=g-import-not-at-top
    return partitioning.Partitioner(self.num_partitions)


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
  """What the baselines read: the multitask prompt of 'MT prompt' (a prompt export of train-prompts run
  with MULTITASK = True, or a [P, H] .npy) and how the fine-tuned methods train."""
  multitask_prompt: str | None = setting("MT_PROMPT", None, optional(path))
  fine_tune: FineTuneConfig = FineTuneConfig()

  def __post_init__(self):
    check_fields(self)


def run(*, backbone: Any, output_dir: str, targets: TargetConfig, methods: Sequence[str] | None = None,
        library: LibraryConfig = LibraryConfig(), selection: SelectionConfig = SelectionConfig(),
        scoring: ScoringConfig = ScoringConfig(), baselines: BaselineConfig = BaselineConfig(),
        preamble: str = "", write_config: bool = False) -> dict:
  """Evaluates `targets` with `backbone` and writes the report to `output_dir`.

  Args:
    backbone: a `rospr_jax.backbone.Backbone`, or a callable returning one (the model gin file binds
      `load_backbone`).
    methods: method names (None: the hard prompt and every selection rule but the reference rows,
      `pipeline.evaluate.default_methods()`; `pipeline.evaluate.all_methods()` lists them all).
    targets, library, scoring: what is scored, the library and its retriever, the batches.
    baselines: what 'MT prompt' and the fine-tuned methods read.
    selection: Q, N, N', K and eps of the selection rules.
    write_config: also write gin's operative config to `<output_dir>/config.gin` (the command does).
    The rest: see gin/eval/base.gin.
  """
  from rospr_jax.eval import report  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline.evaluate import default_methods  # pylint: disable=g-import-not-at-top

  refuse([problem("output_dir", "OUTPUT_DIR", output_dir, path),
          problem("methods", "METHODS", methods, optional(names("['T0', 'RoSPr']")))])
  # Targets first: one that cannot be read (BIG-bench not configured, a dataset missing) is refused
  # before the library is copied or the backbone loaded, and no target is skipped.
  task_list = targets_lib.resolve_target_tasks(targets.targets, targets.data_dir)
  target_list = _targets(targets, task_list)
  # a URL is read through a checked local copy, named by the URL
  library_dir = library.library_dir and copies.local_copy(library.library_dir, "LIBRARY_DIR")
  writes = multihost.is_writer()  # every process scores (the mesh spans all hosts); one writes
  # OUTPUT_DIR is used in place, local or at a URL: each record is one file, written whole as it is
  # scored (a rerun resumes from them). One run at a time (process 0 holds the lock).
  output_dir = storage.absolute(storage.as_path(output_dir, "OUTPUT_DIR", output=True))
  with storage.run_lock(output_dir, "evaluate", "OUTPUT_DIR") if writes else contextlib.nullcontext():
    if writes:  # what a killed run left: temporaries
      storage.remove_leftovers(output_dir, recursive=True)
    methods = default_methods() if methods is None else methods
    chosen = _methods_of(methods)
    _check_baseline_inputs(chosen, baselines)
    backbone = backbone() if callable(backbone) else backbone
    evaluator = _evaluator(backbone, chosen, library, library_dir, selection, scoring, targets.seed)
    settings = _run_settings(backbone, evaluator, chosen, targets, library, library_dir)
    evaluator, baseline_settings = _with_baselines(evaluator, chosen, backbone, baselines, tasks=task_list,
                                                   targets=target_list, split=targets.split)
    _check_resumable(output_dir, {**settings, **baseline_settings})
    logging.info("Evaluating %d targets x %d methods", len(target_list), len(methods))
    records, selections = _evaluate(evaluator, target_list, methods, output_dir, writes)
    if writes:
      summary = _write_report(output_dir, records, selections, evaluator, backbone, preamble=preamble,
                              library=storage.absolute(library.library_dir), targets=targets,
                              write_config=write_config)
    else:
      summary = report.summarize(records)
    # The other processes end only once process 0 has written the report: a failure there (a full
    # disk) stops them too (rospr_jax.distributed), instead of their exiting 0.
    multihost.barrier("evaluate: report written")
    return summary


def _targets(targets: TargetConfig, task_list) -> list:
  """The `eval.records` targets of `targets` (`task_list`: their tasks, resolved), each one's examples
  read."""
  return [targets_lib.target_from_task(t, targets.split, max_examples=targets.max_examples, seed=targets.seed)
          for t in task_list]


def _methods_of(method_names) -> list:
  """The `pipeline.methods.Method` of each name (an unknown one is refused, naming the known ones)."""
  from rospr_jax.pipeline import methods as methods_lib  # pylint: disable=g-import-not-at-top
  return [methods_lib.get(name) for name in method_names]


def _evaluator(backbone, methods, library: LibraryConfig, library_dir: str | None, selection: SelectionConfig,
               scoring: ScoringConfig, seed: int):
  """The `Evaluator`, complete: the backbone (laid out by the run's partitioner over every device when
  there are several) and, when a method needs it, the library (`library_dir`: its local copy) with its
  retriever, checked before any scoring."""
  from rospr_jax.library import embed, store  # pylint: disable=g-import-not-at-top
  from rospr_jax.eval.batching import Scorer  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline.evaluate import Evaluator, retriever_for  # pylint: disable=g-import-not-at-top
  config, params = backbone.config, backbone.params
  tokenizer = backbone.tokenizer()
  partitioner = scoring.partitioner()
  if partitioner.uses_mesh:  # a split the rules cannot make: one line naming NUM_PARTITIONS
    partitioner.check(config)
    params = partitioner.shard_params(params, backbone.model.abstract_params())
  else:
    partitioner = None
  scorer = Scorer(params, backbone.model, batch_size=scoring.batch_size, partitioner=partitioner,
                  progress_bars=True)
  retriever = None
  needing = [method.name for method in methods if method.needs_library]
  if needing:
    if not library_dir or not library.retriever_checkpoint:
      raise ValueError(f"The methods {needing} need LIBRARY_DIR and RETRIEVER_CHECKPOINT.")
    dtype = library.retriever_dtype or store.recorded_retriever_dtype(library_dir)
    retriever_checkpoint = copies.local_copy(library.retriever_checkpoint, "RETRIEVER_CHECKPOINT")  # a URL's copy
    embedder = embed.load_embedder(retriever_checkpoint, dtype=dtype, partitioner=embed.local_data_partitioner())
    tokenizer.check_fits(embedder.config.vocab_size, f"the retriever {library.retriever_checkpoint}")
    opened = store.Library.open(library_dir, retriever=embedder.fingerprint, dim=embedder.dim,
                                name=storage.absolute(library.library_dir))
    opened.check_prompts_fit(backbone.fingerprint, config.emb_dim)  # before any scoring
    opened.check_num_neighbors(selection.num_neighbors, "NUM_NEIGHBORS")
    retriever = retriever_for(opened, embedder, tokenizer, scorer, selection, seed)
  return Evaluator(scorer, tokenizer, retriever)


def _check_baseline_inputs(methods, baselines: BaselineConfig) -> None:
  """Before the backbone loads: a method that scores with the multitask prompt needs MT_PROMPT."""
  needing = [method.name for method in methods if method.needs_multitask_prompt]
  if needing and not baselines.multitask_prompt:
    raise ValueError(f"The methods {needing} need MT_PROMPT: the prompt export of rospr train-prompts run "
                     "with MULTITASK = True (MODEL_DIR/export).")


def _load_multitask_prompt(path: str, backbone) -> np.ndarray:
  """The one prompt [P, H] of MT_PROMPT: a prompt export of one prompt (trained on this backbone) or a
  [P, H] / [1, P, H] .npy; anything else is refused naming MT_PROMPT."""
  from rospr_jax.prompt import export  # pylint: disable=g-import-not-at-top
  table = export.load_prompt_table(export.local_copy(path, "MT_PROMPT"), "MT_PROMPT")
  prompts = table.prompts if table.prompts.ndim == 3 else table.prompts[None]
  if prompts.shape[0] != 1 or prompts.shape[2] != backbone.config.emb_dim:
    raise ValueError(f"MT_PROMPT {path} holds prompts of shape {list(prompts.shape)}; the multitask prompt is "
                     f"one [P, {backbone.config.emb_dim}] prompt (train-prompts with MULTITASK = True).")
  if table.backbone_fingerprint not in (None, backbone.fingerprint):
    raise ValueError(f"MT_PROMPT {path} was trained on backbone {table.backbone_fingerprint}, not on the one "
                     f"evaluated ({backbone.fingerprint}).")
  return np.asarray(prompts[0], np.float32)


def _with_baselines(evaluator, methods, backbone, baselines: BaselineConfig, *, tasks, targets, split):
  """The evaluator given what the baselines read (the multitask prompt; each target's labelled
  training examples, drawn for the largest k asked for), and the settings their records depend on."""
  fine_tune, settings, changes = baselines.fine_tune, {}, {}
  if any(method.needs_multitask_prompt for method in methods):
    changes["multitask_prompt"] = _load_multitask_prompt(baselines.multitask_prompt, backbone)
    settings.update(mt_prompt=storage.absolute(baselines.multitask_prompt),
                    mt_prompt_sha256=hashlib.sha256(changes["multitask_prompt"].tobytes()).hexdigest())
  ks = [method.fine_tune[0] for method in methods if method.fine_tune]
  if ks:
    changes["labelled"] = {target.name: targets_lib.labelled_examples(task, target, max(ks), fine_tune.seed, split)
                           for task, target in zip(tasks, targets)}
    changes["fine_tune"] = fine_tune
    settings["fine_tune"] = dataclasses.asdict(fine_tune)
    for target, labelled in changes["labelled"].items():
      if labelled.reason:
        logging.warning("Fine-tuned methods skip %s: %s.", target, labelled.reason)
  return dataclasses.replace(evaluator, **changes), settings


def _run_settings(backbone, evaluator, methods, targets: TargetConfig, library: LibraryConfig,
                  library_dir: str | None) -> dict:
  """What a record's accuracy depends on (`run.json`): a record scored otherwise is not resumed."""
  from rospr_jax.library import store  # pylint: disable=g-import-not-at-top
  config, selection = backbone.config, evaluator.selection
  vocabulary = backbone.description.get("vocabulary", backbone.vocabulary)  # a URL's, not its copy's
  settings = {"checkpoint": backbone.fingerprint, "vocabulary": vocabulary, "split": targets.split,
              "max_examples": targets.max_examples, "seed": targets.seed, "dtype": backbone.dtype,
              "attention_impl": config.attention_impl,
              "data_dir": storage.absolute(targets.data_dir)}
  if evaluator.library is not None:
    # Q and N, and the settings the evaluated methods declare: a record scored otherwise is not resumed.
    read = ["num_queries", "num_neighbors"] + sorted({f for method in methods for f in method.settings})
    settings.update(library=storage.absolute(library.library_dir),
                    library_manifest=storage.sha256_file(os.path.join(library_dir, store.MANIFEST)),
                    retriever=evaluator.library.retriever_fingerprint,
                    **{f: getattr(selection, f) for f in read})
  return settings


def _evaluate(evaluator, target_list, methods, output_dir: str, writes: bool):
  """Scores the targets, each record written as it is scored."""
  from rospr_jax.eval.records import RECORDS_DIR  # pylint: disable=g-import-not-at-top
  return evaluator.evaluate(
      target_list, methods, selections_dir=os.path.join(output_dir, "selections") if writes else None,
      records_dir=os.path.join(output_dir, RECORDS_DIR), progress=logging.info)


def _write_report(output_dir, records, selections, evaluator, backbone, *, preamble, library,
                  targets: TargetConfig, write_config) -> dict:
  """results.json, results.md and the plots (and gin's operative config): process 0 only."""
  from rospr_jax.eval import report  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline import methods as methods_lib  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline.evaluate import retrieval_frequencies  # pylint: disable=g-import-not-at-top
  retrieval = retrieval_frequencies(selections) if selections else None
  preamble = "\n\n".join(p for p in (preamble, methods_lib.not_scored_note(selections)) if p)
  summary = report.write_report(output_dir, records, retrieval=retrieval, preamble=preamble,
                                ticks=methods_lib.reference_ticks(),
                                sources=evaluator.library.source_names if evaluator.library else None,
                                extra={"selections": selections,
                                       "checkpoint": backbone.description.get("checkpoint"),
                                       "library": library, "split": targets.split, "seed": targets.seed})
  if write_config:
    from rospr_jax import gin_cli  # pylint: disable=g-import-not-at-top
    gin_cli.write_operative_config(output_dir)
  return summary


def _check_resumable(output_dir: str, settings: dict) -> None:
  """Records settings in `<output_dir>/run.json`; refuses an output folder whose records were scored
  with other settings (they would be resumed into this run's report)."""
  from rospr_jax.eval.records import RECORDS_DIR  # pylint: disable=g-import-not-at-top
  path = os.path.join(output_dir, "run.json")
  records_dir = storage.as_path(output_dir) / RECORDS_DIR
  problem, shown = "", output_dir
  if multihost.is_writer():
    has_records = records_dir.is_dir() and any(records_dir.iterdir())
    if has_records and not storage.as_path(path).exists():
      problem = (f"{shown} holds records but no run.json saying how they were scored; give "
                 f"another OUTPUT_DIR, or delete {shown}/{RECORDS_DIR} to start over.")
    elif has_records:
      earlier = storage.read_json(path, "The run settings")
      differ = {k: (earlier.get(k), v) for k, v in settings.items() if earlier.get(k) != v}
      if differ:
        problem = (f"{shown} holds records scored with other settings ({differ}, as (then, now)); "
                   f"give another OUTPUT_DIR, or delete {shown}/{RECORDS_DIR} to start over.")
    else:
      storage.write_text(path, json.dumps(settings, indent=1))
  if multihost.broadcast(np.int32(bool(problem))):  # every process stops, not only process 0
    raise ValueError(problem or "process 0 refused the output folder")


def main(argv: list[str]) -> int:
  import gin  # pylint: disable=g-import-not-at-top
  from rospr_jax import gin_cli  # pylint: disable=g-import-not-at-top
  example_file = "eval/bigbench_targets.gin"
  gin_cli.parse_args(argv, PROG, __doc__, example_file)  # --help and flag errors answer before JAX loads
  # The baselines train and load prompts (rospr_jax.prompt, whose optimizers are gin configurables):
  # registered before gin parses the files and locks its config.
  from rospr_jax.prompt import optimizers  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  code, summary = common.run_gin_command(
      argv, prog=PROG, doc=__doc__, example_file=example_file,
      run=lambda: gin.get_configurable(run)(write_config=True),
      failures=((FloatingPointError, 1), (OSError, 2), (ValueError, 2)))
  if code == 0:
    for method in summary["methods"]:
      print(f"{method}: average accuracy {100 * summary['average_mean'][method]:.2f}%")
  return code


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""`rospr evaluate`: zero-shot rank classification of target (dataset, template) pairs, with the hard
prompt alone (T0) and with the prompts RoSPr, INTER, VAR and INTER+VAR retrieve from a library; on
request (METHODS) also the reference rows 'Random' (a seeded random library prompt) and
'Oracle (labels)' (the best library prompt chosen with the target's labels: an upper bound).

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
import json
import logging
import os
import sys
from typing import Any, Sequence

import numpy as np

from rospr_jax import multihost, storage
from rospr_jax.storage import copies
from rospr_jax.commands import common, targets as targets_lib
from rospr_jax.retrieval.selection import SelectionConfig

# rospr_jax.pipeline.evaluate (JAX) is imported where it is used: --help and flag errors answer at once.

PROG = "rospr evaluate"


def run(*, backbone: Any, output_dir: str, targets: Sequence[str], methods: Sequence[str] | None = None,
        library_dir: str | None = None, retriever_checkpoint: str | None = None,
        retriever_dtype: str | None = None, data_dir: str | None = None, split: str | None = None,
        max_examples: int | None = None, selection: SelectionConfig = SelectionConfig(),
        batch_size: int = 32, seed: int = 0, num_partitions: int = 1, preamble: str = "",
        write_config: bool = False) -> dict:
  """Evaluates `targets` with `backbone` and writes the report to `output_dir`.

  Args:
    backbone: a `rospr_jax.backbone.Backbone`, or a callable returning one (the model gin file binds
      `load_backbone`).
    methods: method names (None: the hard prompt and every selection rule but the reference rows,
      `pipeline.evaluate.default_methods()`; `pipeline.evaluate.all_methods()` lists them all).
    retriever_dtype: the retriever's compute dtype (None: the one the library was built with).
    selection: Q, N, N', K and eps of the selection rules.
    write_config: also write gin's operative config to `<output_dir>/config.gin` (the command does).
    The rest: see gin/eval/base.gin.
  """
  from rospr_jax.eval import report  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline.evaluate import default_methods  # pylint: disable=g-import-not-at-top

  _check_settings(targets=targets, methods=methods, seed=seed, paths={
      "OUTPUT_DIR": output_dir, "DATA_DIR": data_dir, "LIBRARY_DIR": library_dir,
      "RETRIEVER_CHECKPOINT": retriever_checkpoint, "RETRIEVER_DTYPE": retriever_dtype, "SPLIT": split})
  _check_counts(batch_size=batch_size, num_partitions=num_partitions, max_examples=max_examples)
  # Targets first: one that cannot be read (BIG-bench not configured, a dataset missing) is refused
  # before the library is copied or the backbone loaded, and no target is skipped.
  task_list = targets_lib.resolve_target_tasks(targets, data_dir)
  target_list = [targets_lib.target_from_task(t, split, max_examples=max_examples, seed=seed)
                 for t in task_list]
  library_given = library_dir  # a URL is read through a checked local copy, named by the URL
  library_dir = library_dir and copies.local_copy(library_dir, "LIBRARY_DIR")
  settings_library = storage.absolute(library_given)
  writes = multihost.is_writer()  # every process scores (the mesh spans all hosts); one writes
  # OUTPUT_DIR is used in place, local or at a URL: each record is one file, written whole as it is
  # scored (a rerun resumes from them). One run at a time (process 0 holds the lock).
  output_dir = storage.absolute(storage.as_path(output_dir, "OUTPUT_DIR", output=True))
  with storage.run_lock(output_dir, "evaluate", "OUTPUT_DIR") if writes else contextlib.nullcontext():
    if writes:  # what a killed run left: temporaries
      storage.remove_leftovers(output_dir, recursive=True)
    methods = default_methods() if methods is None else methods
    chosen = _methods_of(methods)
    backbone = backbone() if callable(backbone) else backbone
    evaluator = _evaluator(backbone, methods=chosen, library_dir=library_dir,
                           settings_library=settings_library, retriever_checkpoint=retriever_checkpoint,
                           retriever_dtype=retriever_dtype, selection=selection, batch_size=batch_size,
                           seed=seed, num_partitions=num_partitions)
    settings = _run_settings(backbone, evaluator, chosen, data_dir=data_dir, split=split,
                             max_examples=max_examples, seed=seed, library_dir=library_dir,
                             settings_library=settings_library)
    _check_resumable(output_dir, settings)
    logging.info("Evaluating %d targets x %d methods", len(target_list), len(methods))
    records, selections = _evaluate(evaluator, target_list, methods, output_dir, writes)
    if writes:
      summary = _write_report(output_dir, records, selections, evaluator, backbone, preamble=preamble,
                              library=library_given, split=split, seed=seed, write_config=write_config)
    else:
      summary = report.summarize(records)
    # The other processes end only once process 0 has written the report: a failure there (a full
    # disk) stops them too (rospr_jax.distributed), instead of their exiting 0.
    multihost.barrier("evaluate: report written")
    return summary


def _names_problem(macro: str, value, names: str, example: str, *, may_be_none: bool) -> str | None:
  """What is wrong with a macro that holds a list of names (TARGETS, METHODS), or None."""
  if value is None and may_be_none:
    return None
  what = f"{'None or ' if may_be_none else ''}a list of {names}, e.g. {example}"
  if isinstance(value, str):
    return f"{macro} must be {what.replace(example, repr([value]))}, not the string {value!r}"
  if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
    return f"{macro} must be {what}, not {value!r}"
  if not value:
    return f"{macro} is empty: nothing would be evaluated; give {what}"
  return None


def _check_settings(*, targets, methods, seed, paths: dict) -> None:
  """Macros of the wrong type, refused in one line naming them before any work (was: a traceback from
  deep inside, or for METHODS=[] an empty report and exit 0): TARGETS and METHODS lists of names
  (METHODS may be None: the default methods), SEED an integer >= 0, and `paths` (macro: value) strings
  or None (OUTPUT_DIR a string)."""
  bad = [_names_problem("TARGETS", targets, "groups or task names", "['held_out']", may_be_none=False),
         _names_problem("METHODS", methods, "method names", "['T0', 'RoSPr']", may_be_none=True)]
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    bad.append(f"SEED must be an integer >= 0 (it seeds the draw of MAX_EXAMPLES and of the queries), "
               f"not {seed!r}")
  bad += [f"{macro} must be {'a' if macro == 'OUTPUT_DIR' else 'None or a'} string, not {value!r}"
          for macro, value in paths.items()
          if not isinstance(value, (str, os.PathLike)) and (value is not None or macro == "OUTPUT_DIR")]
  bad = [b for b in bad if b]
  if bad:
    raise ValueError("; ".join(bad) + ".")


def _check_counts(*, batch_size, num_partitions, max_examples) -> None:
  """BATCH_SIZE, NUM_PARTITIONS and MAX_EXAMPLES (when given) are integers >= 1."""
  counts = {"BATCH_SIZE": batch_size, "NUM_PARTITIONS": num_partitions,
            **({} if max_examples is None else {"MAX_EXAMPLES": max_examples})}
  bad = [f"{macro} must be an integer >= 1, not {value!r}" for macro, value in counts.items()
         if isinstance(value, bool) or not isinstance(value, int) or value < 1]
  if bad:
    raise ValueError("; ".join(bad) + ".")


def _methods_of(names) -> list:
  """The `pipeline.methods.Method` of each name (an unknown one is refused, naming the known ones)."""
  from rospr_jax.pipeline import methods as methods_lib  # pylint: disable=g-import-not-at-top
  return [methods_lib.get(name) for name in names]


def _evaluator(backbone, *, methods, library_dir, settings_library, retriever_checkpoint,
               retriever_dtype, selection, batch_size, seed, num_partitions):
  """The `Evaluator`, complete: the backbone (sharded over a mesh of every device when there are
  several) and, when a method needs it, the library with its retriever, checked before any scoring."""
  import jax  # pylint: disable=g-import-not-at-top
  from rospr_jax.library import embed, store  # pylint: disable=g-import-not-at-top
  from rospr_jax.model import partitioning  # pylint: disable=g-import-not-at-top
  from rospr_jax.eval.batching import Scorer  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline.evaluate import Evaluator, retriever_for  # pylint: disable=g-import-not-at-top
  config, params = backbone.config, backbone.params
  tokenizer = backbone.tokenizer()
  mesh = None
  if jax.device_count() > 1:
    partitioning.check_partitions(config, num_partitions, jax.device_count())
    mesh = partitioning.make_mesh(num_partitions)
    params = partitioning.shard_params(params, backbone.model.abstract_params(), mesh)
  scorer = Scorer(params, backbone.model, batch_size=batch_size, mesh=mesh, progress_bars=True)
  retriever = None
  needing = [method.name for method in methods if method.needs_library]
  if needing:
    if not library_dir or not retriever_checkpoint:
      raise ValueError(f"The methods {needing} need LIBRARY_DIR and RETRIEVER_CHECKPOINT.")
    dtype = retriever_dtype or store.recorded_retriever_dtype(library_dir)
    embedder = embed.load_embedder(retriever_checkpoint, dtype=dtype, mesh=embed.local_data_mesh())
    tokenizer.check_fits(embedder.config.vocab_size, f"the retriever {retriever_checkpoint}")
    library = store.Library.open(library_dir, retriever=embedder.fingerprint, dim=embedder.dim,
                                 name=settings_library)
    library.check_prompts_fit(backbone.fingerprint, config.emb_dim)  # before any scoring
    library.check_num_neighbors(selection.num_neighbors, "NUM_NEIGHBORS")
    retriever = retriever_for(library, embedder, tokenizer, scorer, selection, seed)
  return Evaluator(scorer, tokenizer, retriever)


def _run_settings(backbone, evaluator, methods, *, data_dir, split, max_examples, seed, library_dir,
                  settings_library) -> dict:
  """What a record's accuracy depends on (`run.json`): a record scored otherwise is not resumed."""
  from rospr_jax.library import store  # pylint: disable=g-import-not-at-top
  config, selection = backbone.config, evaluator.selection
  vocabulary = backbone.description.get("vocabulary", backbone.vocabulary)  # a URL's, not its copy's
  settings = {"checkpoint": backbone.fingerprint, "vocabulary": vocabulary, "split": split,
              "max_examples": max_examples, "seed": seed, "dtype": backbone.dtype,
              "attention_impl": config.attention_impl,
              "data_dir": storage.absolute(data_dir)}
  if evaluator.library is not None:
    # Q and N, and the settings the evaluated methods declare: a record scored otherwise is not resumed.
    read = ["num_queries", "num_neighbors"] + sorted({f for method in methods for f in method.settings})
    settings.update(library=settings_library,
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


def _write_report(output_dir, records, selections, evaluator, backbone, *, preamble, library, split, seed,
                  write_config) -> dict:
  """results.json, results.md and the plots (and gin's operative config): process 0 only."""
  from rospr_jax.eval import report  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline import methods as methods_lib  # pylint: disable=g-import-not-at-top
  from rospr_jax.pipeline.evaluate import retrieval_frequencies  # pylint: disable=g-import-not-at-top
  retrieval = retrieval_frequencies(selections) if selections else None
  summary = report.write_report(output_dir, records, retrieval=retrieval, preamble=preamble,
                                ticks=methods_lib.reference_ticks(),
                                sources=evaluator.library.source_names if evaluator.library else None,
                                extra={"selections": selections,
                                       "checkpoint": backbone.description.get("checkpoint"),
                                       "library": library, "split": split, "seed": seed})
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

  code, summary = common.run_gin_command(
      argv, prog=PROG, doc=__doc__, example_file="eval/bigbench_targets.gin",
      run=lambda: gin.get_configurable(run)(write_config=True),
      failures=((FloatingPointError, 1), (OSError, 2), (ValueError, 2)))
  if code == 0:
    for method in summary["methods"]:
      print(f"{method}: average accuracy {100 * summary['average_mean'][method]:.2f}%")
  return code


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

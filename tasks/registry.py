"""Registers every rospr source and target as a SeqIO Task, and their mixtures.

Task names (T0's and P3's, `rospr_jax.data.catalog.task_clean`):

  <dataset>_<subset>_<template>[_r1|_r2|_r3]     a promptsource (dataset, template): inputs, targets
  <same>_score_eval                              rank classification (templates with answer choices)
  bigbench_<task>, bigbench_<task>_score_eval    a BIG-bench JSON task (all subtasks)
  generated_<skill>_<format>_f<frame>[_score_eval]  a template of the generated family (no data needed)

Mixtures:

  rospr_t0_train                      T0's 38 training datasets, every template, rates = T0's caps
  rospr_bigbench_sources              the other BIG-bench multiple-choice tasks (train split)
  rospr_held_out_score_eval           11 held-out datasets x original_task templates
  rospr_bigbench_targets_score_eval   the 14 BIG-bench targets
  rospr_targets_score_eval            both of the above
  rospr_generated_sources             the generated family's source templates (train split)
  rospr_generated_targets_score_eval  its held-out targets (test split)

`SOURCES` and `TARGETS` map task names to their `rospr_jax.data.prompted` tasks (no TensorFlow needed
to iterate them). Registration reads only templates.yaml files and BIG-bench's index; examples are
read when a dataset is requested. Each family of tasks (`rospr_jax.data.families`: the generated
one, promptsource's, BIG-bench's, any registered there) gives its tasks and mixtures; a family whose data
is missing (promptsource not fetched, no BIG-bench source configured) is not registered and `STATUS`
says why and how to provide it; the generated family is always registered.
"""

from __future__ import annotations

import functools
import logging

import seqio
import tensorflow as tf

from rospr_jax.data import bigbench
from rospr_jax.data import catalog
from rospr_jax.data import families
from rospr_jax.data import prompted
from rospr_tasks import preprocessors
from rospr_tasks import vocab

logger = logging.getLogger(__name__)

TARGETS_MIXTURE = "rospr_targets_score_eval"  # every target of the paper's table (`paper_targets`)

SOURCES: dict[str, prompted.PromptedTask] = {}
TARGETS: dict[str, prompted.PromptedTask] = {}
MIXTURES: dict[str, list[str]] = {}
STATUS: dict[str, str] = {}


def _signature(has_choices: bool) -> dict[str, tf.TensorSpec]:
  sig = {"inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string),
         "idx": tf.TensorSpec([], tf.int64)}
  if has_choices:
    sig["answer_choices"] = tf.TensorSpec([None], tf.string)
    sig["is_correct"] = tf.TensorSpec([None], tf.bool)
  return sig


def _dataset_fn(split: str, shuffle_files: bool = False, seed: int | None = None, *,
                task: prompted.PromptedTask) -> tf.data.Dataset:
  """Examples of one split as tf.data (rendered in Python). Missing data raises here, at once."""
  del shuffle_files, seed  # one file per split; examples keep their order (and their idx).
  first = [task.examples(split)]

  def generate():
    examples = first.pop() if first else task.examples(split)
    for ex in examples:
      out = {"inputs": ex.inputs, "targets": ex.targets, "idx": ex.idx}
      if task.has_choices:
        out["answer_choices"] = list(ex.answer_choices)
        out["is_correct"] = list(ex.is_correct)
      yield out

  return tf.data.Dataset.from_generator(generate, output_signature=_signature(task.has_choices))


def _add(name: str, task: prompted.PromptedTask, rank: bool) -> None:
  if name in seqio.TaskRegistry.names():
    return
  source = seqio.FunctionDataSource(functools.partial(_dataset_fn, task=task), splits=task.splits)
  # EOS after trimming: a target longer than L keeps L - 1 tokens and its EOS, as T0's evaluation did.
  steps = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
  if rank:
    seqio.TaskRegistry.add(
        name, source, output_features=vocab.output_features(),
        preprocessors=[preprocessors.rank_classification] + steps,
        postprocess_fn=preprocessors.rank_classification_postprocessor,
        metric_fns=[preprocessors.rank_classification_metric])
  else:
    seqio.TaskRegistry.add(name, source, output_features=vocab.output_features(), preprocessors=steps,
                           metric_fns=[])


def _add_both(task: prompted.PromptedTask) -> None:
  _add(task.name, task, rank=False)
  if task.has_choices:
    _add(task.name + catalog.SCORE_EVAL_SUFFIX, task, rank=True)


def _add_mixture(name: str, tasks_and_rates: list[tuple[str, float]]) -> None:
  if not tasks_and_rates:
    return
  MIXTURES[name] = [t for t, _ in tasks_and_rates]
  if name not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(name, tasks_and_rates)


def register_family(family: families.TaskFamily) -> None:
  """Registers a family's sources, targets and their mixtures (`rospr_jax.data.families`)."""
  sources = family.sources()
  for task in sources:
    SOURCES[task.name] = task
    _add_both(task)
  _add_mixture(family.source_mixture, family.source_rates(sources))
  targets = family.targets(None)
  for task in targets:
    TARGETS[task.name] = task
    _add_both(task)
  _add_mixture(family.target_mixture, [(t.name + catalog.SCORE_EVAL_SUFFIX, 1.0) for t in targets])


def register_bigbench(store: bigbench.BigBenchStore) -> None:
  """BIG-bench's family registered from `store` (the tests' checkout)."""
  register_family(families.bigbench_family(store))


def register_all() -> dict[str, str]:
  """Registers every family the cache allows; returns STATUS ({family: "registered" or why not})."""
  for family in families.FAMILIES.values():
    if STATUS.get(family.name) == "registered":
      continue
    try:
      family.check()
      register_family(family)
      STATUS[family.name] = "registered"
    except (FileNotFoundError, ValueError, OSError) as e:  # a family's data missing or refused: say why
      if STATUS.get(family.name) != str(e):  # say it once per cause, not on every retry
        logger.warning("rospr_tasks: %s tasks not registered: %s", family.name, e)
      STATUS[family.name] = str(e)
  paper = [MIXTURES.get(f.target_mixture, []) for f in families.FAMILIES.values() if f.paper_targets]
  if paper and all(paper):
    _add_mixture(TARGETS_MIXTURE, [(t, 1.0) for members in paper for t in members])
  return dict(STATUS)


def prompted_tasks(names) -> list[prompted.PromptedTask]:
  """The prompted tasks behind task or mixture names (no TensorFlow needed to iterate them).

  Mixtures stand for their members, a `_score_eval` name for the task it scores; duplicates are
  dropped and the order kept.
  """
  register_all()
  found: dict[str, prompted.PromptedTask] = {}
  for name in names:
    for member in MIXTURES.get(name, [name]):
      base = member.removesuffix(catalog.SCORE_EVAL_SUFFIX)
      task = SOURCES.get(base) or TARGETS.get(base)
      if task is None:
        missing = {k: v for k, v in STATUS.items() if v != "registered"}
        hint = f" Parts not registered: {missing}." if missing else ""
        raise ValueError(f"no rospr task or mixture named {name!r} (`rospr tasks` lists them).{hint}")
      found.setdefault(task.name, task)
  return list(found.values())


def get_task(name: str) -> seqio.Task:
  """seqio.get_mixture_or_task with an error that says what is registered and why parts may be missing."""
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError as e:
    missing = {k: v for k, v in STATUS.items() if v != "registered"}
    hint = f" Parts not registered: {missing}." if missing else ""
    raise ValueError(f"no rospr task or mixture named {name!r} (`rospr tasks` lists them).{hint}") from e

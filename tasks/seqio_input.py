"""Training examples from SeqIO tasks (one source per task), read into numpy once: the SeqIO side of
prompt tuning (`gin/prompt_tuning/train_seqio.gin` names it), so that the trainer and the step run on
a bare JAX install. Tasks are looked up in the registry
that `registry_module` fills when imported (`rospr_tasks`, this project's SeqIO tasks); a mixture
stands for its sub-tasks.

T0's conventions are the task's business (inputs without EOS, targets with EOS, via its output
features); targets that do not end in EOS are counted and reported, since a prompt trained on them
would learn to never stop.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from typing import Iterator, Sequence

import gin
import numpy as np

from rospr_jax import tokenization
from rospr_jax.model.config import EOS_ID
from rospr_jax.prompt.input_pipeline import Example, SourceExamples

logger = logging.getLogger(__name__)


_WRAPPED = re.compile(r"}} (?P<kind>\w+Error): (?P<message>.*?)(?:\nTraceback|\n\n|$)", re.S)


@contextlib.contextmanager
def python_errors_of(what: str) -> Iterator[None]:
  """Re-raises a Python error that tf.data wrapped into an InvalidArgumentError (a data file's bad
  line, raised inside the task's generator) as a ValueError naming `what`, with the original message
  (which names the file and line) and without TensorFlow's traceback."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    yield
  except tf.errors.OpError as e:
    found = _WRAPPED.search(e.message or "")
    if found is None:
      raise
    raise ValueError(f"{what}: {found['message'].strip()}") from None


def expand_task_names(names: Sequence[str]) -> list[str]:
  """Task names of `names`, mixtures replaced by their sub-tasks, duplicates dropped, order kept."""
  import seqio
  tasks: list[str] = []
  for name in names:
    try:
      item = seqio.get_mixture_or_task(name)
    except ValueError as e:
      raise ValueError(f"No SeqIO task or mixture named {name!r} ({e}).") from None
    members = [t.name for t in item.tasks] if isinstance(item, seqio.Mixture) else [item.name]
    tasks += [t for t in members if t not in tasks]
  return tasks


@gin.configurable
def seqio_sources(tasks: Sequence[str], *, split: str = "train", max_examples_per_source: int | None = None,
                  shuffle: bool = True, seed: int = 0, use_cached: bool = False,
                  registry_module: str | None = "rospr_tasks") -> SourceExamples:
  """Reads the tokenized examples of every task into a `SourceExamples` (source s = task s).

  Args:
    tasks: task or mixture names.
    split: the split to read.
    max_examples_per_source: keep the first N examples of each task (after the seeded shuffle).
    shuffle, seed: SeqIO's shuffle of each task before taking N.
    use_cached: read SeqIO's offline cache.
    registry_module: imported first so that its tasks are registered (None: nothing to import).
  """
  if registry_module:
    # Called from a finalized gin config (`rospr train-prompts`), while the registry module may declare
    # its own configurables (rospr_tasks.vocab.vocabulary_path): gin refuses new ones once locked.
    with gin.unlock_config():
      importlib.import_module(registry_module)
  names = expand_task_names(tasks)
  import seqio
  from rospr_tasks import vocab  # pylint: disable=g-import-not-at-top
  vocabularies: list[str] = []
  for path in (vocab.task_vocabulary_file(seqio.get_mixture_or_task(n)) for n in names):
    if path is not None and not any(tokenization.same_vocabulary(path, seen) for seen in vocabularies):
      vocabularies.append(path)
  if len(vocabularies) > 1:
    raise ValueError(f"The training tasks {names} tokenize with different SentencePiece models "
                     f"{vocabularies}.")
  examples: list[Example] = []
  no_eos = 0
  for source_id, name in enumerate(names):
    import seqio
    task = seqio.get_mixture_or_task(name)
    missing = [k for k in ("inputs", "targets") if k not in task.output_features]
    if missing:
      raise ValueError(f"SeqIO task {name!r} has no output features {missing}.")
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=shuffle, seed=seed, num_epochs=1,
                               use_cached=use_cached, trim_output_features=False)
    if max_examples_per_source is not None:
      dataset = dataset.take(max_examples_per_source)
    count = 0
    with python_errors_of(f"SeqIO task {name!r}"):
      for record in dataset.as_numpy_iterator():
        targets = np.asarray(record["targets"]).tolist()
        no_eos += bool(targets) and targets[-1] != EOS_ID
        examples.append(Example(source_id, np.asarray(record["inputs"]).tolist(), targets))
        count += 1
    if count == 0:
      raise ValueError(f"SeqIO task {name!r} has no examples in split {split!r}.")
    logger.info("Read %d examples of %s (%s).", count, name, split)
  if no_eos:
    logger.warning("%d of %d targets do not end in EOS (id %d): check the tasks' output features.",
                    no_eos, len(examples), EOS_ID)
  return SourceExamples(names, examples, vocabulary=next(iter(vocabularies), None))

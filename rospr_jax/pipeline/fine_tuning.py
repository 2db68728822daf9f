"""The label fine-tuning baseline: per target, a soft prompt tuned on k labelled examples of the
target's TRAINING split, started from the prompt RoSPr retrieved (SPoT-style transfer) or from the
default initializer; the prompts of every target and start train jointly in one run.

How far zero-shot retrieval is from using labels: the evaluation draws, per target, a seeded sample
of its training split (`LabelledExamples`, made by the data layer: `commands/targets.labelled_examples`,
never from the evaluated split, and without an example whose input is among the evaluated ones); the
first k of the draw train the target's prompts (k = 16 gets the first 16 of the k = 32 draw). One
`PromptTrainState` holds the S = (targets x methods) prompts, `train_step` updates every prompt present
in a batch with its own optimizer state and its own mean token loss, and a `BatchIterator` over the
union of the S example sets gives the batches: the multi-prompt training of `rospr train-prompts`,
without its run folder (the run is seconds to minutes; a stopped evaluation trains it again, to the
same prompts, since everything in it is seeded).

Vocabulary: S prompts (target, method), P prompt length, H model dim, E labelled examples.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np

from rospr_jax.model import model_for
from rospr_jax.prompt import optimizers, prompts as prompts_lib
from rospr_jax.prompt.input_pipeline import BatchIterator, Example, SourceExamples
from rospr_jax.prompt.train_step import check_step_fits, dropout_key, init_state, make_train_step, place_batch, place_state
from rospr_jax.pipeline.labelled import FineTuneConfig, LabelledExamples

__all__ = ["FILE", "FineTuneConfig", "LabelledExamples", "Plan", "initial_table", "num_steps", "record",
           "train_jointly", "training_examples"]

FILE = "fine_tune.json"  # the record a fine-tuned prompt's selection folder holds beside prompt.npy


@dataclasses.dataclass(frozen=True)
class Plan:
  """One prompt to tune: `name` (unique), its target's labelled examples, k and its start ([P, H], or
  None: the default initializer)."""
  name: str
  target: str
  labelled: LabelledExamples
  k: int
  start: np.ndarray | None


def first_correct(flags: Sequence[bool]) -> int:
  """The index of the first correct choice: the target text an example trains."""
  return next(i for i, correct in enumerate(flags) if correct)


def training_examples(plans: Sequence[Plan], tokenizer) -> SourceExamples:
  """The first k labelled examples of each plan (input without EOS, its first correct choice with EOS),
  source s = plans[s]."""
  examples = []
  for s, plan in enumerate(plans):
    pool = plan.labelled
    for text, choices, flags in list(zip(pool.inputs, pool.choices, pool.is_correct))[:plan.k]:
      examples.append(Example(s, tokenizer.encode_input(text), tokenizer.encode_target(choices[first_correct(flags)])))
  return SourceExamples([plan.name for plan in plans], examples)


def initial_table(plans: Sequence[Plan], length: int, dim: int, seed: int) -> np.ndarray:
  """[S, P, H]: row s is plans[s].start, or the default initializer's prompt (random uniform in
  [-0.5, 0.5), seeded by `seed` and the plan's name, as `prompts.initial_table`)."""
  default = prompts_lib.random_uniform()
  initializers = [default if plan.start is None else prompts_lib.from_array(plan.start) for plan in plans]
  table, _ = prompts_lib.initial_table([plan.name for plan in plans], length, dim, seed,
                                      lambda s: initializers[s])
  return table


def train_jointly(evaluator, plans: Sequence[Plan], config: FineTuneConfig, length: int) -> np.ndarray:
  """Tunes every plan's prompt in one run on the evaluator's frozen backbone; returns [S, P, H].

  Raises:
    ValueError: a setting that cannot work (a batch size below 1, a step that cannot fit the device).
    FloatingPointError: a loss or prompt became NaN or infinite (naming the prompts' targets).
  """
  data = training_examples(plans, evaluator.tokenizer)
  model = model_for(evaluator.score_fn.model.config.replace(dropout_rate=0.0))
  input_length = min(max(len(ex.inputs) for ex in data.examples), evaluator.max_input_length)
  target_length = max(len(ex.targets) for ex in data.examples)
  partitioner = evaluator.score_fn.partitioner  # the backbone's layout: the prompts train on it
  data_axis = 1 if partitioner is None else partitioner.data_size
  rows = -(-config.batch_size // data_axis) * data_axis  # padded with empty rows for the mesh's data axis
  check_step_fits(model.config, batch_size=rows, input_length=input_length,
                  target_length=target_length, prompt_length=length)
  batches = BatchIterator(data, batch_size=config.batch_size, input_length=input_length,
                          target_length=target_length, seed=config.seed)
  optimizer = optimizers.Adafactor(learning_rate=config.learning_rate).build()
  state = init_state(initial_table(plans, length, model.config.emb_dim, config.seed), optimizer)
  state = jax.device_put(state) if partitioner is None else place_state(state, partitioner)
  step = make_train_step(model, optimizer, partitioner=partitioner)
  rng = dropout_key(config.seed)
  finite = []
  for position in range(num_steps(config, len(data.examples))):
    batch = padded(batches.batch_at(position), rows)
    state, metrics = step(state, evaluator.score_fn.params, place_batch(batch, partitioner), rng)
    finite.append(metrics["finite"])
  table = np.asarray(jax.device_get(state.prompts), np.float32)
  if not all(bool(f) for f in jax.device_get(finite)) or not np.all(np.isfinite(table)):
    raise FloatingPointError(f"Fine-tuning the prompts of {sorted({p.target for p in plans})} gave a NaN or "
                             "infinite loss or prompt; lower FINE_TUNE_LEARNING_RATE.")
  return table


def padded(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """`batch` with empty rows appended up to `rows` (no target token: the step ignores them)."""
  extra = rows - len(batch["source_ids"])
  return {k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def num_steps(config: FineTuneConfig, examples: int) -> int:
  """ceil(epochs x examples / batch size)."""
  return math.ceil(config.epochs * examples / config.batch_size)


def record(plan: Plan, config: FineTuneConfig, steps: int, start: dict[str, Any]) -> dict:
  """What a fine-tuned prompt's selection records: k, the seed and the examples' ids, how it started
  (`start`) and how it trained."""
  pool = plan.labelled
  return {"rule": "fine_tune", "uses_labels": True, "k": plan.k, "seed": pool.seed, "split": pool.split,
          "ids": list(pool.ids[:plan.k]), "excluded_as_evaluated": pool.excluded, "start": start,
          "steps": steps, "epochs": config.epochs, "batch_size": config.batch_size,
          "learning_rate": config.learning_rate, "params": {"target": plan.target}}

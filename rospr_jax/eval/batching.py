"""Batches of rank-classification examples with bucketed shapes, scored on any mesh.

Examples are grouped by (input length bucket, choice-count bucket, target length bucket) and every batch
is padded to a fixed batch size, so a dataset compiles a handful of times, not once per batch. Padding
examples are dropped from the results; they are never counted.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rospr_jax.eval.scoring import score_choices
from rospr_jax.model import PromptedBackbone
from rospr_jax.model import partitioning
from rospr_jax.model import memory_check

# T0's evaluation lengths: inputs cut to their first 1024 tokens, answer choices to 255 plus EOS.
T0_INPUT_LENGTH = 1024
T0_TARGET_LENGTH = 256
DEFAULT_MAX_DECODER_TOKENS = 512  # choice slots x target length of one row, at most

try:
  from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a dependency; the core still runs without it.
  tqdm = None


@dataclasses.dataclass(frozen=True)
class RankExample:
  """One example: input ids without EOS, each answer choice's ids with EOS, an optional prompt row."""
  inputs: Sequence[int]
  choices: Sequence[Sequence[int]]
  prompt_id: int = 0


def length_bucket(length: int, minimum: int = 8) -> int:
  """Smallest power of two >= max(length, minimum)."""
  return max(minimum, 1 << max(0, int(length) - 1).bit_length())


def choices_bucket(num_choices: int) -> int:
  """Choice slots of a batch: the next power of two (absent choices are all padding and score -inf)."""
  return 1 << max(0, int(num_choices) - 1).bit_length()


@dataclasses.dataclass
class Batch:
  indices: np.ndarray     # [B] example indices, -1 for padding rows
  offsets: np.ndarray     # [B] index of the row's first choice within its example
  inputs: np.ndarray      # [B, T] int32
  targets: np.ndarray     # [B, C, L] int32
  prompt_ids: np.ndarray  # [B] int32


def choices_per_row(num_choices: int, target_length: int, max_decoder_tokens: int) -> int:
  """Choice slots of one row: a power of two with slots * L <= max_decoder_tokens (at least 1).

  The choices of a row are decoded side by side, so the decoder's self-attention grows with the
  square of slots * L; an example with more choices than fit is split over several rows.
  """
  fit = max(1, max_decoder_tokens // target_length)
  return min(choices_bucket(num_choices), 1 << (fit.bit_length() - 1))


def make_batches(examples: Sequence[RankExample], batch_size: int, *, max_input_length: int = T0_INPUT_LENGTH,
                 max_target_length: int = T0_TARGET_LENGTH,
                 max_decoder_tokens: int = DEFAULT_MAX_DECODER_TOKENS) -> Iterator[Batch]:
  """Groups examples by bucketed shape and yields fixed-size, zero-padded batches.

  A row holds one example's input and up to `choices_per_row` of its choices; examples with more
  choices take several rows (`offsets` says where each row's choices start).
  """
  return _batches(examples, _groups(examples, max_input_length, max_target_length, max_decoder_tokens),
                  batch_size)


def _batches(examples: Sequence[RankExample], groups: dict, batch_size: int) -> Iterator[Batch]:
  for (input_length, slots, target_length), members in sorted(groups.items()):
    for start in range(0, len(members), batch_size):
      chunk = members[start:start + batch_size]
      batch = Batch(indices=np.full(batch_size, -1, np.int64), offsets=np.zeros(batch_size, np.int64),
                    inputs=np.zeros((batch_size, input_length), np.int32),
                    targets=np.zeros((batch_size, slots, target_length), np.int32),
                    prompt_ids=np.zeros(batch_size, np.int32))
      for row, (i, offset) in enumerate(chunk):
        ex = examples[i]
        batch.indices[row], batch.offsets[row] = i, offset
        ids = list(ex.inputs)[:input_length]
        batch.inputs[row, :len(ids)] = ids
        for c, choice in enumerate(ex.choices[offset:offset + slots]):
          ids = list(choice)
          if len(ids) > target_length:  # T0 keeps L - 1 tokens and the last one (EOS)
            ids = ids[:target_length - 1] + ids[-1:]
          batch.targets[row, c, :len(ids)] = ids
        batch.prompt_ids[row] = ex.prompt_id
      yield batch


def scoring_memory_lower_bound(config, *, batch_size: int, input_length: int, decoder_tokens: int) -> int:
  """Bytes one scoring batch needs at the least, S = prompt + input and D = choice slots x target
  tokens per row: the host batch (int32 [B, S] and [B, D]), the encoder's position bias [1, A, S, S],
  the states [B, S + D, H] of one layer and, with einsum attention, one layer's attention weights
  [B, A, Tq, Tk], the encoder's [S, S] or the decoder's [D, D + S], the larger. A lower bound, as
  `prompt.train_step.step_memory_lower_bound` for training."""
  s, d = input_length, decoder_tokens
  itemsize = np.dtype(config.dtype).itemsize
  host_batch = 4 * batch_size * (s + d)
  bias_and_states = itemsize * (config.num_heads * s * s + batch_size * (s + d) * config.emb_dim)
  need = host_batch + bias_and_states
  if config.attention_impl == "einsum":
    need += itemsize * batch_size * config.num_heads * max(s * s, d * (d + s))
  return need


def _check_batch_fits(config, groups: dict, batch_size: int, prompt_length: int) -> None:
  """Refuses, naming BATCH_SIZE, batches whose lower bound exceeds this process's device memory."""
  limit, where = partitioning.memory_limit()
  for input_length, slots, target_length in groups:
    need = scoring_memory_lower_bound(config, batch_size=batch_size, input_length=prompt_length + input_length,
                                      decoder_tokens=slots * target_length)
    if need > limit:
      raise ValueError(f"Scoring needs at least {need / 2**30:,.1f} GiB per batch (BATCH_SIZE {batch_size} rows "
                       f"of {prompt_length + input_length} input and {slots * target_length} answer tokens), "
                       f"more than the {limit / 2**30:,.1f} GiB of {where}; lower BATCH_SIZE.")


def _on_mesh(value: np.ndarray, partitioner: partitioning.Partitioner) -> jax.Array:
  """A host batch [B, ...] split over the mesh's `data` axis, built from each process's own rows."""
  return partitioner.place(value, partitioner.batch_sharding(value.ndim))


def scoring_step(model: PromptedBackbone, partitioner: partitioning.Partitioner | None) -> partitioning.MeshStep:
  """The scoring step `score_examples` calls: `step(params, inputs [B, T], targets [B, C, L], prompt
  [B, P, H] or None) -> [B, C]` scores, in the partitioner's scope (`step.lower` for a plan)."""
  return partitioning.MeshStep(score_choices, partitioner, model=model)


def score_examples(params, model: PromptedBackbone, examples: Sequence[RankExample], *,
                   prompts: jax.Array | np.ndarray | None = None, batch_size: int = 32,
                   max_input_length: int = T0_INPUT_LENGTH, max_target_length: int = T0_TARGET_LENGTH,
                   max_decoder_tokens: int = DEFAULT_MAX_DECODER_TOKENS,
                   partitioner: partitioning.Partitioner | None = None,
                   progress: str | None = None) -> list[np.ndarray]:
  """Scores every example's choices with the encode-once scorer.

  Args:
    params: model parameters (already placed by `partitioner` when one is given).
    model: the backbone (`PromptedBackbone`, e.g. `Backbone.model`) that scores.
    examples: the examples; `prompt_id` indexes `prompts`.
    prompts: None (no soft prompt), [P, H] for every example, or a table [S, P, H].
    batch_size: rows per batch, at most the rows there are, rounded up to a multiple of the mesh's
      `data` axis (the padding rows are never counted); refused, naming BATCH_SIZE, when one batch
      cannot fit this process's device memory (`scoring_memory_lower_bound`; on an accelerator, each
      batch shape's compiled step against the device's memory, `model.memory_check`, before it first runs).
    max_decoder_tokens: choice slots x target length of one row at most (see `choices_per_row`).
    partitioner: the backbone's layout (`partitioning.Partitioner`), or None on one device; batches are
      split over its mesh's `data` axis.
    progress: a description for a tqdm progress bar, or None for none.

  Returns:
    One float32 array [C_i] of summed log-likelihoods per example, in input order.
  """
  table = None if prompts is None else jnp.asarray(prompts)
  if table is not None and table.ndim == 2:
    table = table[None]  # [1, P, H]
  results = [np.empty(len(ex.choices), np.float32) for ex in examples]
  groups = _groups(examples, max_input_length, max_target_length, max_decoder_tokens)
  requested = batch_size
  batch_size = min(batch_size, max(1, sum(map(len, groups.values()))))  # never more rows than there are
  if partitioner is not None:
    batch_size = -(-batch_size // partitioner.data_size) * partitioner.data_size
  _check_batch_fits(model.config, groups, batch_size, 0 if table is None else table.shape[1])
  batches = _batches(examples, groups, batch_size)
  bar = tqdm(total=len(examples), desc=progress, unit="ex") if progress and tqdm else None
  for batch in batches:
    scores = _score_batch(params, model, batch, table, partitioner, requested)
    for row, (i, offset) in enumerate(zip(batch.indices, batch.offsets)):
      if i >= 0:
        count = min(batch.targets.shape[1], len(examples[i].choices) - offset)
        results[i][offset:offset + count] = scores[row, :count]
        if bar is not None and offset + count == len(examples[i].choices):
          bar.update(1)
  if bar is not None:
    bar.close()
  return results


def _score_batch(params, model: PromptedBackbone, batch, table, partitioner, requested: int) -> np.ndarray:
  """[B, C] scores of one `_batches` batch (`table`: [S, P, H] prompts or None), every row on this host;
  the compiled step is checked against the device's memory before it first runs (`requested`: the
  BATCH_SIZE the user set, for the message)."""
  prompt = None if table is None else table[jnp.asarray(batch.prompt_ids)]  # [B, P, H]
  inputs, targets = jnp.asarray(batch.inputs), jnp.asarray(batch.targets)
  if partitioner is not None:  # each process fills its own devices' rows (all hold the same batch)
    inputs = _on_mesh(batch.inputs, partitioner)
    targets = _on_mesh(batch.targets, partitioner)
    if prompt is not None:
      prompt = _on_mesh(np.asarray(prompt), partitioner)
  step = scoring_step(model, partitioner)
  memory_check.check_compiled_step(step, (params, inputs, targets, prompt), what=(
      f"A scoring batch ({inputs.shape[0]} rows of {inputs.shape[1]} input and {targets.shape[1]} x "
      f"{targets.shape[2]} answer tokens)"), remedy=(
      f"lower BATCH_SIZE ({requested}) or raise NUM_PARTITIONS "
      f"({1 if partitioner is None else partitioner.num_partitions})"))
  scores = step(params, inputs, targets, prompt)
  if not scores.is_fully_addressable:  # a mesh over several processes: gather every row
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    scores = multihost_utils.process_allgather(scores, tiled=True)
  return np.asarray(scores)


def truncated_inputs(examples: Sequence[RankExample], max_input_length: int) -> int:
  """How many examples have an input longer than `max_input_length` (scoring keeps its first tokens)."""
  return sum(len(ex.inputs) > max_input_length for ex in examples)


def _groups(examples: Sequence[RankExample], max_input_length: int, max_target_length: int,
            max_decoder_tokens: int) -> dict[tuple[int, int, int], list[tuple[int, int]]]:
  """{(input length, choice slots, target length) bucket: its rows as (example index, first choice)}."""
  groups: dict[tuple[int, int, int], list[tuple[int, int]]] = collections.defaultdict(list)
  truncated = 0
  for i, ex in enumerate(examples):
    if not ex.choices:
      raise ValueError(f"Example {i} has no answer choices.")
    if len(ex.inputs) > max_input_length or any(len(c) > max_target_length for c in ex.choices):
      truncated += 1
    input_length = min(length_bucket(len(ex.inputs)), max_input_length)
    target_length = min(length_bucket(max(len(c) for c in ex.choices)), max_target_length)
    slots = choices_per_row(len(ex.choices), target_length, max_decoder_tokens)
    for offset in range(0, len(ex.choices), slots):
      groups[input_length, slots, target_length].append((i, offset))
  if truncated:
    logging.warning("%d of %d examples were truncated to inputs %d / targets %d tokens.", truncated,
                    len(examples), max_input_length, max_target_length)
  return groups


@dataclasses.dataclass(frozen=True)
class Scorer:
  """The encode-once scorer bound to one frozen backbone: what an evaluator and VAR are handed (as t5x's
  evaluator is handed its `score_fn`), so that neither calls the model itself.

  Attributes:
    params, model: the backbone (already placed by `partitioner` when one is given; else placed on the
      default device here, once) and its `PromptedBackbone`.
    batch_size, partitioner: rows per scoring batch and the backbone's layout (`partitioning.Partitioner`;
      None: one device) (`score_examples`).
    max_input_length: inputs keep their first this many tokens.
    progress_bars: show a tqdm bar named by the caller's description while scoring.
  """
  params: object
  model: PromptedBackbone
  batch_size: int = 32
  partitioner: partitioning.Partitioner | None = None
  max_input_length: int = T0_INPUT_LENGTH
  progress_bars: bool = False

  def __post_init__(self):
    if self.partitioner is None:  # on the one device once: host arrays (a checkpoint's weights, read
      # as numpy) would otherwise be copied to the device again by every scoring batch
      object.__setattr__(self, "params", jax.device_put(self.params))

  def __call__(self, examples: Sequence[RankExample], prompts=None, description: str | None = None
               ) -> list[np.ndarray]:
    """One float32 array [C_i] per example under `prompts` (None, [P, H], or [S, P, H] indexed by each
    example's prompt_id), with a progress bar named `description` when bars are asked for."""
    return score_examples(self.params, self.model, examples, prompts=prompts, batch_size=self.batch_size,
                          max_input_length=self.max_input_length, partitioner=self.partitioner,
                          progress=description if self.progress_bars else None)

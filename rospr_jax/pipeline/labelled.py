"""What the fine-tuned baseline reads, without JAX (gin binds `FineTuneConfig` while `rospr evaluate`
parses its files): its settings, and a target's labelled training examples, drawn by the data layer
(`commands/targets.labelled_examples`) and trained by `pipeline/fine_tuning.py`."""

from __future__ import annotations

import dataclasses

from rospr_jax.config_fields import NON_NEGATIVE, POSITIVE, check_fields, positive_number, setting


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
  """How the fine-tuned prompts train (gin: FINE_TUNE_* in gin/eval/base.gin).

  Attributes:
    seed: seeds the draw of the labelled examples, the default initializer and the batch order.
    epochs: passes over each prompt's k examples (steps = ceil(epochs x all examples / batch_size)).
    batch_size: rows per step, over all prompts (each prompt present gets its own mean loss).
    learning_rate: Adafactor's (Lester et al.'s optimizer, as train-prompts').
    prompt_length: P of a prompt started from the default initializer when no library gives one.
  """
  seed: int = setting("FINE_TUNE_SEED", 0, NON_NEGATIVE)
  epochs: int = setting("FINE_TUNE_EPOCHS", 20, POSITIVE)
  batch_size: int = setting("FINE_TUNE_BATCH_SIZE", 32, POSITIVE)
  learning_rate: float = setting("FINE_TUNE_LEARNING_RATE", 0.3, positive_number)
  prompt_length: int = setting("FINE_TUNE_PROMPT_LENGTH", 100, POSITIVE)  # prompts.DEFAULT_LENGTH

  def __post_init__(self):
    check_fields(self)


@dataclasses.dataclass(frozen=True)
class LabelledExamples:
  """A target's labelled training examples in the order of a seeded draw, or why it has none.

  Attributes:
    split: the split they come from (never the evaluated one), or None.
    ids: [E] positions of the examples in `split`.
    inputs, choices, is_correct: [E] rendered examples, as `Target`'s.
    seed: the draw's seed.
    excluded: examples of the split left out because their input is among the evaluated ones.
    reason: why the target has none (no training split apart from the evaluated one), or None.
  """
  split: str | None
  ids: tuple[int, ...] = ()
  inputs: tuple[str, ...] = ()
  choices: tuple[tuple[str, ...], ...] = ()
  is_correct: tuple[tuple[bool, ...], ...] = ()
  seed: int = 0
  excluded: int = 0
  reason: str | None = None

"""What the fine-tuned baseline reads, without JAX (gin binds `FineTuneConfig` while `rospr evaluate`
parses its files): its settings, and a target's labelled training examples, drawn by the data layer
(`commands/targets.labelled_examples`) and trained by `pipeline/fine_tuning.py`."""

from __future__ import annotations

import dataclasses


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
  seed: int = 0
  epochs: int = 20
  batch_size: int = 32
  learning_rate: float = 0.3
  prompt_length: int = 100  # prompts.DEFAULT_LENGTH


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

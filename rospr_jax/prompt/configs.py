"""The typed settings of a prompt-tuning run, each group a frozen dataclass checked once on creation.

`trainer.train` takes them whole (gin: gin/prompt_tuning/base.gin binds each group's fields to the
macros users set, `configs.ShapeConfig.batch_size = %BATCH_SIZE`, ...); a bad value is refused in one
line naming the field and its macro (`rospr_jax.config_fields`):

    ShapeConfig       B, T, L, P of every batch           BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH, PROMPT_LENGTH
    StepConfig        how the step computes, and where    DROPOUT_RATE, REMAT_POLICY, NUM_PARTITIONS
    LoopConfig        how long, how often it logs         TRAIN_STEPS, LOG_EVERY, SEED
    CheckpointConfig  how often it saves and exports      CHECKPOINT_EVERY, KEEP_CHECKPOINTS, EXPORT_EVERY
"""

from __future__ import annotations

import dataclasses

import gin

from rospr_jax.config_fields import (NON_NEGATIVE, POSITIVE, check_fields, fraction, one_of, optional,
                                     setting)
from rospr_jax.model import partitioning
from rospr_jax.model.config import REMAT_POLICIES
from rospr_jax.prompt.prompts import DEFAULT_LENGTH


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ShapeConfig:
  """The shapes of every training batch: B rows of T input and L target tokens, after P prompt tokens."""
  batch_size: int = setting("BATCH_SIZE", 32, POSITIVE)
  input_length: int = setting("INPUT_LENGTH", 512, POSITIVE)
  target_length: int = setting("TARGET_LENGTH", 64, POSITIVE)
  prompt_length: int = setting("PROMPT_LENGTH", DEFAULT_LENGTH, POSITIVE)

  def __post_init__(self):
    check_fields(self)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class StepConfig:
  """How the training step computes, and on which devices.

  Attributes:
    dropout_rate: the backbone's dropout while training (T5X's masks, shared along the length:
      `T5Config.dropout_broadcast_dims`).
    remat_policy: activations recomputed in the backward pass (`T5Config.remat_policy`). With "minimal"
      T0_3B's batch-32 step (inputs 256 + 100 prompt tokens, targets 16) compiles for a v4-8 to 3.72 GiB
      of temporaries per chip instead of 8.79 GiB (`rospr plan`), for under 1% more FLOPs; "none" is
      faster where memory allows (the tiny model's CPU step: 1.2x faster).
    dropout_rng_impl: PRNG of the dropout masks (`train_step.dropout_key`: "auto" = JAX's CUDA
      threefry kernel on GPUs, XLA's RngBitGenerator elsewhere).
    num_partitions: model-parallel partitions of the mesh (the rest is data parallel).
    use_mesh: run under a data x model mesh over all devices (None: when there is more than one, or
      num_partitions > 1).
  """
  dropout_rate: float = setting("DROPOUT_RATE", 0.1, fraction)
  remat_policy: str = setting("REMAT_POLICY", "minimal", one_of(*REMAT_POLICIES))
  dropout_rng_impl: str | None = "auto"
  num_partitions: int = setting("NUM_PARTITIONS", 1, POSITIVE)
  use_mesh: bool | None = None

  def __post_init__(self):
    check_fields(self)

  def partitioner(self) -> partitioning.Partitioner:
    """The run's layout over every device (`partitioning.Partitioner`: NUM_PARTITIONS on the mesh's
    `model` axis); train-prompts and `rospr plan` build theirs here."""
    return partitioning.Partitioner(self.num_partitions)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How long the loop trains and how often it logs.

  Attributes:
    num_steps: total training steps (a resumed run continues up to it).
    log_every: steps between log lines and summaries.
    seed: seeds the prompt initialization, the data order and dropout.
    summaries: write TensorBoard summaries under <model_dir>/train.
  """
  num_steps: int = setting("TRAIN_STEPS", rule=POSITIVE)
  log_every: int = setting("LOG_EVERY", 100, POSITIVE)
  seed: int = setting("SEED", 0, NON_NEGATIVE)
  summaries: bool = True

  def __post_init__(self):
    check_fields(self)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """How often the loop checkpoints and exports (the last step always does both).

  Attributes:
    checkpoint_every: steps between orbax checkpoints.
    keep_checkpoints: newest checkpoints kept (None: all).
    export_every: steps between prompt exports (None: at each checkpoint; see `export_interval`).
  """
  checkpoint_every: int = setting("CHECKPOINT_EVERY", 1000, POSITIVE)
  keep_checkpoints: int | None = setting("KEEP_CHECKPOINTS", 3, optional(POSITIVE))
  export_every: int | None = setting("EXPORT_EVERY", None, optional(POSITIVE))

  def __post_init__(self):
    check_fields(self)

  @property
  def export_interval(self) -> int:
    """Steps between exports."""
    return self.checkpoint_every if self.export_every is None else self.export_every

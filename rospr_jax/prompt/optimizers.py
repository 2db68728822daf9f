"""The prompt optimizer as a typed description: it builds the optax transformation and records itself.

An `OptimizerSpec` (`Adafactor`, the default, or `Adam`; gin: `trainer.train.optimizer =
@optimizers.Adafactor()`) is a frozen, hashable dataclass: `build()` gives its optax transformation
(cached, so equal descriptions share one compiled step) and `facts()` its settings as JSON, which the
resume check and the export manifest compare. A setting left at None is optax's own default and is
not recorded. A learning rate is a number or a `Schedule` (an optax schedule by name).

`resolve(optimizer)` gives (transformation, facts) for what `trainer.train` was handed: a description,
None (the default `Adafactor()`), or an optax transformation built in Python, which cannot be described
and is recorded as such. `flat_facts` spreads the facts into one per setting, so that a refused resume
names the one that differs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Mapping

import gin
import optax

UNRECORDED = {"name": "unrecorded (an optax transformation given in Python)"}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Schedule:
  """An optax learning-rate schedule by name, e.g. `Schedule("cosine_decay_schedule", {"init_value":
  0.3, "decay_steps": 1000})`; settings are numbers, strings or booleans (stored sorted, hashable)."""
  name: str
  settings: Any = ()

  def __post_init__(self):
    if not self.name.endswith("schedule") or not callable(getattr(optax, self.name, None)):
      raise ValueError(f"Unknown learning-rate schedule {self.name!r}: give the name of an optax "
                       "schedule (e.g. 'cosine_decay_schedule', 'warmup_cosine_decay_schedule').")
    settings = tuple(sorted(dict(self.settings).items()))
    for key, value in settings:
      if not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"Schedule {self.name!r}: setting {key!r} must be a number, string or boolean, "
                         f"not {value!r}.")
    object.__setattr__(self, "settings", settings)

  def build(self) -> optax.Schedule:
    return getattr(optax, self.name)(**dict(self.settings))

  def facts(self) -> dict:
    return {"name": f"optax.{self.name}", **dict(self.settings)}


class OptimizerSpec:
  """What an optimizer description gives (subclasses are frozen dataclasses whose fields are the
  keyword arguments of the optax function `NAME`, `learning_rate` first)."""
  NAME: ClassVar[str]

  def settings(self) -> dict:
    """The fields that are set (not None), in field order."""
    values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    return {name: value for name, value in values.items() if value is not None}

  def facts(self) -> dict:
    """{"name": "optax.<NAME>", "learning_rate": number or schedule facts, the other settings...}."""
    return {"name": f"optax.{self.NAME}",
            **{k: v.facts() if isinstance(v, Schedule) else v for k, v in self.settings().items()}}

  def build(self) -> optax.GradientTransformation:
    """The optax transformation (the same object for equal descriptions: one compiled step)."""
    return _build(self)


@functools.lru_cache(maxsize=16)
def _build(spec: OptimizerSpec) -> optax.GradientTransformation:
  kwargs = {k: v.build() if isinstance(v, Schedule) else v for k, v in spec.settings().items()}
  learning_rate = kwargs.pop("learning_rate")
  return getattr(optax, spec.NAME)(learning_rate, **kwargs)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Adafactor(OptimizerSpec):
  """Lester et al.'s prompt-tuning optimizer by default: Adafactor, constant learning rate 0.3, beta2
  decay 0.8, parameter scaling off, weight decay 1e-5 (optax's defaults otherwise: update clipping
  1.0, no momentum). The optional settings (None: optax's default) are `optax.adafactor`'s."""
  NAME: ClassVar[str] = "adafactor"
  learning_rate: float | Schedule = 0.3
  decay_rate: float = 0.8
  multiply_by_parameter_scale: bool = False
  weight_decay_rate: float | None = 1e-5
  clipping_threshold: float | None = None
  momentum: float | None = None
  decay_offset: int | None = None
  min_dim_size_to_factor: int | None = None
  eps: float | None = None
  factored: bool | None = None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Adam(OptimizerSpec):
  """Adam (what the Hugging Face peer uses), each prompt with its own moments; the optional settings
  (None: optax's default) are `optax.adam`'s."""
  NAME: ClassVar[str] = "adam"
  learning_rate: float | Schedule
  b1: float | None = None
  b2: float | None = None
  eps: float | None = None
  eps_root: float | None = None
  nesterov: bool | None = None


DEFAULT_OPTIMIZER = Adafactor()


def resolve(optimizer: OptimizerSpec | optax.GradientTransformation | None
            ) -> tuple[optax.GradientTransformation, dict]:
  """(the optax transformation, its facts) of a description, of None (`DEFAULT_OPTIMIZER`) or of an
  optax transformation given in Python (`UNRECORDED`: its settings cannot be read)."""
  if optimizer is None:
    optimizer = DEFAULT_OPTIMIZER
  if isinstance(optimizer, OptimizerSpec):
    return optimizer.build(), optimizer.facts()
  return optimizer, dict(UNRECORDED)


def flat_facts(prefix: str, value: Mapping | Any) -> dict:
  """{"optimizer": "optax.adam", "optimizer.learning_rate": 0.3, ...}: one fact per setting, so that a
  refused resume names the one that differs."""
  if not isinstance(value, dict):
    return {prefix: value}
  facts = {prefix: value.get("name")}
  for key, item in value.items():
    if key != "name":
      facts.update(flat_facts(f"{prefix}.{key}", item))
  return facts

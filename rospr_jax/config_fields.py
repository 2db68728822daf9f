"""Typed run configs: each field names the gin macro that sets it, and is checked once, on creation.

A run's settings are frozen dataclasses (as t5x's `CheckpointConfig` / `DatasetConfig`, levanter's
config dataclasses). A field a user sets through a gin macro is declared with `setting(MACRO, default,
rule)`; the dataclass's `__post_init__` calls `check_fields(self)`, which refuses every value its rule
rejects, in one line naming the field and the macro:

    batch_size (BATCH_SIZE) must be an integer >= 1, not 0.

A setting of a command that takes flags names its flag instead (`library.build.DrawConfig.n`: `--n`).
A rule maps a value to None (it is fine) or to what the value must be ("an integer >= 1").
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any, Callable

Rule = Callable[[Any], "str | None"]


def _is_integer(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def at_least(low: int) -> Rule:
  """An integer >= `low`."""
  return lambda value: None if _is_integer(value) and value >= low else f"an integer >= {low}"


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)


def fraction(value: Any) -> str | None:
  """A number in [0, 1)."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < 1
  return None if ok else "a number in [0, 1)"


def positive_number(value: Any) -> str | None:
  """A finite number > 0."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
  return None if ok else "a finite number > 0"


def path(value: Any) -> str | None:
  """A path or URL string."""
  return None if isinstance(value, (str, os.PathLike)) else "a string"


def string(value: Any) -> str | None:
  return None if isinstance(value, str) else "a string"


def names(example: str) -> Rule:
  """A non-empty list of non-empty strings (`example`: one such list, for the message)."""
  def check(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value)
    return None if ok else f"a non-empty list of names, e.g. {example}"
  return check


def optional(rule: Rule) -> Rule:
  """None, or what `rule` accepts."""
  def check(value: Any) -> str | None:
    expected = None if value is None else rule(value)
    return None if expected is None else f"None or {expected}"
  return check


def one_of(*choices: Any) -> Rule:
  return lambda value: None if value in choices else f"one of {', '.join(map(repr, choices))}"


def setting(macro: str | None, default: Any = dataclasses.MISSING, rule: Rule | None = None) -> Any:
  """A dataclass field set by gin macro (or flag) `macro`, checked by `rule` (when given) in
  `check_fields`."""
  return dataclasses.field(default=default, metadata={"macro": macro, "rule": rule})


def macro(config_class: type, name: str) -> str:
  """The gin macro of field `name` of `config_class`."""
  return next(f.metadata["macro"] for f in dataclasses.fields(config_class) if f.name == name)


def problem(name: str, macro_name: str | None, value: Any, rule: Rule) -> str | None:
  """`name (MACRO) must be ..., not value` when `rule` rejects `value`, else None (no macro: a setting
  only code sets, named alone)."""
  expected = rule(value)
  shown = name if macro_name is None else f"{name} ({macro_name})"
  return None if expected is None else f"{shown} must be {expected}, not {value!r}"


def refuse(problems: list[str | None]) -> None:
  """Raises one ValueError listing the problems that are not None, if any."""
  problems = [p for p in problems if p]
  if problems:
    raise ValueError("; ".join(problems) + ".")


def check_fields(config: Any) -> None:
  """Refuses, in one line naming each field and its macro, every value its field's rule rejects."""
  refuse([problem(field.name, field.metadata["macro"], getattr(config, field.name), field.metadata["rule"])
          for field in dataclasses.fields(config) if field.metadata.get("rule") is not None])

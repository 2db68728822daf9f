"""What a run records of its optimizer: its settings as JSON, for the resume check and the export.

`describe_optimizer(optimizer)` reads gin's bindings of `trainer.train.optimizer` when gin configured
it (a configurable reference, with its own bindings and macros resolved), `default_optimizer`'s
settings when none is given; an optax object given in Python cannot be read and is recorded as such.
`flat_facts` spreads a description into one fact per setting, so a refused resume names the one that
differs.
"""

from __future__ import annotations

from typing import Any

import gin
import optax


# What `default_optimizer()` is (train_step.py), for the records of a run that gives no optimizer.
_DEFAULT_OPTIMIZER = {"name": "optax.adafactor", "learning_rate": 0.3, "decay_rate": 0.8,
                      "multiply_by_parameter_scale": False, "weight_decay_rate": 1e-5}


def _gin_value(value: Any, depth: int = 0) -> Any:
  """A gin binding as JSON: a configurable reference as {"name": selector, its bindings...}, a macro
  as its value."""
  if isinstance(value, gin.config.ConfigurableReference):
    if value.selector == "gin.macro":
      return _gin_value(gin.query_parameter("/".join(value.scopes) + "/gin.macro.value"), depth)
    if not value.evaluate or depth > 4:
      return f"@{value.scoped_selector}"
    bindings = gin.get_bindings(value.scoped_selector, resolve_references=False)
    return {"name": value.scoped_selector, **{k: _gin_value(v, depth + 1) for k, v in sorted(bindings.items())}}
  if isinstance(value, (list, tuple)):
    return [_gin_value(v, depth) for v in value]
  if isinstance(value, dict):
    return {str(k): _gin_value(v, depth) for k, v in value.items()}
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def describe_optimizer(optimizer: optax.GradientTransformation | None) -> dict:
  """The optimizer's settings as JSON (name, learning rate or schedule, the rest of its bindings),
  for the resume check and the export manifest: gin's bindings of `trainer.train.optimizer` when gin
  configured it, `default_optimizer`'s with None; an optax object given in Python cannot be read."""
  try:
    bound = gin.query_parameter("trainer.train.optimizer")
  except (ValueError, KeyError):
    bound = None
  if isinstance(bound, gin.config.ConfigurableReference):
    described = _gin_value(bound)
    if isinstance(described, dict):
      return described
  if optimizer is None:
    return dict(_DEFAULT_OPTIMIZER)
  return {"name": "unrecorded (an optax transformation given in Python)"}


def flat_facts(prefix: str, value: Any) -> dict:
  """{"optimizer": "optax.adam", "optimizer.learning_rate": 0.3, ...}: one fact per setting, so that a
  refused resume names the one that differs."""
  if not isinstance(value, dict):
    return {prefix: value}
  facts = {prefix: value.get("name")}
  for key, item in value.items():
    if key != "name":
      facts.update(flat_facts(f"{prefix}.{key}", item))
  return facts

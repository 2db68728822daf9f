"""Typed run configs: a field names its macro, its rule is checked once on creation, and every bad value
of one config is named in one line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rospr_jax import config_fields as cf


@dataclasses.dataclass(frozen=True)
class Toy:
  count: int = cf.setting("COUNT", 1, cf.POSITIVE)
  rate: float = cf.setting("RATE", 0.5, cf.fraction)
  limit: int | None = cf.setting("LIMIT", None, cf.optional(cf.NON_NEGATIVE))
  names: tuple = cf.setting("NAMES", ("a",), cf.names("['a']"))
  internal: int = cf.setting(None, 3, cf.POSITIVE)
  free: object = None

  def __post_init__(self):
    cf.check_fields(self)


def test_every_bad_value_is_named_with_its_macro_in_one_line():
  assert Toy(count=np.int64(2), rate=0, limit=0, names=["x", "y"]).count == 2  # numpy integers are integers
  with pytest.raises(ValueError) as refused:
    Toy(count=True, rate=1.0, limit=-1, names=[], internal=0)
  assert str(refused.value) == (
      "count (COUNT) must be an integer >= 1, not True; rate (RATE) must be a number in [0, 1), not 1.0; "
      "limit (LIMIT) must be None or an integer >= 0, not -1; names (NAMES) must be a non-empty list of "
      "names, e.g. ['a'], not []; internal must be an integer >= 1, not 0.")
  assert cf.macro(Toy, "rate") == "RATE"


@pytest.mark.parametrize("rule, good, bad", [
    (cf.positive_number, [1e-9, 3], [0, -1.0, float("inf"), float("nan"), "1", False]),
    (cf.path, ["a", "gs://b/c"], [None, 5]),
    (cf.one_of("x", "y"), ["x"], ["z", None]),
    (cf.names("[]"), [["a"], ("a", "b")], ["a", [""], [1], None]),
])
def test_rules(rule, good, bad):
  assert [rule(v) for v in good] == [None] * len(good)
  assert all(isinstance(rule(v), str) for v in bad)

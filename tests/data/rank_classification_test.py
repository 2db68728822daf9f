"""Rank-classification rows: one per answer choice, with the correct flags."""

from __future__ import annotations

import pytest

from rospr_jax.data import rank_classification as rc


def test_expand_choices_rows():
  rows = rc.expand_choices(7, "Is it?", ["no", "yes"], rc.correct_choices(["no", "yes"], " yes "), weight=2.0)
  assert rows == [rc.ChoiceRow("Is it?", "no", (7, 0), False, 2.0), rc.ChoiceRow("Is it?", "yes", (7, 1), True, 2.0)]
  with pytest.raises(ValueError, match="example 3 has no answer choices"):
    rc.expand_choices(3, "x", [], [])
  with pytest.raises(ValueError, match="example 4: 2 choices but 1 is_correct flags"):
    rc.expand_choices(4, "x", ["a", "b"], [True])

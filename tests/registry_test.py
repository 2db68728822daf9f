"""The one registry rule: an entry repeating an identifying attribute is refused, naming both; an
unknown name is refused, naming the known ones; entries keep their registration order."""

from __future__ import annotations

import dataclasses

import pytest

from rospr_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class _Part:
  name: str
  kind: str


def test_entries_keep_their_order_and_no_two_share_an_identifying_attribute():
  parts = Registry("part", ("name", "kind"))
  first = parts.add(_Part("b", "x"))
  parts.add(_Part("a", "y"))
  assert first == _Part("b", "x") and list(parts) == ["b", "a"] and parts.named("a") == _Part("a", "y")
  with pytest.raises(ValueError, match=r"A part with the name 'c' or kind 'x' exists: \['b'\]\."):
    parts.add(_Part("c", "x"))  # a new name, a kind already taken
  with pytest.raises(ValueError, match=r"A part with the name 'a' or kind 'z' exists: \['a'\]\."):
    parts.add(_Part("a", "z"))
  assert list(parts) == ["b", "a"]  # nothing refused was added
  with pytest.raises(ValueError, match=r"Unknown part 'd'; known: \['b', 'a'\]\."):
    parts.named("d")


def test_the_project_registries_refuse_a_second_entry_of_a_registered_name():
  from rospr_jax.data import families
  from rospr_jax.model import formats
  from rospr_jax.prompt import prompt_init
  from rospr_jax.retrieval import selection
  for registry, entry in ((formats.FORMATS, formats.FORMATS["hf"]), (families.FAMILIES, families.FAMILIES["generated"]),
                          (selection.RULES, selection.RULES["rospr"]),
                          (prompt_init.INITIALIZERS, prompt_init.INITIALIZERS["sampled_vocab"])):
    before = dict(registry)
    with pytest.raises(ValueError, match="exists"):
      registry.add(entry)
    assert dict(registry) == before

"""Registries of the parts a newcomer adds by registering one: checkpoint formats (`model/formats.py`),
task families (`data/families.py`), selection rules (`retrieval/selection.py`), prompt initializers
(`prompt/prompt_init.py`). One rule for all: an entry may not repeat an identifying attribute of one
already registered, and an unknown name is refused naming the known ones."""

from __future__ import annotations

from typing import Any, Sequence


class Registry(dict):
  """{name: entry} in registration order (read as the dict it is).

  Attributes:
    what: names an entry in messages ("checkpoint format").
    unique: the entry's attributes no two entries share; the first is the name it is registered under.
  """

  def __init__(self, what: str, unique: Sequence[str] = ("name",)):
    super().__init__()
    self.what, self.unique = what, tuple(unique)

  def add(self, entry: Any) -> Any:
    """Registers `entry` (returned, so that `add` decorates); refuses one sharing an identifying
    attribute with a registered entry, naming both."""
    values = {attribute: getattr(entry, attribute) for attribute in self.unique}
    clash = [name for name, other in self.items()
             if any(getattr(other, attribute) == value for attribute, value in values.items())]
    if clash:
      given = " or ".join(f"{attribute} {value!r}" for attribute, value in values.items())
      raise ValueError(f"A {self.what} with the {given} exists: {clash}.")
    self[values[self.unique[0]]] = entry
    return entry

  def named(self, name: str) -> Any:
    """The entry registered as `name`; an unknown one is refused naming the known ones."""
    if name not in self:
      raise ValueError(f"Unknown {self.what} {name!r}; known: {list(self)}.")
    return self[name]

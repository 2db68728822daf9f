"""What an example must hold for a template to render it: the data's faults, refused by name.

promptsource renders leniently: a missing field prints nothing, a null one prints "None", and
`answer_choices[label]` with a label that is no index into the choices (5 of two, -1, "entailment")
prints an empty target, which T0's empty-output rule then drops without a word. Those are faults of
the data, not of the template, so `templates.render` refuses them here (`DataError`, naming the
field). What stays a drop is a template that renders nothing for a well-formed example by design
(COPA's "cause" templates on an "effect" question).
"""

from __future__ import annotations

import functools
from typing import Any, Collection, Mapping, Sequence

import jinja2
from jinja2 import nodes


class DataError(ValueError):
  """An example whose data the template cannot render: `field` names the field, `reason` says what
  is wrong; the message is `<where>: <reason>`."""

  def __init__(self, where: str, field: str | None, reason: str):
    super().__init__(f"{where}: {reason}")
    self.field, self.reason = field, reason


class ChoiceIndexError(Exception):
  """`answer_choices[i]` with an `i` that indexes no choice. Not a LookupError or TypeError, so that
  jinja's `Environment.getitem` lets it through instead of returning Undefined (an empty target)."""

  def __init__(self, index):
    super().__init__(index)
    self.index = index


class Choices(list):
  """Answer choices that raise `ChoiceIndexError` when indexed out of range or with a non-integer
  (negative indexes in range stay valid: some templates print `answer_choices[-1]`)."""

  def __getitem__(self, index):
    if isinstance(index, slice):
      return list.__getitem__(self, index)
    if isinstance(index, bool) or not isinstance(index, int) or not -len(self) <= index < len(self):
      raise ChoiceIndexError(index)
    return list.__getitem__(self, index)


def _is_minus_one(node: nodes.Node) -> bool:
  if isinstance(node, nodes.Neg):
    return isinstance(node.node, nodes.Const) and node.node.value == 1
  return isinstance(node, nodes.Const) and node.value == -1


@functools.lru_cache(maxsize=8192)
def unlabeled_marks(source: str) -> frozenset[str]:
  """Fields a template compares with -1 (`{% if label != -1 %}`): promptsource's guard for Hugging
  Face's unlabeled examples (test splits), for which it renders no target."""
  names = set()
  for compare in jinja2.Environment().parse(source).find_all(nodes.Compare):
    operands = [compare.expr] + [op.expr for op in compare.ops]
    if {op.op for op in compare.ops} <= {"eq", "ne"} and any(_is_minus_one(o) for o in operands):
      names |= {o.name for o in operands if isinstance(o, nodes.Name)}
  return frozenset(names)


# Label fields whose empty string marks an unlabeled example (Winogrande's "answer", HellaSwag's "label").
_EMPTY_MARKS = frozenset({"answer", "label"})


def check_fields(where: str, example: Mapping[str, Any], required: Collection[str], jinja: str) -> None:
  """Refuses an example a template would render wrongly for want of data.

  Raises:
    DataError: a field the template reads is absent or null, a label it reads is "" (Hugging Face's
      unlabeled Winogrande / HellaSwag example), or one it compares with -1 is -1.
  """
  missing = sorted(set(required) - set(example))
  if missing:
    raise DataError(where, missing[0], f"field(s) {missing} that the template reads are missing "
                                       f"(the example has {sorted(example)})")
  null = sorted(f for f in required if example[f] is None)
  if null:
    raise DataError(where, null[0], f"field {null[0]!r} that the template reads is null")
  for field in sorted(_EMPTY_MARKS & set(required)):
    if example[field] == "":
      raise DataError(where, field, f"field {field!r} is empty, the Hugging Face mark of an unlabeled example "
                                    "(Winogrande's answer, HellaSwag's label in test splits): the template would "
                                    "score it against a target it makes up")
  for field in sorted(unlabeled_marks(jinja) & set(example)):
    if example[field] == -1 and not isinstance(example[field], bool):
      raise DataError(where, field, f"field {field!r} is -1, the Hugging Face mark of an unlabeled "
                                    "example (test splits): the template renders no target for it, so it "
                                    "cannot be scored")


def choice_index_error(where: str, example: Mapping[str, Any], required: Collection[str], index,
                       choices: Sequence[str]) -> DataError:
  """The DataError of `answer_choices[index]` with no such choice, naming the field that holds it."""
  fields = sorted(f for f in required if type(example.get(f)) is type(index) and example.get(f) == index)
  field = fields[0] if fields else None
  what = f"field {field!r} is {index!r}" if field else f"the template indexes its answer choices with {index!r}"
  return DataError(where, field, f"{what}, not an index into the template's {len(choices)} answer "
                                 f"choices ({' | '.join(choices)})")

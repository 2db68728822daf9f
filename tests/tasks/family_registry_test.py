"""A task family is one registered `families.TaskFamily`: a throwaway family of colour questions,
defined in this module alone, is registered as SeqIO tasks and mixtures, listed and shown by
`rospr tasks`, and resolved by `rospr evaluate`'s TARGETS (its group, a task name by its prefix) into
targets the evaluator scores, without a change to `rospr_tasks/registry.py` or `commands/targets.py`."""

from __future__ import annotations

from typing import Container, Iterator

import numpy as np
import pytest
import seqio

from rospr_jax import tokenization
from rospr_jax.commands import targets as targets_lib
from rospr_jax.commands import tasks as tasks_command
from rospr_jax.data import families, prompted
from rospr_jax.eval.batching import Scorer
from rospr_jax.pipeline import evaluate
from rospr_jax.registry import Registry
from rospr_tasks import registry

ROWS = (("the sky is", 1), ("grass is", 0), ("snow is", 2), ("a lemon is", 3))  # (text, colour index)
COLOURS = ("green", "blue", "white", "yellow")


class ColourTask(prompted.PromptedTask):
  """Four questions; the answer choices are the four colours."""
  splits, eval_split, has_choices = ("train", "test"), "test", True

  def __init__(self, name: str):
    self.name, self.dataset_label, self.template_name = name, "colours", name.split("_", 1)[1]

  def count(self, split: str) -> int | None:
    return len(ROWS)

  def examples(self, split: str, positions: Container[int] | None = None) -> Iterator[prompted.PromptedExample]:
    for i, (text, label) in enumerate(ROWS):
      if positions is None or i in positions:
        yield prompted.PromptedExample(i, f"{text} {split}", COLOURS[label], COLOURS,
                                       tuple(c == label for c in range(len(COLOURS))))


COLOURS_FAMILY = families.TaskFamily(
    name="colours", group="colours", prefix="colours_", check=lambda: None,
    sources=lambda: [ColourTask("colours_source")], targets=lambda data_dir: [ColourTask("colours_target")],
    source_rates=lambda tasks: [(t.name, 2.0) for t in tasks], source_mixture="rospr_colours_sources",
    target_mixture="rospr_colours_targets_score_eval")


@pytest.fixture
def colours(monkeypatch):
  """The colour family alone is registered (the built-in ones stay out of this test); the SeqIO
  registry is left as it was."""
  monkeypatch.setattr(families, "FAMILIES", Registry("task family", families.FAMILIES.unique))
  families.register(COLOURS_FAMILY)
  for name in ("SOURCES", "TARGETS", "MIXTURES", "STATUS"):
    monkeypatch.setattr(registry, name, {})
  yield COLOURS_FAMILY
  for name in ("colours_source", "colours_source_score_eval", "colours_target", "colours_target_score_eval"):
    seqio.TaskRegistry.remove(name)
  for name in (COLOURS_FAMILY.source_mixture, COLOURS_FAMILY.target_mixture):
    seqio.MixtureRegistry.remove(name)


def test_a_registered_family_is_listed_shown_and_served_by_seqio(colours, capsys):
  assert tasks_command.main(["--filter", "colours_"]) == 0
  listing = capsys.readouterr().out
  assert "rospr_colours_sources: 1 tasks" in listing and "rospr_colours_targets_score_eval: 1 tasks" in listing
  assert "colours_source (+_score_eval)  [colours]" in listing and "colours_target (+_score_eval)" in listing
  assert registry.STATUS == {"colours": "registered"}
  assert seqio.get_mixture_or_task("rospr_colours_sources").get_rate(
      seqio.get_mixture_or_task("colours_source")) == 2.0
  assert tasks_command.main(["--show", "colours_target_score_eval", "-n", "1"]) == 0
  assert "the sky is test" in capsys.readouterr().out
  rows = list(registry.get_task("colours_target_score_eval").get_dataset(
      sequence_length=None, split="test", shuffle=False, use_cached=False).as_numpy_iterator())
  assert len(rows) == len(ROWS) * len(COLOURS)  # one rank-classification row per (question, colour)


def test_a_family_that_is_not_set_up_is_reported_not_registered(colours, monkeypatch, capsys):
  def missing():
    raise FileNotFoundError("colours are not fetched: run `rospr fetch --colours`")
  monkeypatch.setattr(families, "FAMILIES", Registry("task family", families.FAMILIES.unique))
  families.register(families.TaskFamily(**{**COLOURS_FAMILY.__dict__, "check": missing}))
  assert tasks_command.main([]) == 1  # nothing registered
  assert "[colours] not registered: colours are not fetched" in capsys.readouterr().out


def test_targets_name_a_family_by_group_or_by_prefix_and_are_evaluated(colours, tiny_model):
  (by_group,) = targets_lib.resolve_target_tasks(["colours"])
  (by_name,) = targets_lib.resolve_target_tasks(["colours_target"])
  assert by_group.name == by_name.name == "colours_target"
  with pytest.raises(ValueError, match=r"Unknown target 'colours_other': give \['colours'\]"):
    targets_lib.resolve_target_tasks(["colours_other"])
  target = targets_lib.target_from_task(by_name)
  evaluator = evaluate.Evaluator(Scorer(tiny_model.params, tiny_model.model, batch_size=4),
                                 tokenization.Tokenizer(tiny_model.vocab))
  records, _ = evaluator.evaluate([target], [evaluate.HARD_PROMPT])
  scores = evaluator.score(evaluator.tokenize(target), None)
  expected = np.mean([flags[int(np.argmax(s))] for s, flags in zip(scores, target.is_correct)])
  assert records[0]["target"] == "colours_target" and records[0]["dataset"] == "colours"
  assert records[0]["examples"] == len(ROWS) and records[0]["accuracy"] == pytest.approx(expected)

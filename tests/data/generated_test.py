"""The generated task family: roles as the demo's design needs them, rendering rules, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from rospr_jax.data import generated
from rospr_jax.data.generated import Template


def test_roles_keep_the_new_formats_away_from_the_stand_in_t0():
  backbone = generated.backbone_templates()
  sources = generated.source_templates()
  targets = generated.target_templates()
  assert {t.format for t in backbone} == set(generated.BACKBONE_FORMATS)
  assert not {t.format for t in backbone} & set(generated.NEW_FORMATS)
  assert len(sources) == len(set(sources)) == (4 * 4 - 2) * generated.SOURCE_FRAMES_PER_PAIR
  assert all(t.frame < generated.NUM_SEEN_FRAMES for t in sources)
  for kind, target in targets:
    assert target not in sources and target not in backbone
    same_pair = [s for s in sources if (s.skill, s.format) == (target.skill, target.format)]
    same_format = {s.skill for s in sources if s.format == target.format}
    if kind == "format":  # a new format that a source of the same skill shares
      assert target.format in generated.NEW_FORMATS and len(same_pair) == 2
      assert target.frame < generated.NUM_SEEN_FRAMES  # a wording the sources use, not for this pair
    elif kind == "cross":  # a new format that only other skills' sources share
      assert target.format in generated.NEW_FORMATS and not same_pair
      assert same_format == set(generated.SKILLS) - {target.skill}
    else:
      assert kind == "template" and target.format in generated.BACKBONE_FORMATS
      assert target.frame >= generated.NUM_SEEN_FRAMES
  kinds = [k for k, _ in targets]
  assert (kinds.count("format"), kinds.count("cross"), kinds.count("template")) == (6, 2, 4)


def test_render_follows_its_frame_format_and_label():
  template = Template("weather", "options", 1)
  text, choices, label = template.render(np.random.default_rng(0))
  assert choices == ("A", "B")
  assert text.startswith("Text: the day in the ") and text.endswith(". Options: A) hot B) cold. Answer with the letter A or B.")
  words = generated.SKILLS["weather"].content[label]
  assert sum(w in text.split() or f"{w}." in text.split() for w in words) == 2  # two words of its class
  text, choices, _ = Template("score", "words", 3).render(np.random.default_rng(1))
  assert choices == ("high", "low") and text.startswith("Which is it, high or low? Sentence: the ")


def test_tasks_are_deterministic_balanced_and_named_both_ways():
  task = generated.GeneratedTask(Template("animal", "truefalse", 0))
  assert task.name == "generated_animal_truefalse_f0" and task.dataset_label == "generated/animal"
  assert Template.from_name(task.name) == task.template
  first = list(task.examples("test"))
  assert first == list(generated.GeneratedTask(Template("animal", "truefalse", 0)).examples("test"))
  assert len(first) == task.count("test") == generated.SPLIT_SIZES["test"]
  assert first != list(generated.GeneratedTask(Template("animal", "truefalse", 0), seed=1).examples("test"))
  labels = [ex.is_correct.index(True) for ex in first]
  assert 30 <= sum(labels) <= 70  # a fair coin per example
  assert all(ex.targets == ex.answer_choices[ex.is_correct.index(True)] for ex in first)
  assert [ex.idx for ex in task.examples("test", positions={3, 5})] == [3, 5]
  train = [ex.inputs for ex in task.examples("train")][:len(first)]
  assert train != [ex.inputs for ex in first]  # another generator per split
  with pytest.raises(ValueError, match=r"generated_animal_truefalse_f0 has no split 'dev'"):
    task.count("dev")
  with pytest.raises(ValueError, match=r"'generated_cat_words_f1' is not a task of the generated family"):
    Template.from_name("generated_cat_words_f1")


def test_generated_targets_resolve_without_any_data(monkeypatch, tmp_path):
  from rospr_jax.commands import targets
  monkeypatch.setenv("ROSPR_CACHE", str(tmp_path))  # no promptsource, no BIG-bench
  tasks = targets.resolve_target_tasks(["generated"])
  assert [t.name for t in tasks] == [t.name for _, t in generated.target_templates()]
  (one,) = targets.resolve_target_tasks(["generated_score_options_f0"])
  target = targets.target_from_task(one, max_examples=10)
  assert len(target.inputs) == 10 and all(c == ("A", "B") for c in target.choices)

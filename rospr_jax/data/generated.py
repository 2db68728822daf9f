"""The generated task family: the project's own promptsource-style sources and held-out targets.

No download: every example is drawn from a seeded generator, so `rospr demo`, the offline vocabulary
and the tests stand on data that cannot vanish. A tiny T5 can learn the family, and the choice of soft
prompt matters in it, which is what RoSPr is about.

A template is (skill, answer format, frame):

- 4 skills: the class of a short text (sentiment of a review, temperature of a weather report, animal or
  machine, high or low score). Each has two class words (c0, c1) and content words per class.
- 4 answer formats, the question put after the text and the answer choices it asks for:
  `yesno` ("Is it c0? ..." -> yes / no), `words` ("Which is it, c0 or c1?" -> c0 / c1),
  `truefalse` ("Claim: it is c0. ..." -> true / false) and `options` ("Options: A) c0 B) c1 ..." -> A / B).
- 8 frames: the wording around text and question. Frames 0-3 are "seen" (sources use them), 4-7 only
  appear in held-out targets.

Roles (the paper's setting in miniature, built so that its mechanism can show):

- The stand-in T0 is multitask-trained on every skill in the `BACKBONE_FORMATS` (yes/no and label
  words) in the `BACKBONE_FRAMES`: it never produces "true", "false", "A" or "B".
- Sources (one soft prompt each): every (skill, format) pair but the `CROSS_SKILL_PAIRS`, each in
  `SOURCE_FRAMES_PER_PAIR` seen frames. So the formats T0 never saw (`NEW_FORMATS`) have sources.
- Held-out targets (no source and no T0 template): "format": a skill in a format T0 was never trained
  on, in a seen frame that the sources of that (skill, format) pair do not use; a source of the same
  skill and format (in other frames) is what RoSPr should retrieve. "cross": the same for the
  `CROSS_SKILL_PAIRS`, whose format only other skills' sources share. "template": a skill in a format T0
  knows, in an unseen frame.

Splits: every template has `train`, `validation` and `test`, drawn from one generator per (seed,
template, split); labels are balanced in expectation (a fair coin per example).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Callable, Container, Iterator

import numpy as np

from rospr_jax.data import prompted

GROUP = "generated"
SPLIT_SIZES = {"train": 400, "validation": 100, "test": 100}


@dataclasses.dataclass(frozen=True)
class Skill:
  """A binary classification of a short text.

  Attributes:
    classes: the class words (c0, c1); label 0 is c0.
    content: [2] lists of words that mark each class.
    text: makes one text from a generator and two content words of the example's class.
  """

  classes: tuple[str, str]
  content: tuple[tuple[str, ...], tuple[str, ...]]
  text: Callable[[np.random.Generator, list[str]], str]


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
  return words[int(rng.integers(len(words)))]


SKILLS = {
    "sentiment": Skill(("good", "bad"),
                       (("great", "lovely", "wonderful", "fun", "superb", "charming", "excellent"),
                        ("awful", "boring", "terrible", "dull", "poor", "ugly", "horrible")),
                       lambda rng, w: f"the {_pick(rng, ('film', 'meal', 'book', 'song', 'show'))} was "
                                      f"{w[0]} and {w[1]}"),
    "weather": Skill(("hot", "cold"),
                     (("sunny", "warm", "dry", "burning", "summer", "humid", "baking"),
                      ("icy", "snowy", "freezing", "frosty", "winter", "chilly", "frozen")),
                     lambda rng, w: f"the day in the {_pick(rng, ('city', 'valley', 'north', 'park', 'hills'))} "
                                    f"was {w[0]} and {w[1]}"),
    "animal": Skill(("animal", "machine"),
                    (("horse", "rabbit", "tiger", "sheep", "eagle", "mouse", "goat"),
                     ("truck", "robot", "engine", "tractor", "drill", "crane", "pump")),
                    lambda rng, w: f"we watched a {w[0]} near the {_pick(rng, ('farm', 'road', 'river', 'barn'))}"),
    "score": Skill(("high", "low"),
                   (tuple(str(n) for n in range(60, 100)), tuple(str(n) for n in range(10, 40))),
                   lambda rng, w: f"the {_pick(rng, ('team', 'student', 'player', 'class'))} scored {w[0]} points"),
}

# format -> (question given the class words, answer choices given the class words)
FORMATS: dict[str, tuple[Callable[[tuple[str, str]], str], Callable[[tuple[str, str]], tuple[str, str]]]] = {
    "yesno": (lambda c: f"Is it {c[0]}? Answer yes or no.", lambda c: ("yes", "no")),
    "words": (lambda c: f"Which is it, {c[0]} or {c[1]}?", lambda c: c),
    "truefalse": (lambda c: f"Claim: it is {c[0]}. Is the claim true or false?", lambda c: ("true", "false")),
    "options": (lambda c: f"Options: A) {c[0]} B) {c[1]}. Answer with the letter A or B.", lambda c: ("A", "B")),
}

FRAMES = (
    "{text}. {question}",
    "Text: {text}. {question}",
    "Read the sentence: {text}. {question}",
    "{question} Sentence: {text}.",
    "Below you will find a short piece of writing; think about it carefully. {text}. Now reply. {question}",
    "{question} Here is a note - {text} - pick one.",
    "Passage >> {text} << Task for you: {question} Respond with one word only.",
    "Query: {question} Statement that it concerns: {text}. Go.",
)
NUM_SEEN_FRAMES = 4
BACKBONE_FORMATS = ("yesno", "words")
BACKBONE_FRAMES = (0, 1)
NEW_FORMATS = ("truefalse", "options")  # the formats the stand-in T0 is not trained on
CROSS_SKILL_PAIRS = (("animal", "truefalse"), ("score", "options"))  # (skill, format) without a source
SOURCE_FRAMES_PER_PAIR = 2


@dataclasses.dataclass(frozen=True)
class Template:
  """One hard prompt of the family."""

  skill: str
  format: str
  frame: int

  @property
  def name(self) -> str:
    """The task name, e.g. `generated_weather_truefalse_f2`."""
    return f"{GROUP}_{self.skill}_{self.format}_f{self.frame}"

  @classmethod
  def from_name(cls, name: str) -> "Template":
    """Inverse of `name` (raises ValueError naming the task for anything else)."""
    parts = name.split("_")
    if (len(parts) != 4 or parts[0] != GROUP or parts[1] not in SKILLS or parts[2] not in FORMATS
        or not parts[3].startswith("f") or not parts[3][1:].isdigit() or int(parts[3][1:]) >= len(FRAMES)):
      raise ValueError(f"{name!r} is not a task of the generated family (generated_<skill>_<format>_f<frame>)")
    return cls(parts[1], parts[2], int(parts[3][1:]))

  def render(self, rng: np.random.Generator) -> tuple[str, tuple[str, str], int]:
    """One example: (input text, answer choices [2], index of the correct choice)."""
    skill = SKILLS[self.skill]
    label = int(rng.integers(2))
    words = list(rng.choice(skill.content[label], size=2, replace=False))
    question, choices = FORMATS[self.format]
    text = FRAMES[self.frame].format(text=skill.text(rng, words), question=question(skill.classes))
    return text, choices(skill.classes), label


def backbone_templates() -> list[Template]:
  """What the stand-in T0 is trained on: every skill in the backbone's formats and frames."""
  return [Template(s, f, k) for s in SKILLS for f in BACKBONE_FORMATS for k in BACKBONE_FRAMES]


def source_templates() -> list[Template]:
  """The sources: every (skill, format) pair but the cross-skill ones, in SOURCE_FRAMES_PER_PAIR seen
  frames (rotating, so that every seen frame meets several skills and formats)."""
  out = []
  for s, skill in enumerate(SKILLS):
    for f, fmt in enumerate(FORMATS):
      if (skill, fmt) not in CROSS_SKILL_PAIRS:
        out += [Template(skill, fmt, (s + f + k) % NUM_SEEN_FRAMES) for k in range(SOURCE_FRAMES_PER_PAIR)]
  return out


def target_templates() -> list[tuple[str, Template]]:
  """(kind, template) of the held-out targets: per skill both new formats ("format", or "cross" for a
  cross-skill pair) in the first seen frame that no source of that (skill, format) pair uses, and one
  format T0 knows ("template") in an unseen frame."""
  out = []
  sources = set(source_templates())
  unseen = len(FRAMES) - NUM_SEEN_FRAMES
  for s, skill in enumerate(SKILLS):
    for fmt in NEW_FORMATS:
      kind = "cross" if (skill, fmt) in CROSS_SKILL_PAIRS else "format"
      frame = min(k for k in range(NUM_SEEN_FRAMES) if Template(skill, fmt, k) not in sources)
      out.append((kind, Template(skill, fmt, frame)))
    out.append(("template", Template(skill, BACKBONE_FORMATS[s % 2], NUM_SEEN_FRAMES + (s + 2) % unseen)))
  return out


class GeneratedTask(prompted.PromptedTask):
  """One template of the family as a prompted task (the same interface as promptsource's and BIG-bench's)."""

  splits = tuple(SPLIT_SIZES)
  eval_split = "test"
  has_choices = True

  def __init__(self, template: Template, seed: int = 0, sizes: dict[str, int] | None = None):
    self.template = template
    self.seed = seed
    self.sizes = dict(SPLIT_SIZES, **(sizes or {}))
    self.name = template.name
    self.dataset_label = f"{GROUP}/{template.skill}"
    self.template_name = f"{template.format}_f{template.frame}"

  def __repr__(self) -> str:
    return f"GeneratedTask({self.name!r})"

  def count(self, split: str) -> int | None:
    return self.sizes[self._check(split)]

  def examples(self, split: str, positions: Container[int] | None = None) -> Iterator[prompted.PromptedExample]:
    rows = _rows(self.template, self.seed, self._check(split), self.sizes[split])
    for i, (text, choices, label) in enumerate(rows):
      if positions is None or i in positions:
        yield prompted.PromptedExample(i, text, choices[label], choices, tuple(c == label for c in range(2)))

  def _check(self, split: str) -> str:
    if split not in self.sizes:
      raise ValueError(f"{self.name} has no split {split!r}; its splits are {list(self.sizes)}")
    return split


@functools.lru_cache(maxsize=256)
def _rows(template: Template, seed: int, split: str, size: int) -> tuple[tuple[str, tuple[str, str], int], ...]:
  """The split's examples, from one generator per (seed, template, split): the same on every machine."""
  rng = np.random.default_rng([seed, zlib.crc32(template.name.encode()), zlib.crc32(split.encode())])
  return tuple(template.render(rng) for _ in range(size))


def target_tasks(seed: int = 0) -> list[GeneratedTask]:
  """The held-out targets as tasks (the `generated` target group of `rospr evaluate`)."""
  return [GeneratedTask(t, seed) for _, t in target_templates()]


def corpus() -> Iterator[str]:
  """Every text of the family in a fixed order: the words of all skills, formats and frames, and 20
  rendered examples of every template (part of the offline vocabulary's corpus)."""
  for skill in SKILLS.values():
    yield " ".join(skill.classes + skill.content[0] + skill.content[1])
  for name, (question, choices) in FORMATS.items():
    for skill in SKILLS.values():
      yield question(skill.classes) + " " + " ".join(choices(skill.classes))
  for skill in SKILLS:
    for fmt in FORMATS:
      for k in range(len(FRAMES)):
        for text, choices, _ in _rows(Template(skill, fmt, k), 0, "train", SPLIT_SIZES["train"])[:20]:
          yield text

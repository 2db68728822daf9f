"""Does retrieval raise accuracy? A controlled benchmark of RoSPr on generated tasks, on the CPU.

Usage:
  python bench/method.py [--out runs/bench_method] [--quick] [--seed 0] [--json FILE]

A family of generated text tasks a tiny T5 can learn, in promptsource style: four skills (sentiment
of a review, temperature of a weather report, whether a seen thing is an animal or a machine, whether
a score is high or low), each rendered with hard-prompt templates = a frame (the wording around the
text and the question) x an answer-choice format (yes/no, true/false, A/B options, label words).

- Sources: templates in 4 of the 8 frames ("seen" frames), each skill in 3 of the 4 formats (skill
  i never meets format i). One soft prompt per source template (skill, format, frame), trained with
  the project's prompt trainer on the frozen backbone; a library of instances per source (the
  backbone's encoder is the retriever, as in the demo).
- The "T0" stage: a tiny backbone trained on all weights (`rospr_jax.model.multitask`) on some of the
  source templates: those in the first frame (as T0 saw some prompts of its training datasets).
- Held-out targets: "template" targets (seen skills and formats, in the 4 frames never trained on) and
  "format" targets (skill i in its unseen format i, in a seen frame).
- Methods: T0 (the hard prompt alone), RoSPr, INTER, VAR, INTER+VAR, Random (a seeded random library
  prompt) and Oracle (labels) (the best single library prompt chosen with the target's labels), all
  through `rospr_jax.eval.evaluate.Evaluator`, with Wilson 95% intervals on the examples.
- Retrieval quality: how often RoSPr's source (and the queries' neighbours) share the target's skill
  and its answer format. Factor analysis (the paper's, in miniature): the mean accuracy of the library
  prompts grouped by (same skill?, same format?) as the target, from the oracle's per-prompt scores.

Prints a markdown report and JSON; writes both under --out (`method.md`, `method.json`) beside the
pipeline's artifacts (backbone, prompts, library, selections). Only the compute packages and the offline
vocabulary are used, composed as `rospr demo` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax
import numpy as np

from common import markdown_table
from rospr_jax.backbone import load_backbone
from rospr_jax.commands import demo
from rospr_jax.data import vocabulary
from rospr_jax.eval import evaluate
from rospr_jax.eval.metrics import wilson
from rospr_jax.library import build as library_build
from rospr_jax.library import embed, sources as sources_lib
from rospr_jax.prompt import input_pipeline, trainer
from rospr_jax.retrieval.selection import SelectionConfig
from rospr_jax.tokenization import Tokenizer

ORACLE, RANDOM = evaluate.ORACLE, "Random"
METHODS = (evaluate.HARD_PROMPT, "RoSPr", "INTER", "VAR", "INTER+VAR", ORACLE, RANDOM)

# ------------------------------------------------------------------------------------------------
# The task family.

# skill -> (class words (label 0, label 1), content words per label, content frame)
SKILLS = {
    "sentiment": (("good", "bad"),
                  (["great", "lovely", "wonderful", "fun", "superb", "charming", "excellent"],
                   ["awful", "boring", "terrible", "dull", "poor", "ugly", "horrible"]),
                  lambda rng, w: f"the {rng.choice(['film', 'meal', 'book', 'song', 'show'])} was "
                                 f"{w[0]} and {w[1]}"),
    "weather": (("hot", "cold"),
                (["sunny", "warm", "dry", "burning", "summer", "humid", "baking"],
                 ["icy", "snowy", "freezing", "frosty", "winter", "chilly", "frozen"]),
                lambda rng, w: f"the day in the {rng.choice(['city', 'valley', 'north', 'park', 'hills'])} "
                               f"was {w[0]} and {w[1]}"),
    "animal": (("animal", "machine"),
               (["horse", "rabbit", "tiger", "sheep", "eagle", "mouse", "goat"],
                ["truck", "robot", "engine", "tractor", "drill", "crane", "pump"]),
               lambda rng, w: f"we watched a {w[0]} near the {rng.choice(['farm', 'road', 'river', 'barn'])}"),
    "score": (("high", "low"),
              ([str(n) for n in range(60, 100)], [str(n) for n in range(10, 40)]),
              lambda rng, w: f"the {rng.choice(['team', 'student', 'player', 'class'])} scored {w[0]} points"),
}

# format -> (question given the class words, answer choices given the class words)
FORMATS = {
    "yesno": (lambda c: f"Is it {c[0]}? yes or no", lambda c: ("yes", "no")),
    "truefalse": (lambda c: f"Claim: it is {c[0]}. True or false?", lambda c: ("true", "false")),
    "options": (lambda c: f"Options: A) {c[0]} B) {c[1]}. Answer A or B.", lambda c: ("A", "B")),
    "words": (lambda c: f"Answer {c[0]} or {c[1]}.", lambda c: c),
}

FRAMES = (  # the wording around the text and the question; the first NUM_SEEN_FRAMES are trained on
    "{text}. {question}",
    "Text: {text}. {question}",
    "Read the sentence: {text}. {question}",
    "{question} Sentence: {text}.",
    "Below you will find a short piece of writing; think about it carefully. {text}. Now reply. {question}",
    "{question} Here is a note - {text} - pick one.",
    "Passage >> {text} << Task for you: {question} Respond with one word only.",
    "Query: {question} Statement that it concerns: {text}. Go.",
)
NUM_SEEN_FRAMES = 4  # frames of the source templates
BACKBONE_FRAMES = 1  # of those, the frames the backbone is trained on


@dataclasses.dataclass(frozen=True)
class Template:
  skill: str
  format: str
  frame: int

  @property
  def name(self) -> str:
    return f"{self.skill}.{self.format}.f{self.frame}"


def render(template: Template, rng: np.random.Generator) -> tuple[str, tuple[str, ...], int]:
  """One example: (input text, answer choices, index of the correct choice)."""
  classes, words, make = SKILLS[template.skill]
  label = int(rng.integers(2))
  text = make(rng, list(rng.choice(words[label], size=2, replace=False)))
  question, choices = FORMATS[template.format]
  return FRAMES[template.frame].format(text=text, question=question(classes)), choices(classes), label


def unseen_format(skill: str) -> str:
  """Skill i never sees format i in training (the "format" targets)."""
  return list(FORMATS)[list(SKILLS).index(skill)]


def source_templates(extra_frames: int = 2) -> list[Template]:
  """The source templates: each skill in its 3 seen formats, each in the backbone's frames and in
  `extra_frames` more seen frames (rotating, so every seen frame and format meet several skills)."""
  out, rest = [], NUM_SEEN_FRAMES - BACKBONE_FRAMES
  for s, skill in enumerate(SKILLS):
    for f, fmt in enumerate(FORMATS):
      if fmt == unseen_format(skill):
        continue
      frames = list(range(BACKBONE_FRAMES)) + [BACKBONE_FRAMES + (s + f + k) % rest for k in range(extra_frames)]
      out += [Template(skill, fmt, frame) for frame in frames]
  return out


def target_templates(template_frames: int = 2) -> list[tuple[str, Template]]:
  """(kind, template) of the held-out targets: per skill `template_frames` unseen frames in seen
  formats ("template"), and the skill's unseen format in a seen frame ("format")."""
  out = []
  for s, skill in enumerate(SKILLS):
    seen = [f for f in FORMATS if f != unseen_format(skill)]
    for k in range(template_frames):
      out.append(("template", Template(skill, seen[(s + k) % len(seen)],
                                       NUM_SEEN_FRAMES + (s + k) % (len(FRAMES) - NUM_SEEN_FRAMES))))
    out.append(("format", Template(skill, unseen_format(skill), s % NUM_SEEN_FRAMES)))
  return out


def make_target(template: Template, num_examples: int, seed: int) -> evaluate.Target:
  rng = np.random.default_rng([seed, 7, *template.name.encode()])
  rows = [render(template, rng) for _ in range(num_examples)]
  return evaluate.Target(name=template.name, dataset=template.skill, template=f"{template.format}.f{template.frame}",
                         inputs=tuple(r[0] for r in rows), choices=tuple(r[1] for r in rows),
                         is_correct=tuple(tuple(c == r[2] for c in range(len(r[1]))) for r in rows))


# ------------------------------------------------------------------------------------------------
# Statistics.

def cell(accuracy: float, n: int) -> str:
  low, high = wilson(accuracy * n, n)
  return f"{100 * accuracy:.1f} [{100 * low:.0f}, {100 * high:.0f}]"


# ------------------------------------------------------------------------------------------------
# The run.

@dataclasses.dataclass(frozen=True)
class Settings:
  extra_frames: int = 2            # source templates per (skill, seen format) beyond the backbone's
  template_frames: int = 2         # "template" targets per skill
  train_per_source: int = 200      # training examples per source template (backbone and prompts)
  eval_examples: int = 100         # examples per target
  input_length: int = 48
  target_length: int = 4
  batch_size: int = 32
  backbone_steps: int = 300
  backbone_learning_rate: float = 3e-3
  prompt_length: int = 8
  prompt_steps: int = 1200
  library_n: int = 32
  selection: SelectionConfig = SelectionConfig(num_queries=16, num_neighbors=8, num_prompts=3, top_k=5)
  seed: int = 0


QUICK = Settings(train_per_source=96, eval_examples=40, backbone_steps=250, prompt_steps=120,
                 library_n=16, template_frames=1)


def run(out: str, settings: Settings = Settings()) -> dict:
  """Runs the whole benchmark into `out`; returns the JSON report (also written there)."""
  timings: dict[str, float] = {}
  clock = time.perf_counter()

  def lap(step: str) -> None:
    nonlocal clock
    now = time.perf_counter()
    timings[step] = round(now - clock, 1)
    clock = now
    logging.info("method bench: %s done in %.0f s", step, timings[step])

  for sub in ("backbone", "prompts", "library", "selections"):
    if os.path.exists(os.path.join(out, sub)):
      shutil.rmtree(os.path.join(out, sub))  # every artifact here is derived: a rerun starts over
  os.makedirs(out, exist_ok=True)
  vocab_path = vocabulary.offline_vocabulary_path()
  tokenizer = Tokenizer(vocab_path)
  sources = source_templates(settings.extra_frames)
  rng = np.random.default_rng(settings.seed)
  texts = {t.name: [] for t in sources}
  examples = []
  for s, template in enumerate(sources):
    for _ in range(settings.train_per_source):
      text, choices, label = render(template, rng)
      texts[template.name].append(text)
      examples.append(input_pipeline.Example(s, tokenizer.encode_input(text),
                                             tokenizer.encode_target(choices[label])))
  data = input_pipeline.SourceExamples([t.name for t in sources], examples)
  seen = input_pipeline.SourceExamples(  # the backbone's share: the templates of its frames
      data.names, [ex for ex in examples if sources[ex.source_id].frame < BACKBONE_FRAMES])
  targets = [(kind, template, make_target(template, settings.eval_examples, settings.seed))
             for kind, template in target_templates(settings.template_frames)]

  backbone_dir = os.path.join(out, "backbone")
  losses = demo.train_stand_in_backbone(backbone_dir, seen, vocab_path, steps=settings.backbone_steps,
                                        learning_rate=settings.backbone_learning_rate,
                                        batch_size=settings.batch_size, input_length=settings.input_length,
                                        target_length=settings.target_length, seed=settings.seed)
  lap("train backbone")

  frozen = load_backbone(backbone_dir, dtype="float32")
  result = trainer.train(model_dir=os.path.join(out, "prompts"), examples=data, backbone=frozen,
                         num_steps=settings.prompt_steps, prompt_length=settings.prompt_length,
                         batch_size=settings.batch_size, input_length=settings.input_length,
                         target_length=settings.target_length, dropout_rate=0.0, remat_policy="none",
                         seed=settings.seed, checkpoint_every=settings.prompt_steps,
                         log_every=100, summaries=False)
  prompt_table = np.asarray(result.state.prompts, np.float32)  # [S, P, H]
  lap("train soft prompts")

  embedder = embed.Embedder(frozen.config, frozen.params, max_length=settings.input_length)
  library, _ = library_build.build_library(
      os.path.join(out, "library"), [sources_lib.SourceTexts(t.name, texts[t.name]) for t in sources],
      prompt_table, embedder, tokenizer.encode_input, n=settings.library_n, seed=settings.seed,
      index="exact", overwrite=True, prompts_backbone=frozen.fingerprint)
  lap("build library")

  evaluator = evaluate.Evaluator(params=frozen.params, config=frozen.config, tokenizer=tokenizer,
                                 library=library, embedder=embedder, selection=settings.selection,
                                 batch_size=64, seed=settings.seed, max_input_length=128)
  records, selections = evaluator.evaluate([t for _, _, t in targets], METHODS,
                                           selections_dir=os.path.join(out, "selections"))
  lap("evaluate")
  report = summarize(records, selections, targets, sources, library.source_names)
  report.update(settings=dataclasses.asdict(settings), timings_s=timings,
                backbone_final_loss=float(np.mean(losses[-50:])), num_sources=len(sources),
                device=f"{jax.devices()[0].platform} ({os.cpu_count()} cores), jax {jax.__version__}")
  text = markdown_report(report)
  with open(os.path.join(out, "method.json"), "w") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(out, "method.md"), "w") as f:
    f.write(text + "\n")
  report["markdown"] = text
  return report


def _parse(name: str) -> Template:
  skill, fmt, frame = name.split(".")
  return Template(skill, fmt, int(frame[1:]))


def summarize(records, selections, targets, sources, source_names) -> dict:
  """Per-target and pooled accuracies, retrieval quality and the factor analysis."""
  acc = {(r["target"], r["method"]): r["accuracy"] for r in records}
  n = {r["target"]: r["examples"] for r in records}
  rows, pooled = [], {}
  for kind, template, target in targets:
    row = {"target": target.name, "kind": kind, "examples": n[target.name],
           "accuracy": {m: acc[target.name, m] for m in METHODS}}
    chosen = selections[target.name]
    rospr = _parse(chosen["RoSPr"]["names"][0])
    row["rospr_source"] = rospr.name
    row["rospr_same_skill"] = rospr.skill == template.skill
    row["rospr_same_format"] = rospr.format == template.format
    names, freqs = chosen["RoSPr"]["names"], chosen["RoSPr"]["freqs"]
    total = sum(freqs)
    row["neighbours_same_skill"] = sum(f for nm, f in zip(names, freqs) if _parse(nm).skill == template.skill) / total
    row["neighbours_same_format"] = sum(f for nm, f in zip(names, freqs) if _parse(nm).format == template.format) / total
    row["oracle_source"] = chosen[ORACLE]["names"][chosen[ORACLE]["chosen"][0]]
    row["random_source"] = chosen[RANDOM]["names"][0]
    groups: dict[str, list[float]] = {}
    for name, a in zip(chosen[ORACLE]["names"], chosen[ORACLE]["accuracies"]):
      source = _parse(name)
      key = (f"{'same' if source.skill == template.skill else 'other'} skill, "
             f"{'same' if source.format == template.format else 'other'} format")
      groups.setdefault(key, []).append(a)
    row["prompt_accuracy_by_relation"] = {k: float(np.mean(v)) for k, v in sorted(groups.items())}
    row["mean_prompt_accuracy"] = float(np.mean(chosen[ORACLE]["accuracies"]))  # Random's expectation
    rows.append(row)
  for kind in ("template", "format", "all"):
    members = [r for r in rows if kind in ("all", r["kind"])]
    total = sum(r["examples"] for r in members)
    entry = {"targets": len(members), "examples": total, "accuracy": {}, "interval": {}}
    for m in METHODS:
      correct = sum(r["accuracy"][m] * r["examples"] for r in members)
      entry["accuracy"][m] = correct / total
      entry["interval"][m] = wilson(correct, total)
    for key in ("rospr_same_skill", "rospr_same_format"):
      entry[key] = float(np.mean([r[key] for r in members]))
    for key in ("neighbours_same_skill", "neighbours_same_format"):
      entry[key] = float(np.mean([r[key] for r in members]))
    relation: dict[str, list[float]] = {}
    for r in members:
      for k, v in r["prompt_accuracy_by_relation"].items():
        relation.setdefault(k, []).append(v)
    entry["prompt_accuracy_by_relation"] = {k: float(np.mean(v)) for k, v in sorted(relation.items())}
    pooled[kind] = entry
  # Chance that a uniformly drawn source shares the skill / the format of a target, for reference.
  base = {"same_skill": float(np.mean([[_parse(s).skill == t.skill for s in source_names]
                                        for _, t, _ in targets])),
          "same_format": float(np.mean([[_parse(s).format == t.format for s in source_names]
                                         for _, t, _ in targets]))}
  t, o = pooled["template"], pooled["all"]
  checks = {
      "rospr_minus_t0_templates": t["accuracy"]["RoSPr"] - t["accuracy"]["T0"],
      "rospr_above_t0_interval_templates": t["accuracy"]["RoSPr"] > t["interval"]["T0"][1],
      "rospr_below_oracle_all": o["accuracy"]["RoSPr"] <= o["accuracy"][ORACLE],
      "random_below_rospr_all": o["accuracy"][RANDOM] < o["accuracy"]["RoSPr"],
  }
  return {"per_target": rows, "pooled": pooled, "uniform_source_shares": base, "checks": checks}


def markdown_report(report: dict) -> str:
  rows = report["per_target"]
  per_target = markdown_table(
      ["target", "kind", "n", *METHODS],
      [[r["target"], r["kind"], r["examples"], *(cell(r["accuracy"][m], r["examples"]) for m in METHODS)]
       for r in rows])
  pooled = report["pooled"]
  labels = {"template": "held-out templates", "format": "held-out formats", "all": "all targets"}
  average = markdown_table(
      ["targets", "n", *METHODS],
      [[f"{labels[k]} ({e['targets']})", e["examples"], *(cell(e["accuracy"][m], e["examples"]) for m in METHODS)]
       for k, e in pooled.items()])
  base = report["uniform_source_shares"]
  quality = markdown_table(
      ["targets", "RoSPr source: same skill", "same format", "neighbours: same skill", "same format"],
      [[labels[k], f"{100 * e['rospr_same_skill']:.0f}%", f"{100 * e['rospr_same_format']:.0f}%",
        f"{100 * e['neighbours_same_skill']:.0f}%", f"{100 * e['neighbours_same_format']:.0f}%"]
       for k, e in pooled.items()]
      + [["a uniformly drawn source", f"{100 * base['same_skill']:.0f}%", f"{100 * base['same_format']:.0f}%",
          "", ""]])
  keys = sorted({k for e in pooled.values() for k in e["prompt_accuracy_by_relation"]})
  factors = markdown_table(
      ["targets", *keys],
      [[labels[k], *(f"{100 * e['prompt_accuracy_by_relation'][g]:.1f}" if g in e["prompt_accuracy_by_relation"]
                     else "-" for g in keys)] for k, e in pooled.items()])
  o = pooled["all"]["prompt_accuracy_by_relation"]
  skill_only, format_only = o.get("same skill, other format"), o.get("other skill, same format")
  if skill_only is not None and format_only is not None:
    verdict = (f"A prompt of the same answer format (other skill) scored {100 * format_only:.1f}% on average, "
               f"one of the same skill (other format) {100 * skill_only:.1f}%: here the "
               f"{'answer format' if format_only > skill_only else 'skill'} matters more.")
  else:
    verdict = "Not every relation group has members."
  checks = report["checks"]
  return "\n\n".join([
      f"Accuracy (%) with Wilson 95% intervals, {report['num_sources']} source prompts; "
      f"'{ORACLE}' picks with the target's labels (an upper bound, not zero-shot).",
      per_target, "Pooled over targets:", average,
      "Retrieval quality (share of targets whose RoSPr source, and share of the queries' neighbours, "
      "that share the target's skill / answer format):", quality,
      "Factor analysis: mean accuracy (%) of the library prompts grouped by their relation to the "
      "target (from the oracle's per-prompt scores):", factors, verdict,
      f"Checks: RoSPr - T0 on held-out templates {100 * checks['rospr_minus_t0_templates']:+.1f} points "
      f"(above T0's interval: {checks['rospr_above_t0_interval_templates']}); RoSPr <= oracle: "
      f"{checks['rospr_below_oracle_all']}; Random < RoSPr: {checks['random_below_rospr_all']}. "
      f"Seconds: {report['timings_s']}."])


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/bench_method", help="folder for the artifacts and the report")
  parser.add_argument("--quick", action="store_true", help="a shrunk run (about a minute)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="also write the JSON report here")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  settings = dataclasses.replace(QUICK if args.quick else Settings(), seed=args.seed)
  report = run(args.out, settings)
  text = report.pop("markdown")
  print(text)
  print(json.dumps({"pooled": report["pooled"], "checks": report["checks"],
                    "timings_s": report["timings_s"]}, indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

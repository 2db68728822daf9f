"""What the demo's numbers say about the method: pooled accuracies with Wilson intervals, retrieval
quality and the paper's factor analysis in miniature, on the generated family (`data/generated.py`).

Input: the evaluator's records (one per target and method: accuracy, examples) and selections (per
target and method: the retrieved source names and their frequencies; the oracle's per-prompt accuracies).
Output: a JSON-able dict and its markdown; every sentence is written from the numbers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from rospr_jax.data.generated import Template
from rospr_jax.eval.metrics import wilson
from rospr_jax.pipeline import methods as methods_lib

KIND_LABELS = {"format": "new formats", "cross": "new formats, other skills' sources only",
               "template": "known formats, new wording", "all": "all targets"}


def cell(accuracy: float, n: int) -> str:
  """"80.1 [77, 83]": the accuracy in % and its Wilson 95% interval over `n` examples."""
  low, high = wilson(accuracy * n, n)
  return f"{100 * accuracy:.1f} [{100 * low:.0f}, {100 * high:.0f}]"


def _shares(template: Template, names: Sequence[str], freqs: Sequence[float]) -> tuple[float, float]:
  """Shares of the retrieved frequency whose source has the target's skill, and its format."""
  total = float(sum(freqs)) or 1.0
  sources = [Template.from_name(n) for n in names]
  return (sum(f for s, f in zip(sources, freqs) if s.skill == template.skill) / total,
          sum(f for s, f in zip(sources, freqs) if s.format == template.format) / total)


def per_target(records: Sequence[Mapping[str, Any]], selections: Mapping[str, Mapping[str, Any]],
               targets: Sequence[tuple[str, Template]], methods: Sequence[str],
               oracle: str = methods_lib.ORACLE.name, retrieved: str = methods_lib.ROSPR.name) -> list[dict]:
  """One row per target: accuracies, the source `retrieved` (RoSPr) chose and its relation, and the
  accuracy of every prompt by relation (from `oracle`'s per-prompt scores)."""
  accuracy = {(r["target"], r["method"]): r["accuracy"] for r in records}
  examples = {r["target"]: r["examples"] for r in records}
  rows = []
  for kind, template in targets:
    name, chosen = template.name, selections.get(template.name, {})
    row = {"target": name, "kind": kind, "examples": examples[name],
           "accuracy": {m: accuracy[name, m] for m in methods if (name, m) in accuracy}}
    if retrieved in chosen:
      source = Template.from_name(chosen[retrieved]["names"][0])
      row.update(rospr_source=source.name, rospr_same_skill=source.skill == template.skill,
                 rospr_same_format=source.format == template.format)
      row["neighbours_same_skill"], row["neighbours_same_format"] = _shares(
          template, chosen[retrieved]["names"], chosen[retrieved]["freqs"])
    if oracle in chosen:
      groups: dict[str, list[float]] = {}
      for source_name, a in zip(chosen[oracle]["names"], chosen[oracle]["accuracies"]):
        source = Template.from_name(source_name)
        key = (f"{'same' if source.skill == template.skill else 'other'} skill, "
               f"{'same' if source.format == template.format else 'other'} format")
        groups.setdefault(key, []).append(a)
      row["prompt_accuracy_by_relation"] = {k: float(np.mean(v)) for k, v in sorted(groups.items())}
    rows.append(row)
  return rows


def pooled(rows: Sequence[dict], methods: Sequence[str]) -> dict[str, dict]:
  """Per kind ("format", "cross", "template", "all"): accuracy pooled over the targets' examples, its Wilson
  interval, and the mean retrieval-quality shares and prompt accuracies by relation."""
  out = {}
  for kind in KIND_LABELS:
    members = [r for r in rows if kind in ("all", r["kind"])]
    if not members:
      continue
    total = sum(r["examples"] for r in members)
    entry: dict[str, Any] = {"targets": len(members), "examples": total, "accuracy": {}, "interval": {}}
    for m in methods:
      if all(m in r["accuracy"] for r in members):
        correct = sum(r["accuracy"][m] * r["examples"] for r in members)
        entry["accuracy"][m], entry["interval"][m] = correct / total, wilson(correct, total)
    for key in ("rospr_same_skill", "rospr_same_format", "neighbours_same_skill", "neighbours_same_format"):
      values = [float(r[key]) for r in members if key in r]
      if values:
        entry[key] = float(np.mean(values))
    relation: dict[str, list[float]] = {}
    for r in members:
      for k, v in r.get("prompt_accuracy_by_relation", {}).items():
        relation.setdefault(k, []).append(v)
    entry["prompt_accuracy_by_relation"] = {k: float(np.mean(v)) for k, v in sorted(relation.items())}
    out[kind] = entry
  return out


def verdict(pooled_rows: Mapping[str, dict], reference: str = methods_lib.HARD_PROMPT.name,
            method: str = methods_lib.ROSPR.name) -> str:
  """Whether `method`'s pooled accuracy lies above, inside or below `reference`'s 95% interval."""
  entry = pooled_rows["all"]
  if method not in entry["accuracy"] or reference not in entry["accuracy"]:
    return f"{method} or {reference} was not evaluated."
  a, (low, high) = entry["accuracy"][method], entry["interval"][reference]
  where = "above" if a > high else "below" if a < low else "inside"
  return (f"Pooled over the {entry['targets']} held-out targets ({entry['examples']} examples), {method} scored "
          f"{100 * a:.1f}% against {100 * entry['accuracy'][reference]:.1f}% for {reference} (the hard prompt "
          f"alone), {where} {reference}'s 95% interval [{100 * low:.1f}, {100 * high:.1f}].")


def baselines_sentence(pooled_rows: Mapping[str, dict], method: str = methods_lib.ROSPR.name) -> str:
  """Where `method` (RoSPr) stands, pooled, against each baseline evaluated: the multitask prompt shared
  by every target and the prompts fine-tuned on labelled examples (above, inside or below its 95%
  interval), whatever the intervals show."""
  entry = pooled_rows["all"]
  evaluated = [methods_lib.get(name) for name in entry["accuracy"]]
  baselines = [m.name for m in evaluated if m.needs_multitask_prompt or m.fine_tune]
  if method not in entry["accuracy"] or not baselines:
    return "No baseline (a shared multitask prompt, label fine-tuning) was evaluated beside it."
  a = entry["accuracy"][method]
  parts = []
  for name in baselines:
    low, high = entry["interval"][name]
    where = "above" if a > high else "below" if a < low else "inside"
    parts.append(f"{where} {name}'s interval ({100 * entry['accuracy'][name]:.1f}% [{100 * low:.1f}, "
                 f"{100 * high:.1f}])")
  return (f"Against the baselines, {method}'s pooled {100 * a:.1f}% lies " + "; ".join(parts) + ". A shared "
          "prompt uses every source's labels, the fine-tuned prompts the target's own; "
          f"{method} uses neither.")


def factor_sentence(pooled_rows: Mapping[str, dict]) -> str:
  relation = pooled_rows["all"]["prompt_accuracy_by_relation"]
  skill_only, format_only = relation.get("same skill, other format"), relation.get("other skill, same format")
  if skill_only is None or format_only is None:
    return "Not every relation group has members."
  return (f"A library prompt of the target's answer format (other skill) scored {100 * format_only:.1f}% on "
          f"average, one of its skill (other format) {100 * skill_only:.1f}%: here the "
          f"{'answer format' if format_only > skill_only else 'skill'} matters more.")


def markdown(rows: Sequence[dict], pooled_rows: Mapping[str, dict], methods: Sequence[str]) -> str:
  """The per-target table, the pooled table, retrieval quality and the factor analysis."""
  def table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in body])

  shown = [m for m in methods if any(m in r["accuracy"] for r in rows)]
  per = table(["target", "kind", "n", *shown],
              [[r["target"], r["kind"], r["examples"],
                *(cell(r["accuracy"][m], r["examples"]) if m in r["accuracy"] else "-" for m in shown)]
               for r in rows])
  pool = table(["targets", "n", *shown],
               [[f"{KIND_LABELS[k]} ({e['targets']})", e["examples"],
                 *(cell(e["accuracy"][m], e["examples"]) if m in e["accuracy"] else "-" for m in shown)]
                for k, e in pooled_rows.items()])
  pct = lambda e, k: f"{100 * e[k]:.0f}%" if k in e else "-"
  quality = table(["targets", "RoSPr source: same skill", "same format", "neighbours: same skill", "same format"],
                  [[KIND_LABELS[k], pct(e, "rospr_same_skill"), pct(e, "rospr_same_format"),
                    pct(e, "neighbours_same_skill"), pct(e, "neighbours_same_format")]
                   for k, e in pooled_rows.items()])
  keys = sorted({k for e in pooled_rows.values() for k in e["prompt_accuracy_by_relation"]})
  factors = table(["targets", *keys],
                  [[KIND_LABELS[k], *(f"{100 * e['prompt_accuracy_by_relation'][g]:.1f}"
                                      if g in e["prompt_accuracy_by_relation"] else "-" for g in keys)]
                   for k, e in pooled_rows.items()])
  return "\n\n".join([
      "Accuracy (%) with Wilson 95% intervals per target:", per,
      "Pooled over targets:", pool, verdict(pooled_rows), baselines_sentence(pooled_rows),
      "Retrieval quality (share of targets whose RoSPr source, and share of the queries' neighbours, "
      "that have the target's skill / answer format):", quality,
      "Factor analysis: mean accuracy (%) of the library prompts grouped by their relation to the target "
      "(from the oracle's per-prompt scores):", factors, factor_sentence(pooled_rows)])

"""Results a person can read: `results.json`, a `results.md` table laid out like the paper's (datasets as
columns, methods as rows, the average last), and plots (accuracy per dataset and method; which sources
each target retrieved).

Input: per-template accuracies, one record per (method, dataset, template):
    {"method": str, "dataset": str, "template": str, "accuracy": float, "examples": int,
     "skipped": int (optional: examples the template skips by design, not among `examples`),
     "truncated_inputs": int (optional: examples whose input was cut to the model's input length)}
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping, Sequence

from rospr_jax import storage
from rospr_jax.eval import metrics

def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """T0's summary per method: mean and median over templates per dataset, averaged over datasets.

  Returns:
    {"methods": [...], "datasets": [...], "mean": {method: {dataset: acc}}, "median": {...},
     "average_mean": {method: acc}, "average_median": {method: acc},
     "examples": {dataset: examples summed over its templates},
     "skipped": {dataset: examples its templates skip by design (no target), summed likewise},
     "truncated_inputs": {dataset: examples whose input was cut to the model's input length, likewise}}.
  """
  methods = list(dict.fromkeys(r["method"] for r in records))
  datasets = list(dict.fromkeys(r["dataset"] for r in records))
  by_method: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
  for r in records:
    by_method[r["method"]].setdefault(r["dataset"], {})[r["template"]] = float(r["accuracy"])
  summary: dict[str, Any] = {"methods": methods, "datasets": datasets, "mean": {}, "median": {},
                             "average_mean": {}, "average_median": {}, "examples": {}, "skipped": {},
                             "truncated_inputs": {}}
  for key in ("examples", "skipped", "truncated_inputs"):  # every method scores the same examples of a template: once each
    for r in records:
      if r.get(key) is not None:
        counts = summary[key].setdefault(r["dataset"], {})
        counts[r["template"]] = max(counts.get(r["template"], 0), int(r[key]))
    summary[key] = {d: sum(t.values()) for d, t in summary[key].items()}
  for method in methods:
    aggregated = metrics.aggregate(by_method[method])
    for statistic in ("mean", "median"):
      summary[statistic][method] = {d: v[statistic] for d, v in aggregated["datasets"].items()}
      summary[f"average_{statistic}"][method] = aggregated[f"average_{statistic}"]
  return summary


def short_names(datasets: Sequence[str]) -> list[str]:
  """Column names without a group prefix ("bigbench/winowhy" -> "winowhy") where that stays unique."""
  short = [d.rsplit("/", 1)[-1] for d in datasets]
  return short if len(set(short)) == len(short) else list(datasets)


def interval(accuracy: float, examples: int | None) -> tuple[float, float]:
  """The Wilson 95% interval of an accuracy measured on `examples` examples ((nan, nan) if unknown)."""
  return metrics.wilson(accuracy * examples, examples) if examples else (float("nan"), float("nan"))


def markdown_table(summary: Mapping[str, Any], statistic: str = "mean", intervals: bool = False) -> str:
  """Methods as rows, datasets as columns (accuracy in %), the average over datasets last, and a
  row `n` with each dataset's examples (summed over its templates), then, where a template skipped
  examples by design (T0's empty-output rule), a row `skipped` with those (not among n), and where
  inputs were longer than the model's input length (cut to their first tokens), a row `inputs
  truncated` with those (among n).

  With `intervals`, each cell also shows its Wilson 95% interval over those n examples ("32.6 [24,
  42]"): two methods whose intervals overlap widely differ within noise.
  """
  datasets, examples = summary["datasets"], summary.get("examples", {})
  lines = ["| method | " + " | ".join(short_names(datasets)) + " | average |",
           "|---" * (len(datasets) + 2) + "|"]
  total = sum(examples.get(d, 0) for d in datasets)
  for method in summary["methods"]:
    values = summary[statistic][method]
    if intervals:
      cells = [f"{100 * values[d]:.1f} [{100 * interval(values[d], examples.get(d))[0]:.0f}, "
               f"{100 * interval(values[d], examples.get(d))[1]:.0f}]" if d in values else "-" for d in datasets]
    else:
      cells = [f"{100 * values[d]:.2f}" if d in values else "-" for d in datasets]
    average = summary[f"average_{statistic}"][method]
    lines.append(f"| {method} | " + " | ".join(cells) + f" | {100 * average:.2f} |")
  if examples:
    lines.append("| n | " + " | ".join(str(examples.get(d, "-")) for d in datasets) + f" | {total} |")
  for key, label in (("skipped", "skipped"), ("truncated_inputs", "inputs truncated")):
    counts = summary.get(key, {})
    if any(counts.get(d) for d in datasets):
      lines.append(f"| {label} | " + " | ".join(str(counts.get(d, "-")) for d in datasets)
                   + f" | {sum(counts.get(d, 0) for d in datasets)} |")
  return "\n".join(lines)


def truncation_note(records: Sequence[Mapping[str, Any]]) -> str:
  """A line naming each target some of whose inputs were cut to the model's input length, with how many
  of its examples ("" when none was)."""
  cut = {r.get("target") or f"{r['dataset']} {r['template']}": (int(r["truncated_inputs"]), r.get("examples"))
         for r in records if r.get("truncated_inputs")}
  if not cut:
    return ""
  return ("Inputs longer than the model reads, cut to their first tokens, per target: "
          + ", ".join(f"{name} {n} of {examples}" for name, (n, examples) in cut.items()) + ".")


def plot_accuracy(summary: Mapping[str, Any], path: str, title: str = "Accuracy per dataset",
                  ticks: Sequence[str] = ()) -> None:
  """Grouped bars: accuracy (mean over templates) per dataset, one bar per method; the rows named in
  `ticks` (a reference of no model, such as chance: `pipeline.methods.reference_ticks()`) are drawn
  as a black tick over each group, not as a bar."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  datasets = summary["datasets"]
  methods = [m for m in summary["methods"] if m not in ticks]
  width = 0.8 / max(1, len(methods))
  positions = np.arange(len(datasets))
  fig, ax = plt.subplots(figsize=(max(7, 0.95 * len(datasets) + 3.5), 5))
  for i, method in enumerate(methods):
    values = [100 * summary["mean"][method].get(d, np.nan) for d in datasets]
    ax.bar(positions + (i - (len(methods) - 1) / 2) * width, values, width, label=method)
  for tick in (m for m in summary["methods"] if m in ticks):
    values = [100 * summary["mean"][tick].get(d, np.nan) for d in datasets]
    ax.hlines(values, positions - 0.45, positions + 0.45, colors="black", linewidths=2, label=tick)
  ax.set_xticks(positions)
  n = summary.get("examples", {})
  ax.set_xticklabels([f"{name}\n(n={n[d]})" if d in n else name
                      for name, d in zip(short_names(datasets), datasets)], rotation=45, ha="right", fontsize=9)
  ax.set_xlabel("dataset (n = examples over its templates)", fontsize=10)
  ax.set_ylabel("accuracy (%), mean over templates", fontsize=10)
  ax.set_title(title, fontsize=12)
  ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
  ax.grid(axis="y", alpha=0.3)
  _save_figure(fig, path)


def plot_retrieval_heatmap(frequencies: Mapping[str, Mapping[str, float]], path: str,
                           max_sources: int = 30, sources: Sequence[str] | None = None,
                           title: str = "Which sources each target retrieved") -> None:
  """Heatmap of targets (rows) by sources (columns): share of each target's retrieved neighbours.

  Args:
    frequencies: {target: {source: count}}.
    max_sources: at most this many columns: the sources named like a target first, in the targets'
      order (a target that is also a source then sits on the diagonal), then the most retrieved ones.
    sources: every source of the library, if known: the ones never retrieved are named under the plot.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  totals: dict[str, float] = {}
  for counts in frequencies.values():
    for source, count in counts.items():
      totals[source] = totals.get(source, 0.0) + count
  targets = list(frequencies)
  own = [t for t in targets if t in totals or (sources is not None and t in sources)]
  columns = (own + sorted((s for s in totals if s not in own), key=lambda s: -totals[s]))[:max_sources]
  grid = np.zeros((len(targets), len(columns)))
  for i, target in enumerate(targets):
    row_total = sum(frequencies[target].values()) or 1.0
    for j, source in enumerate(columns):
      grid[i, j] = frequencies[target].get(source, 0.0) / row_total
  fig, ax = plt.subplots(figsize=(max(7, 0.38 * len(columns) + 5), max(4, 0.32 * len(targets) + 3)))
  image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
  ax.set_xticks(range(len(columns)))
  ax.set_xticklabels(columns, rotation=90, fontsize=8)
  ax.set_yticks(range(len(targets)))
  ax.set_yticklabels(targets, fontsize=8)
  never = [s for s in (sources or ()) if s not in totals]
  hidden = len(totals) - len([c for c in columns if c in totals])
  notes = []
  if never:
    notes.append(f"never retrieved ({len(never)}): " + ", ".join(never[:8]) + (" ..." if len(never) > 8 else ""))
  if hidden > 0:
    notes.append(f"{hidden} less retrieved sources not shown")
  ax.set_xlabel("source (prompt)" + ("\n" + "; ".join(notes) if notes else ""), fontsize=10)
  ax.set_ylabel("target", fontsize=10)
  ax.set_title(title, fontsize=12)
  fig.colorbar(image, ax=ax, label="share of the target's retrieved neighbours", fraction=0.04, pad=0.02)
  _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
  import matplotlib.pyplot as plt
  with storage.atomic_file(path, "wb") as f:  # tight: no label or legend outside the axes is clipped
    fig.savefig(f, dpi=120, format=os.path.splitext(path)[1].lstrip(".") or "png", bbox_inches="tight")
  plt.close(fig)


REPORT_FILES = ("results.json", "results.md", "accuracy.png", "retrieval.png")


def write_report(out_dir: str, records: Sequence[Mapping[str, Any]], *,
                 retrieval: Mapping[str, Mapping[str, float]] | None = None,
                 extra: Mapping[str, Any] | None = None, preamble: str = "",
                 sources: Sequence[str] | None = None, title: str = "", ticks: Sequence[str] = ()
                 ) -> dict[str, Any]:
  """Writes accuracy.png, retrieval.png (with `retrieval`; an older one goes when there is none),
  results.md and, last, results.json to `out_dir` (local or a URL); `ticks`: the rows accuracy.png
  draws as ticks, not bars (`plot_accuracy`).

  Everything is rendered first, in a scratch folder: a failure there (a full disk) changes nothing
  in `out_dir`. Then the old results.json goes, the files are written whole, and the new results.json
  comes last, so a results.json is only ever beside the table and plots of its own report (one killed
  half-way is rebuilt from the records by the next run)."""
  summary = summarize(records)
  payload = {"summary": summary, "per_template": list(records), **(extra or {})}
  if retrieval is not None:
    payload["retrieval_frequencies"] = retrieval
  out = storage.as_path(out_dir, "OUTPUT_DIR", output=True)
  sections = [preamble.strip(), "## Accuracy (%), mean over templates", markdown_table(summary, "mean"),
              truncation_note(records),
              "## The same with Wilson 95% intervals over each dataset's n examples",
              markdown_table(summary, "mean", intervals=True),
              "## Accuracy (%), median over templates", markdown_table(summary, "median"),
              "![accuracy per dataset and method](accuracy.png)"]
  if retrieval:
    sections.append("## Which sources each target retrieved\n\n![retrieval heatmap](retrieval.png)")
  with tempfile.TemporaryDirectory(prefix=".rospr-report-") as scratch:
    name = "accuracy.png"
    try:
      plot_accuracy(summary, os.path.join(scratch, name),
                    title=f"{title + ': ' if title else ''}accuracy per dataset and method", ticks=ticks)
      if retrieval:
        name = "retrieval.png"
        plot_retrieval_heatmap(retrieval, os.path.join(scratch, name), sources=sources,
                               title=f"{title + ': ' if title else ''}which sources each target retrieved")
    except OSError as e:  # named as the file of OUTPUT_DIR it was for, not the scratch copy
      raise type(e)(e.errno, e.strerror, os.fspath(out / name)) from e
    rendered = {n: open(os.path.join(scratch, n), "rb").read() for n in sorted(os.listdir(scratch))}
  rendered["results.md"] = ("\n\n".join(s for s in sections if s) + "\n").encode("utf-8")
  (out / "results.json").unlink(missing_ok=True)
  if not retrieval:
    (out / "retrieval.png").unlink(missing_ok=True)
  for name, data in rendered.items():
    storage.write_bytes(out / name, data)
  storage.write_text(out / "results.json", json.dumps(payload, indent=1, sort_keys=False))
  return summary

"""Results a person can read: `results.json`, a `results.md` table laid out like the paper's (datasets as
columns, methods as rows, the average last), and plots (accuracy per dataset and method; which sources
each target retrieved).

Input: per-template accuracies, one record per (method, dataset, template):
    {"method": str, "dataset": str, "template": str, "accuracy": float, "examples": int}
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from rospr_jax import artifacts
from rospr_jax.eval import metrics


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """T0's summary per method: mean and median over templates per dataset, averaged over datasets.

  Returns:
    {"methods": [...], "datasets": [...], "mean": {method: {dataset: acc}}, "median": {...},
     "average_mean": {method: acc}, "average_median": {method: acc}}.
  """
  methods = list(dict.fromkeys(r["method"] for r in records))
  datasets = list(dict.fromkeys(r["dataset"] for r in records))
  by_method: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
  for r in records:
    by_method[r["method"]].setdefault(r["dataset"], {})[r["template"]] = float(r["accuracy"])
  summary: dict[str, Any] = {"methods": methods, "datasets": datasets, "mean": {}, "median": {},
                             "average_mean": {}, "average_median": {}}
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


def markdown_table(summary: Mapping[str, Any], statistic: str = "mean") -> str:
  """Methods as rows, datasets as columns (accuracy in %), the average over datasets last."""
  datasets = summary["datasets"]
  lines = ["| method | " + " | ".join(short_names(datasets)) + " | average |",
           "|---" * (len(datasets) + 2) + "|"]
  for method in summary["methods"]:
    cells = [f"{100 * summary[statistic][method][d]:.2f}" if d in summary[statistic][method] else "-"
             for d in datasets]
    average = summary[f"average_{statistic}"][method]
    lines.append(f"| {method} | " + " | ".join(cells) + f" | {100 * average:.2f} |")
  return "\n".join(lines)


def plot_accuracy(summary: Mapping[str, Any], path: str) -> None:
  """Grouped bars: accuracy (mean over templates) per dataset, one bar per method."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  datasets, methods = summary["datasets"], summary["methods"]
  width = 0.8 / max(1, len(methods))
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(datasets) + 2), 4.5))
  for i, method in enumerate(methods):
    values = [100 * summary["mean"][method].get(d, np.nan) for d in datasets]
    ax.bar(np.arange(len(datasets)) + i * width, values, width, label=method)
  ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2)
  ax.set_xticklabels(short_names(datasets), rotation=45, ha="right", fontsize=8)
  ax.set_ylabel("accuracy (%), mean over templates")
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  _save_figure(fig, path)


def plot_retrieval_heatmap(frequencies: Mapping[str, Mapping[str, float]], path: str,
                           max_sources: int = 30) -> None:
  """Heatmap of targets (rows) by sources (columns): share of each target's retrieved neighbours.

  Args:
    frequencies: {target: {source: count}}; the `max_sources` most retrieved sources are shown.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  totals: dict[str, float] = {}
  for counts in frequencies.values():
    for source, count in counts.items():
      totals[source] = totals.get(source, 0.0) + count
  sources = sorted(totals, key=lambda s: -totals[s])[:max_sources]
  targets = list(frequencies)
  grid = np.zeros((len(targets), len(sources)))
  for i, target in enumerate(targets):
    row_total = sum(frequencies[target].values()) or 1.0
    for j, source in enumerate(sources):
      grid[i, j] = frequencies[target].get(source, 0.0) / row_total
  fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(sources) + 3), max(3, 0.3 * len(targets) + 2)))
  image = ax.imshow(grid, aspect="auto", cmap="viridis")
  ax.set_xticks(range(len(sources)))
  ax.set_xticklabels(sources, rotation=90, fontsize=6)
  ax.set_yticks(range(len(targets)))
  ax.set_yticklabels(targets, fontsize=6)
  ax.set_xlabel("source (prompt)")
  ax.set_ylabel("target")
  fig.colorbar(image, ax=ax, label="share of retrieved neighbours")
  fig.tight_layout()
  _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
  import matplotlib.pyplot as plt
  with artifacts.atomic_file(path, "wb") as f:
    fig.savefig(f, dpi=120, format=os.path.splitext(path)[1].lstrip(".") or "png")
  plt.close(fig)


def write_report(out_dir: str, records: Sequence[Mapping[str, Any]], *,
                 retrieval: Mapping[str, Mapping[str, float]] | None = None,
                 extra: Mapping[str, Any] | None = None, preamble: str = "") -> dict[str, Any]:
  """Writes results.json, results.md, accuracy.png and (with `retrieval`) retrieval.png to `out_dir`."""
  summary = summarize(records)
  payload = {"summary": summary, "per_template": list(records), **(extra or {})}
  if retrieval is not None:
    payload["retrieval_frequencies"] = retrieval
  artifacts.write_text(os.path.join(out_dir, "results.json"), json.dumps(payload, indent=1, sort_keys=False))
  plot_accuracy(summary, os.path.join(out_dir, "accuracy.png"))
  sections = [preamble.strip(), "## Accuracy (%), mean over templates", markdown_table(summary, "mean"),
              "## Accuracy (%), median over templates", markdown_table(summary, "median"),
              "![accuracy per dataset and method](accuracy.png)"]
  if retrieval:
    plot_retrieval_heatmap(retrieval, os.path.join(out_dir, "retrieval.png"))
    sections.append("## Which sources each target retrieved\n\n![retrieval heatmap](retrieval.png)")
  artifacts.write_text(os.path.join(out_dir, "results.md"), "\n\n".join(s for s in sections if s) + "\n")
  return summary

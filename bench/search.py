"""ScaNN against exact search (blocked matrix products) on clustered unit vectors, on this CPU.

Usage: python bench/search.py [--sizes 100000 1000000] [--write bench/RESULTS.md] [--library DIR]

Data (the issue's recipe): 5,000 centres drawn from N(0, I_512), each vector a centre (chosen
uniformly) plus N(0, 0.3^2) noise per coordinate, then normalized; 1,000 queries drawn the same way.
The ScaNN index is built by the library's own code with its default configuration for the size
(`ScannConfig()`: brute force / AH + reorder / tree + AH + reorder), plus any --scann variants.
Search times are the best of --reps runs over all queries (batched, all cores); recall@10 is against
the exact search's top 10, by id and with ties (a returned row counts when its exact similarity
reaches the exact 10th: libraries hold duplicate texts). `--library DIR` adds rows for a built library's own vectors (queries: a
seeded sample of its rows); `--bigbench-library DIR` does so for a library of the BIG-bench source
tasks, built first if DIR is absent (see `build_bigbench_library`). Prints a markdown table and JSON;
--write replaces the "Search (CPU)" section of the results file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from common import markdown_table
from rospr_jax.library import search, store

SECTION = "Search (CPU)"


def clustered(n: int, dim: int, centres: np.ndarray, noise: float, rng,
              chunk: int = 100_000) -> np.ndarray:
  """[n, dim] float32 unit vectors around random rows of `centres`, built in chunks."""
  out = np.empty((n, dim), np.float32)
  for start in range(0, n, chunk):
    m = min(chunk, n - start)
    x = centres[rng.integers(0, len(centres), m)]
    x += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(noise)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out[start:start + m] = x
  return out


def best_time(fn, reps: int) -> tuple[float, object]:
  best, result = float("inf"), None
  for _ in range(reps):
    start = time.perf_counter()
    result = fn()
    best = min(best, time.perf_counter() - start)
  return best, result


def parse_variant(text: str) -> search.ScannConfig:
  """"num_leaves=2000,num_leaves_to_search=40,reorder=200" -> ScannConfig (ints unless known)."""
  defaults = search.ScannConfig()
  fields = {}
  for item in filter(None, text.split(",")):
    key, _, value = item.partition("=")
    default = getattr(defaults, key)
    if isinstance(default, bool):
      fields[key] = value == "true"
    elif isinstance(default, (str, float)):
      fields[key] = type(default)(value)
    else:
      fields[key] = int(value)
  return search.ScannConfig(**fields)


def bench_one(label: str, db: np.ndarray, queries: np.ndarray, k: int, reps: int,
              variants: list[str], sweep_leaves=(), sweep_reorder=()) -> list[dict]:
  rows = []
  exact = search.ExactSearcher(db, metric="cosine")
  exact_s, (exact_ids, exact_scores) = best_time(lambda: exact.search(queries, k), reps)
  exact_qps = len(queries) / exact_s
  rows.append({"library": label, "method": "exact (blocked matmul)", "settings": "-",
               "build_s": 0.0, "qps": exact_qps, "recall": 1.0, "recall_ties": 1.0,
               "speedup": 1.0})
  print(f"{label}: exact {exact_s:.2f} s for {len(queries)} queries ({exact_qps:.0f} QPS)",
        flush=True)
  for variant in ["", *variants]:
    config = parse_variant(variant)
    start = time.perf_counter()
    index = search.ScannSearcher.build(db, metric="cosine", k=k, config=config)
    build_s = time.perf_counter() - start
    seconds, (ids, _) = best_time(lambda: index.search(queries, k), reps)
    settings = {key: v for key, v in index.settings.items() if key != "num_neighbors"}
    row = {"library": label, "method": "ScaNN " + ("default" if not variant else "variant"),
           "settings": ", ".join(f"{key}={v}" for key, v in settings.items()),
           "build_s": build_s, "qps": len(queries) / seconds,
           "recall": search.recall_at_k(ids, exact_ids),
           "recall_ties": search.recall_with_ties(queries, db, ids, exact_scores),
           "speedup": exact_s / seconds}
    rows.append(row)
    print(json.dumps(row), flush=True)
    for leaves in sweep_leaves if index.settings["mode"] == "tree_ah" else []:
      for reorder in sweep_reorder or [index.settings["reorder"]]:
        seconds, (ids, _) = best_time(
            lambda: index.search(queries, k, leaves_to_search=leaves, reorder=reorder), reps)
        swept = dict(row, method="ScaNN, search-time override",
                     settings=f"same index, leaves_to_search={leaves}, reorder={reorder}",
                     build_s=0.0, qps=len(queries) / seconds,
                     recall=search.recall_at_k(ids, exact_ids),
                     recall_ties=search.recall_with_ties(queries, db, ids, exact_scores),
                     speedup=exact_s / seconds)
        rows.append(swept)
        print(json.dumps(swept), flush=True)
    del index
    gc.collect()
  return rows


def build_bigbench_library(directory: str, n: int, seed: int) -> None:
  """A real library: n instances of each BIG-bench source task (train split; every multiple-choice
  task except the 14 held-out targets), embedded by a tiny T5 encoder with random weights (no
  checkpoint ships offline) over the project's offline vocabulary. The prompt table is zeros [S, 1, H]:
  search does not read it."""
  from rospr_jax.data import bigbench, prompted, vocabulary  # pylint: disable=g-import-not-at-top
  from rospr_jax.library import build, embed, sources  # pylint: disable=g-import-not-at-top
  from rospr_jax.tokenization import Tokenizer  # pylint: disable=g-import-not-at-top
  tasks = prompted.bigbench_source_tasks(bigbench.BigBenchStore())
  srcs = []
  for task in tasks:
    try:
      texts = [ex.inputs for ex in task.examples("train")]
    except ValueError:  # too few examples for bbseqio's train / validation cut: take them all
      texts = [ex.inputs for ex in task.examples("all")]
    if any(t.strip() for t in texts):
      srcs.append(sources.SourceTexts(task.name, texts))
    else:
      print(f"BIG-bench {task.name}: no non-blank input (the content is in the choices); left out",
            flush=True)
  tokenizer = Tokenizer(vocabulary.offline_vocabulary_path())
  embedder = embed.load_embedder(random_size="tiny", seed=seed, max_length=512,
                                 min_vocab_size=tokenizer.vocab_size)
  _, report = build.build_library(
      directory, srcs, np.zeros((len(srcs), 1, embedder.dim), np.float32), embedder,
      tokenizer.encode_input, draw=build.DrawConfig(n, seed), extra={"built_by": "bench/search.py"})
  print(json.dumps(report), flush=True)


def write_section(path: str, text: str) -> None:
  """Replaces (or appends) the '## Search (CPU)' section of `path`, leaving the others alone."""
  old = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmark results\n"
  section = f"## {SECTION}\n\n{text.strip()}\n"
  pattern = re.compile(rf"^## {re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
  new = pattern.sub(lambda _: section + "\n", old) if pattern.search(old) else \
      old.rstrip("\n") + "\n\n" + section
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(new.rstrip("\n") + "\n")
  os.replace(tmp, path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--centres", type=int, default=5000)
  parser.add_argument("--noise", type=float, default=0.3)
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--scann", action="append", default=[],
                      help="A ScaNN variant to add, e.g. num_leaves=2000,num_leaves_to_search=40.")
  parser.add_argument("--sweep-leaves", type=int, nargs="*", default=[],
                      help="Also search each tree index with these leaves_to_search.")
  parser.add_argument("--sweep-reorder", type=int, nargs="*", default=[],
                      help="... and these reorder counts.")
  parser.add_argument("--library", help="Also bench a built library's vectors.")
  parser.add_argument("--bigbench-library", metavar="DIR",
                      help="Also bench a library of BIG-bench sources, built into DIR if absent.")
  parser.add_argument("--bigbench-n", type=int, default=100, help="Instances per BIG-bench source.")
  parser.add_argument("--library-scann", action="append", default=[],
                      help="ScaNN variants for the library rows only (same syntax as --scann).")
  parser.add_argument("--write", help="Results file whose 'Search (CPU)' section to replace.")
  args = parser.parse_args()

  rows = []
  for n in args.sizes:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
    db = clustered(n, args.dim, centres, args.noise, rng)
    queries = clustered(args.queries, args.dim, centres, args.noise, rng)
    rows += bench_one(f"clustered {n:,} x {args.dim}", db, queries, args.k, args.reps, args.scann,
                      args.sweep_leaves, args.sweep_reorder)
    del db
    gc.collect()
  if args.bigbench_library and not os.path.exists(args.bigbench_library):
    build_bigbench_library(args.bigbench_library, args.bigbench_n, args.seed)
  for directory in filter(None, [args.library, args.bigbench_library]):
    lib = store.Library.open(directory, verify=False)
    db = np.concatenate(lib.embedding_shards())
    picked = np.random.default_rng(args.seed).choice(len(db), min(args.queries, len(db)), False)
    label = (f"library {os.path.basename(os.path.normpath(directory))}: "
             f"{len(lib.source_names)} sources, {len(db):,} x {lib.dim}")
    rows += bench_one(label, db, db[picked], args.k, args.reps, args.scann + args.library_scann,
                      args.sweep_leaves, args.sweep_reorder)

  cpu = platform.processor() or platform.machine()
  header = (f"`python bench/search.py {' '.join(sys.argv[1:])}` on {os.cpu_count()} CPU cores "
            f"({cpu}), {time.strftime('%Y-%m-%d')}; queries {args.queries}, k = {args.k}, "
            f"best of {args.reps} runs; QPS = queries per second over the whole batch; speed-up = "
            "exact time / ScaNN time on the same data; recall with ties counts a returned row "
            "whose exact similarity reaches the exact 10th (minus 1e-5).")
  table = markdown_table(
      ["library", "method", "settings", "build s", "QPS", "recall@10", "recall@10 with ties",
       "speed-up vs exact"],
      [[r["library"], r["method"], r["settings"], round(r["build_s"], 1), round(r["qps"]),
        round(r["recall"], 4), round(r["recall_ties"], 4), f"{r['speedup']:.1f}x"] for r in rows])
  print(table)
  print(json.dumps(rows))
  if args.write:
    write_section(args.write, header + "\n\n" + table)


if __name__ == "__main__":
  main()

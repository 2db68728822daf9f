"""`rospr build-library`: draw n instances per source, embed them, store them with the index.

    rospr build-library --out LIB --prompts PROMPTS.npy --vocab spiece.model --retriever CKPT \
        --source "rte:GPT-3 style=rte_gpt3.jsonl" --source "copa:best_option=copa_best.jsonl" ...
    rospr build-library --out LIB --prompts EXPORT_DIR --instances all.jsonl --vocab ... --retriever ...
    rospr build-library --out LIB --prompts EXPORT_DIR --tasks rospr_t0_train --vocab ... --retriever ...

Texts are read to their first --max-length x 32 characters (a line to that many characters' bytes, the
rest skipped unread into memory), so memory follows --max-length whatever the input; the report counts
the texts cut so (`texts_cut_at_read`), and those cut to --max-length tokens (`truncated_inputs`).

Row s of the prompt table is the prompt of the s-th source: with a `.npy` table the sources are taken
in the order of the --source flags (or of --source-names); with a prompt export directory
(rospr_jax/prompt/export.py) in the export's order, matched by name.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from rospr_jax import multihost, storage
from rospr_jax.commands import common
from rospr_jax.library import search, sources as sources_lib, store  # no JAX: --help answers at once

PROG = "rospr build-library"


def _read_sources(args, bound: sources_lib.TextBound | None = None
                  ) -> tuple[list[sources_lib.SourceTexts], np.ndarray, str | None]:
  """Sources in prompt-row order, the prompt table [S, P, H], and the fingerprint of the backbone the
  prompts were trained on (a prompt export records it; a bare .npy table does not). Texts of files are
  read within `bound`, if given (memory then follows --max-length, not the longest line)."""
  if sum(map(bool, (args.source, args.instances, args.tasks))) != 1:
    raise ValueError("Give the instances as --source NAME=FILE flags, as one --instances file, or as "
                     "--tasks (prompted task or mixture names).")
  texts: dict[str, list[str]] = {}
  tasks = {}
  if args.source:
    for flag in args.source:
      name, path = common.split_named(flag)  # at the first "=": a path may hold one (dt=2024/)
      if not name:
        raise ValueError(f"--source {flag!r}: expected NAME=FILE.")
      if name in texts:
        raise ValueError(f"--source {name!r} is given twice.")
      texts[name] = sources_lib.read_source_file(path, name, bound)
  elif args.instances:
    texts = sources_lib.read_instances(args.instances, bound)
  else:
    from rospr_tasks import registry  # pylint: disable=g-import-not-at-top
    tasks = {task.name: task for task in registry.prompted_tasks(args.tasks)}

  available = list(texts or tasks)
  from rospr_jax.prompt import export  # pylint: disable=g-import-not-at-top
  loaded = export.load_prompt_table(args.prompts, "--prompts")
  names, table, trained_on, prompt_files = loaded.names, loaded.prompts, loaded.backbone_fingerprint, loaded.files
  if names is None:
    if args.source_names:
      names = [line.strip() for _, line in storage.text_lines(args.source_names) if line.strip()]
    elif not args.instances:
      names = available
    else:
      raise ValueError("With --instances and a .npy prompt table, --source-names must give the "
                       "sources in the order of the table's rows.")
    if table.ndim != 3 or table.shape[0] != len(names):
      raise ValueError(f"{args.prompts} has shape {list(table.shape)}; expected [S, P, H] with "
                       f"S = {len(names)} sources.")
  without_texts = [name for name in names if name not in available]
  without_prompt = [name for name in available if name not in names]
  if without_texts or without_prompt:
    raise ValueError(f"Sources and prompts differ: without instances {without_texts[:10]} "
                     f"({len(without_texts)}); without a prompt {without_prompt[:10]} "
                     f"({len(without_prompt)}).")
  for number, name in enumerate(names if tasks else [], start=1):
    texts[name] = sources_lib.draw_task_texts(tasks[name], args.split, args.n, args.seed)
    logging.info("Drew %d instances of %s (%s split), source %d of %d.", len(texts[name]), name,
                 args.split, number, len(names))
  given = (storage.absolute(args.prompts), None)  # a bare table's record: its URL, not its local copy
  sources = [sources_lib.SourceTexts(name, texts[name], *prompt_files.get(name, given)) for name in names]
  return sources, table, trained_on


def _local_prompts(path: str, flag: str) -> str:
  """--prompts made local: a prompt export's table folder at a URL with the export around it."""
  from rospr_jax.prompt import export  # pylint: disable=g-import-not-at-top
  return export.local_copy(path, flag)


# The path flags (each read through its local copy when at a URL).
OUTPUT = common.FolderCommand("out", store.KIND, "the library",
                              files=("source", "instances", "source_names", "vocab"), folders=("retriever",),
                              others=("prompts",), named=("source",), copiers={"prompts": _local_prompts})


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="The library directory to write.")
  parser.add_argument("--prompts", required=True,
                      help="[S, P, H] prompt table (.npy) or a prompt export directory.")
  parser.add_argument("--source", action="append", metavar="NAME=FILE",
                      help="A source and its JSONL instances; repeat (prompt rows in this order).")
  parser.add_argument("--instances", help="One JSONL of {\"source\", \"text\"} lines for all sources.")
  parser.add_argument("--tasks", nargs="+", metavar="NAME",
                      help="Prompted tasks or mixtures of rospr_tasks (e.g. rospr_t0_train): each "
                           "task is a source; its examples are read from $ROSPR_DATA_DIR.")
  parser.add_argument("--split", default="train", help="The split --tasks draw from.")
  parser.add_argument("--source-names", help="Source names in prompt-row order, one per line.")
  parser.add_argument("--n", type=common.positive_int, default=None,
                      help="Instances per source (default: 100, library.build.DEFAULT_N).")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the instance draw.")
  common.add_retriever_arguments(parser)
  parser.add_argument("--index", default="scann", choices=store.INDEX_KINDS,
                      help="scann: build a ScaNN index; exact: none (exact search).")
  parser.add_argument("--scann-mode", default="auto", choices=search.MODES)
  parser.add_argument("--num-leaves", type=int, help="ScaNN tree leaves (default ~sqrt(rows)).")
  parser.add_argument("--leaves-to-search", type=int, help="ScaNN leaves searched per query.")
  parser.add_argument("--reorder", type=int, help="ScaNN candidates rescored exactly.")
  parser.add_argument("--shard-rows", type=int, default=262_144, help="Rows per embeddings shard.")
  parser.add_argument("--overwrite", action="store_true", help="Replace an existing library.")
  args = parser.parse_args(argv)
  from rospr_jax.library import build  # pylint: disable=g-import-not-at-top  (loads JAX)
  args.n = build.DEFAULT_N if args.n is None else args.n
  return OUTPUT.run(PROG, args, lambda: _build(args, argv), overwrite=args.overwrite)


def _build(args: argparse.Namespace, argv: list[str]) -> str:
  """Every process embeds its share of each batch; process 0 writes the library. Returns the report."""
  from rospr_jax.library import build  # pylint: disable=g-import-not-at-top  (loads JAX)
  bound = sources_lib.TextBound.for_tokens(args.max_length)  # a text's characters past it are never held
  sources, prompts, trained_on = _read_sources(args, bound)
  embedder, tokenizer = common.embedder_from_args(args)
  config = search.ScannConfig(mode=args.scann_mode, num_leaves=args.num_leaves,
                              num_leaves_to_search=args.leaves_to_search, reorder=args.reorder)
  _, report = build.build_library(
      storage.absolute(args.out), sources, prompts, embedder, tokenizer.encode_input,
      draw=build.DrawConfig(args.n, args.seed), index=build.IndexConfig(args.index, config),
      output=build.OutputConfig(shard_rows=args.shard_rows, overwrite=args.overwrite,
                                write=multihost.is_writer()),
      extra={"argv": list(argv)}, prompts_backbone=trained_on)
  return json.dumps({**report, "texts_cut_at_read": bound.cut})


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""`rospr build-library`: draw n instances per source, embed them, store them with the index.

    rospr build-library --out LIB --prompts PROMPTS.npy --vocab spiece.model --retriever CKPT \
        --source "rte:GPT-3 style=rte_gpt3.jsonl" --source "copa:best_option=copa_best.jsonl" ...
    rospr build-library --out LIB --prompts EXPORT_DIR --instances all.jsonl --vocab ... --retriever ...
    rospr build-library --out LIB --prompts EXPORT_DIR --tasks rospr_t0_train --vocab ... --retriever ...

Sources are (name, texts, prompt row) triples. Row s of the prompt table is the prompt of the s-th
source: with a `.npy` table the sources are taken in the order of the --source flags (or of
--source-names); with a prompt export directory (rospr_jax/prompt/export.py) in the export's order,
matched by name. `build_library` is the same step for callers that already hold the texts (the SeqIO
task layer, the demo).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np

from rospr_jax import paths
from rospr_jax.library import embed as embed_lib
from rospr_jax.library import search, sources as sources_lib, store

DEFAULT_N = 100
DEFAULT_CHUNK_TEXTS = 16_384  # texts embedded per call: bounds memory whatever the library size


def build_library(directory: str, sources: Sequence[sources_lib.SourceTexts], prompts,
                  embedder: embed_lib.Embedder, tokenize: Callable[[str], Sequence[int]], *,
                  n: int = DEFAULT_N, seed: int = 0, index: str = "scann",
                  scann_config: search.ScannConfig = search.ScannConfig(), k: int = 10,
                  shard_rows: int = 262_144, chunk_texts: int = DEFAULT_CHUNK_TEXTS,
                  overwrite: bool = False, extra: dict | None = None
                  ) -> tuple[store.Library, dict]:
  """Builds a library directory.

  Args:
    directory: where the library goes (written atomically).
    sources: [S] sources; row s of `prompts` is the prompt of sources[s].
    prompts: [S, P, H] prompt table.
    embedder: the retriever.
    tokenize: text -> token ids without EOS.
    n: instances drawn per source (all of a source's texts when it has fewer); blank texts are
      left out of the draw and counted in the report.
    seed: the draw's seed (each source draws with `sources.source_seed(seed, name)`).
    index, scann_config, k: the search index (see `store.LibraryWriter.finish`).
    shard_rows: rows per embeddings shard.
    chunk_texts: texts embedded at a time (across sources, so small sources share batches).
    overwrite: replace an existing library.
    extra: more facts for the manifest.

  Returns:
    (the opened library, a report: rows, sources short of n, blank texts skipped, truncated
    inputs, the index and its recall on the library's own rows, seconds).
  """
  start = time.time()
  infos = [store.SourceInfo(s.name, n=n, seed=seed, prompt_file=s.prompt_file,
                            prompt_file_sha256=s.prompt_file_sha256) for s in sources]
  short, blank = {}, {}
  truncated_before = embedder.truncated
  with store.LibraryWriter(directory, sources=infos, prompts=prompts, dim=embedder.dim,
                           retriever=store.Retriever(embedder.fingerprint, embedder.description()),
                           shard_rows=shard_rows, overwrite=overwrite,
                           extra={"n": n, "seed": seed, **(extra or {})}) as writer:
    pending_texts: list[str] = []
    pending_ids: list[int] = []

    def flush():
      if pending_texts:
        writer.add(embedder.embed_texts(pending_texts, tokenize), np.asarray(pending_ids),
                   pending_texts)
        pending_texts.clear()
        pending_ids.clear()

    for s, source in enumerate(sources):
      non_blank = [t for t in source.texts if t.strip()]
      if len(non_blank) < len(source.texts):
        blank[source.name] = len(source.texts) - len(non_blank)
        if not non_blank:
          raise ValueError(f"Source {source.name!r} has no non-blank text.")
        source = dataclasses.replace(source, texts=non_blank)
      texts = sources_lib.sample_texts(source, n, seed)
      if len(texts) < n:
        short[source.name] = len(texts)
      for text in texts:
        pending_texts.append(text)
        pending_ids.append(s)
        if len(pending_texts) >= chunk_texts:
          flush()
    flush()
    library = writer.finish(index=index, scann_config=scann_config, k=k)
  report = {
      "library": library.directory,
      "rows": library.num_rows,
      "sources": len(sources),
      "sources_short_of_n": short,
      "blank_texts_skipped": blank,
      "truncated_inputs": embedder.truncated - truncated_before,
      "index": library.manifest["index"]["kind"],
      "index_settings": library.manifest["index"]["settings"],
      "index_recall": library.manifest["index"].get("recall"),
      "seconds": round(time.time() - start, 2),
  }
  if blank:
    logging.warning("Skipped blank texts (not drawn) in %d sources: %s", len(blank),
                    dict(list(blank.items())[:10]))
  if short:
    logging.warning("%d sources have fewer than n=%d instances (all were taken): %s", len(short), n,
                    dict(list(short.items())[:10]))
  return library, report


def add_retriever_arguments(parser: argparse.ArgumentParser) -> None:
  """The retriever and vocabulary flags shared by `build-library` and `retrieve`."""
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument("--retriever", help="Retriever checkpoint (Hugging Face or T5X directory).")
  group.add_argument("--random-retriever", metavar="SIZE",
                     help="A retriever with random weights of this size (tiny, small), with at "
                          "least as many embeddings as --vocab has pieces: demo, tests.")
  parser.add_argument("--retriever-seed", type=int, default=0, help="Seed of --random-retriever.")
  parser.add_argument("--vocab", required=True, help="SentencePiece model (pad 0, EOS 1, UNK 2).")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="Activation dtype of the retriever (and of the backbone for VAR).")
  parser.add_argument("--max-length", type=int, default=512, help="Input tokens kept per text.")
  parser.add_argument("--tokens-per-batch", type=int, default=65_536,
                      help="Padded tokens per embedding batch.")


def embedder_from_args(args) -> tuple[embed_lib.Embedder, Callable[[str], list[int]]]:
  """(embedder, tokenize) from the flags of `add_retriever_arguments`."""
  from rospr_jax import tokenization  # pylint: disable=g-import-not-at-top
  tokenizer = tokenization.Tokenizer(args.vocab)
  embedder = embed_lib.load_embedder(args.retriever, random_size=args.random_retriever,
                                     seed=args.retriever_seed,
                                     min_vocab_size=tokenizer.vocab_size, dtype=args.dtype,
                                     max_length=args.max_length,
                                     tokens_per_batch=args.tokens_per_batch,
                                     mesh=embed_lib.local_data_mesh())
  tokenizer.check_fits(embedder.config.vocab_size, "the retriever")
  return embedder, tokenizer.encode_input


def _read_sources(args) -> tuple[list[sources_lib.SourceTexts], np.ndarray]:
  """Sources in prompt-row order and the prompt table [S, P, H]."""
  if sum(map(bool, (args.source, args.instances, args.tasks))) != 1:
    raise ValueError("Give the instances as --source NAME=FILE flags, as one --instances file, or as "
                     "--tasks (prompted task or mixture names).")
  texts: dict[str, list[str]] = {}
  tasks = {}
  if args.source:
    for flag in args.source:
      name, sep, path = flag.rpartition("=")
      if not sep or not name:
        raise ValueError(f"--source {flag!r}: expected NAME=FILE.")
      if name in texts:
        raise ValueError(f"--source {name!r} is given twice.")
      texts[name] = sources_lib.read_source_file(path, name)
  elif args.instances:
    texts = sources_lib.read_instances(args.instances)
  else:
    from rospr_tasks import registry  # pylint: disable=g-import-not-at-top
    tasks = {task.name: task for task in registry.prompted_tasks(args.tasks)}

  available = list(texts or tasks)
  prompt_files: dict[str, tuple[str, str | None]] = {}
  if os.path.isdir(args.prompts):
    from rospr_jax.prompt import export  # pylint: disable=g-import-not-at-top
    exported = export.load_prompts(args.prompts)
    names, table = exported.names, exported.prompts
    root = os.path.dirname(exported.directory)  # files are relative to the export root
    prompt_files = {s["name"]: (os.path.join(root, s["file"]), s["sha256"])
                    for s in exported.manifest["sources"]}
  else:
    if not os.path.isfile(args.prompts):
      raise FileNotFoundError(f"Prompt table not found: {args.prompts}")
    table = np.load(args.prompts, allow_pickle=False)
    if args.source_names:
      with open(args.source_names, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
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
  sources = [sources_lib.SourceTexts(name, texts[name], *prompt_files.get(name, (args.prompts, None)))
             for name in names]
  return sources, table


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr build-library", description=__doc__.splitlines()[0])
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
  parser.add_argument("--n", type=int, default=DEFAULT_N, help="Instances per source.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the instance draw.")
  add_retriever_arguments(parser)
  parser.add_argument("--index", default="scann", choices=store.INDEX_KINDS,
                      help="scann: build a ScaNN index; exact: none (exact search).")
  parser.add_argument("--scann-mode", default="auto", choices=search.MODES)
  parser.add_argument("--num-leaves", type=int, help="ScaNN tree leaves (default ~sqrt(rows)).")
  parser.add_argument("--leaves-to-search", type=int, help="ScaNN leaves searched per query.")
  parser.add_argument("--reorder", type=int, help="ScaNN candidates rescored exactly.")
  parser.add_argument("--shard-rows", type=int, default=262_144, help="Rows per embeddings shard.")
  parser.add_argument("--overwrite", action="store_true", help="Replace an existing library.")
  args = parser.parse_args(argv)
  try:
    paths.require_local_args(args)
    if not paths.writes_outputs():  # each host embeds on its own devices: one host is enough
      print("rospr build-library: not process 0 of this multi-host run; process 0 builds the library.")
      return 0
    sources, prompts = _read_sources(args)
    embedder, tokenize = embedder_from_args(args)
    config = search.ScannConfig(mode=args.scann_mode, num_leaves=args.num_leaves,
                                num_leaves_to_search=args.leaves_to_search, reorder=args.reorder)
    _, report = build_library(args.out, sources, prompts, embedder, tokenize, n=args.n,
                              seed=args.seed, index=args.index, scann_config=config,
                              shard_rows=args.shard_rows, overwrite=args.overwrite,
                              extra={"argv": list(argv)})
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"rospr build-library: {e}", file=sys.stderr)
    return 2
  print(json.dumps(report))
  return 0

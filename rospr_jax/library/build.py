"""Building a library: draw n instances per source, embed them, store them with the index.

Sources are (name, texts, prompt row) triples: row s of the prompt table is the prompt of the s-th
source. `rospr build-library` (`rospr_jax/commands/build_library.py`) reads them from files, prompt
exports or prompted tasks; the demo passes them directly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from rospr_jax.library import embed as embed_lib
from rospr_jax.library import search, sources as sources_lib, store
from rospr_jax.library import writer as writer_lib

DEFAULT_N = 100
DEFAULT_CHUNK_TEXTS = 16_384  # texts embedded per call: bounds memory whatever the library size


class _EmbedOnly:
  """Stands in for the library writer on a process that embeds without writing (`write=False`)."""

  def __init__(self):
    self.num_rows = 0

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def add(self, embeddings, source_ids, texts):
    del embeddings, source_ids
    self.num_rows += len(texts)


def build_library(directory: str, sources: Sequence[sources_lib.SourceTexts], prompts,
                  embedder: embed_lib.Embedder, tokenize: Callable[[str], Sequence[int]], *,
                  n: int = DEFAULT_N, seed: int = 0, index: str = "scann",
                  scann_config: search.ScannConfig = search.ScannConfig(), k: int = 10,
                  shard_rows: int = 262_144, chunk_texts: int = DEFAULT_CHUNK_TEXTS,
                  overwrite: bool = False, extra: dict | None = None,
                  prompts_backbone: str | None = None, name: str | None = None,
                  write: bool = True) -> tuple[store.Library | None, dict]:
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
    index, scann_config, k: the search index (see `writer_lib.LibraryWriter.finish`).
    shard_rows: rows per embeddings shard.
    chunk_texts: texts embedded at a time (across sources, so small sources share batches).
    overwrite: replace an existing library.
    extra: more facts for the manifest.
    prompts_backbone: fingerprint of the backbone the prompts were trained on (recorded; an
      evaluation with another backbone is refused).
    name: what records and the report call the library (default: `directory`): the path it will
      have when `directory` is inside a folder artifact still being written.
    write: False on the processes of a multi-process run that only embed their share of each batch
      (the embedder's mesh spans them all) while process 0 writes: nothing is written, and the
      library returned is None.

  Returns:
    (the opened library, a report: rows, sources short of n, blank texts skipped, truncated
    inputs, the index and its recall on the library's own rows, seconds).
  """
  start = time.time()
  short, blank = {}, {}
  truncated_before = embedder.truncated
  writer = _EmbedOnly() if not write else _library_writer(
      directory, sources, prompts, embedder, n=n, seed=seed, shard_rows=shard_rows, overwrite=overwrite,
      extra=extra, prompts_backbone=prompts_backbone)
  with writer:
    _embed_in_chunks(writer, embedder, tokenize, _drawn_texts(sources, n, seed, short, blank), chunk_texts)
    if not write:
      return None, {"rows": writer.num_rows, "truncated_inputs": embedder.truncated - truncated_before,
                    "seconds": round(time.time() - start, 2)}
    library = writer.finish(index=index, scann_config=scann_config, k=k)
  library.name = name or library.name
  truncated = embedder.truncated - truncated_before
  return library, _report(library, len(sources), n, short, blank, truncated, start)


def _library_writer(directory: str, sources: Sequence[sources_lib.SourceTexts], prompts,
                    embedder: embed_lib.Embedder, *, n: int, seed: int, shard_rows: int, overwrite: bool,
                    extra: dict | None, prompts_backbone: str | None) -> writer_lib.LibraryWriter:
  """The writer of the library directory: the sources' facts, the [S, P, H] prompts, the retriever."""
  infos = [store.SourceInfo(s.name, n=n, seed=seed, prompt_file=s.prompt_file,
                            prompt_file_sha256=s.prompt_file_sha256) for s in sources]
  return writer_lib.LibraryWriter(
      directory, sources=infos, prompts=prompts, dim=embedder.dim,
      retriever=store.Retriever(embedder.fingerprint, embedder.description()),
      shard_rows=shard_rows, overwrite=overwrite, prompts_backbone=prompts_backbone,
      extra={"n": n, "seed": seed, **(extra or {})})


def _drawn_texts(sources: Sequence[sources_lib.SourceTexts], n: int, seed: int, short: dict[str, int],
                 blank: dict[str, int]) -> Iterator[tuple[int, str]]:
  """(source index, text) of every instance drawn, source by source, as they are drawn.

  Blank texts are left out of a source's draw and counted in `blank`; a source with fewer than n
  texts gives them all, its count recorded in `short`. A source with no non-blank text is refused.
  """
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
      yield s, text


def _embed_in_chunks(writer, embedder: embed_lib.Embedder, tokenize: Callable[[str], Sequence[int]],
                     drawn: Iterable[tuple[int, str]], chunk_texts: int) -> None:
  """Embeds the (source index, text) pairs of `drawn` `chunk_texts` at a time (across sources, so small
  sources share batches) and adds each chunk's [chunk, H] embeddings to `writer`."""
  pending_texts: list[str] = []
  pending_ids: list[int] = []

  def flush():
    if pending_texts:
      writer.add(embedder.embed_texts(pending_texts, tokenize), np.asarray(pending_ids),
                 pending_texts)
      pending_texts.clear()
      pending_ids.clear()

  for s, text in drawn:
    pending_texts.append(text)
    pending_ids.append(s)
    if len(pending_texts) >= chunk_texts:
      flush()
  flush()


def _report(library: store.Library, num_sources: int, n: int, short: dict[str, int], blank: dict[str, int],
            truncated_inputs: int, start: float) -> dict:
  """The build's report (see `build_library`); sources short of n and blank texts are also logged."""
  report = {
      "library": library.name,
      "rows": library.num_rows,
      "sources": num_sources,
      "sources_short_of_n": short,
      "blank_texts_skipped": blank,
      "truncated_inputs": truncated_inputs,
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
  return report

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

from rospr_jax.config_fields import POSITIVE, check_fields, one_of, setting
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


@dataclasses.dataclass(frozen=True)
class DrawConfig:
  """How instances are drawn: `n` per source (all of a source's texts when it has fewer; blank texts
  are left out of the draw and counted in the report), seeded by `seed` (each source draws with
  `sources.source_seed(seed, name)`)."""
  n: int = setting("--n", DEFAULT_N, POSITIVE)
  seed: int = 0

  def __post_init__(self):
    check_fields(self)


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """The search index (`writer_lib.LibraryWriter.finish`): "scann" (built with `scann`) or "exact"
  (none: exact search), and its default number of neighbours `k`."""
  kind: str = setting("--index", "scann", one_of(*store.INDEX_KINDS))
  scann: search.ScannConfig = search.ScannConfig()
  k: int = setting(None, 10, POSITIVE)

  def __post_init__(self):
    check_fields(self)


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """How the library is written.

  Attributes:
    shard_rows: rows per embeddings shard.
    chunk_texts: texts embedded at a time (across sources, so small sources share batches).
    overwrite: replace an existing library.
    name: what records and the report call the library (default: the directory): the path it will
      have when the directory is inside a folder artifact still being written.
    write: False on the processes of a multi-process run that only embed their share of each batch
      (the embedder's mesh spans them all) while process 0 writes: nothing is written.
  """
  shard_rows: int = setting("--shard-rows", 262_144, POSITIVE)
  chunk_texts: int = setting(None, DEFAULT_CHUNK_TEXTS, POSITIVE)
  overwrite: bool = False
  name: str | None = None
  write: bool = True

  def __post_init__(self):
    check_fields(self)


def build_library(directory: str, sources: Sequence[sources_lib.SourceTexts], prompts,
                  embedder: embed_lib.Embedder, tokenize: Callable[[str], Sequence[int]], *,
                  draw: DrawConfig = DrawConfig(), index: IndexConfig = IndexConfig(),
                  output: OutputConfig = OutputConfig(), extra: dict | None = None,
                  prompts_backbone: str | None = None) -> tuple[store.Library | None, dict]:
  """Builds a library directory.

  Args:
    directory: where the library goes (written atomically).
    sources: [S] sources; row s of `prompts` is the prompt of sources[s].
    prompts: [S, P, H] prompt table.
    embedder: the retriever.
    tokenize: text -> token ids without EOS.
    draw, index, output: how instances are drawn, the search index, how the library is written.
    extra: more facts for the manifest.
    prompts_backbone: fingerprint of the backbone the prompts were trained on (recorded; an
      evaluation with another backbone is refused).

  Returns:
    (the opened library, a report: rows, sources short of n, blank texts skipped, truncated
    inputs, the index and its recall on the library's own rows, seconds); the library is None when
    `output.write` is False.
  """
  start = time.time()
  short, blank = {}, {}
  truncated_before = embedder.truncated
  writer = _EmbedOnly() if not output.write else _library_writer(
      directory, sources, prompts, embedder, draw=draw, output=output, extra=extra,
      prompts_backbone=prompts_backbone)
  with writer:
    _embed_in_chunks(writer, embedder, tokenize, _drawn_texts(sources, draw.n, draw.seed, short, blank),
                     output.chunk_texts)
    if not output.write:
      return None, {"rows": writer.num_rows, "truncated_inputs": embedder.truncated - truncated_before,
                    "seconds": round(time.time() - start, 2)}
    library = writer.finish(index=index.kind, scann_config=index.scann, k=index.k)
  library.name = output.name or library.name
  truncated = embedder.truncated - truncated_before
  return library, _report(library, len(sources), draw.n, short, blank, truncated, start)


def _library_writer(directory: str, sources: Sequence[sources_lib.SourceTexts], prompts,
                    embedder: embed_lib.Embedder, *, draw: DrawConfig, output: OutputConfig,
                    extra: dict | None, prompts_backbone: str | None) -> writer_lib.LibraryWriter:
  """The writer of the library directory: the sources' facts, the [S, P, H] prompts, the retriever."""
  infos = [store.SourceInfo(s.name, n=draw.n, seed=draw.seed, prompt_file=s.prompt_file,
                            prompt_file_sha256=s.prompt_file_sha256) for s in sources]
  return writer_lib.LibraryWriter(
      directory, sources=infos, prompts=prompts, dim=embedder.dim,
      retriever=store.Retriever(embedder.fingerprint, embedder.description()),
      shard_rows=output.shard_rows, overwrite=output.overwrite, prompts_backbone=prompts_backbone,
      extra={"n": draw.n, "seed": draw.seed, **(extra or {})})


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

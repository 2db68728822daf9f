"""`rospr convert`: convert a T5 v1.1 / T0 checkpoint between Hugging Face and T5X formats.

  rospr convert --from bigscience-T0_3B --to t0_3b_t5x --format t5x
  rospr convert --from t0_3b_t5x --to t0_3b_hf --format hf --max-shard-size 2GB

A format is any registered one (`rospr_jax.model.formats`; the built-in hf and t5x): the command
reads and writes through the registry and names no format itself. Tensors keep their stored dtype unless `--dtype` says otherwise, so a round trip returns identical
tensors. A Hugging Face source's tokenizer files are copied to a Hugging Face destination, and the
source's SentencePiece model to either (into `checkpoint_<step>` for T5X), so that `rospr score` and
the other loaders find it without --vocab.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from rospr_jax import storage
from rospr_jax.commands import common

_DTYPES = {"keep": None, "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
  """"2GB" -> 2000000000, "500MiB" -> 524288000, "4096" -> 4096."""
  match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
  if not match or match.group(2).upper() not in _UNITS:
    raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4096, 500MB, 2GB, 1GiB)")
  size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
  if size <= 0:
    raise argparse.ArgumentTypeError(f"not a positive size: {text!r}")
  return size


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="rospr convert", description=__doc__.split(": ", 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--from", dest="source", metavar="DIR", required=True,
                      help="Hugging Face directory, or T5X model / checkpoint_<step> directory")
  parser.add_argument("--to", dest="dest", metavar="DIR", required=True,
                      help="the directory to create (a format that records steps: the model directory "
                           "that receives checkpoint_<step>)")
  parser.add_argument("--format", required=True, metavar="FORMAT",
                      help="format to write: a registered checkpoint format (built in: hf, t5x)")
  parser.add_argument("--dtype", choices=tuple(_DTYPES), default="keep",
                      help="dtype of the written tensors (default: keep the stored ones)")
  parser.add_argument("--step", type=int, default=0, help="step number of the T5X checkpoint written")
  parser.add_argument("--max-shard-size", type=parse_size, default=None,
                      help="shard Hugging Face weights into files of at most this size (default 5GB, "
                           "as transformers; it also bounds the extra memory of the write)")
  return parser


def _format_named(parser: argparse.ArgumentParser, name: str):
  """The registered format `name`; another is refused as argparse refuses a choice (usage, exit 2)."""
  from rospr_jax.model import formats  # pylint: disable=g-import-not-at-top
  if name not in formats.FORMATS:
    parser.error(f"argument --format: invalid choice: {name!r} (choose from "
                 f"{', '.join(map(repr, formats.FORMATS))})")
  return formats.FORMATS[name]


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  # JAX loads after the flags are parsed (in _convert): --help and flag errors answer at once.
  target_format = _format_named(parser, args.format)
  # --to is a folder artifact: written into a temporary folder, committed by its manifest (an existing
  # folder there is refused before the checkpoint is read); a --from URL is read through a local copy.
  output = common.FolderCommand("dest", target_format.kind, "the checkpoint", folders=("source",),
                                flags={"source": "--from", "dest": "--to"}, overwrite_flag=None)
  given = args.source
  return output.run("rospr convert", args, lambda: _convert(args, given, target_format),
                    failures=((ImportError, 2),))


def _convert(args: argparse.Namespace, given: str, target_format) -> str:
  """Reads --from (its local copy) and writes --to in `target_format`; returns the line printed."""
  from rospr_jax import tokenization  # pylint: disable=g-import-not-at-top
  from rospr_jax.model import formats  # pylint: disable=g-import-not-at-top
  from rospr_jax.model.checkpoints import (format_of, load_fingerprinted,  # pylint: disable=g-import-not-at-top
                                           params_fingerprint, write_checkpoint)
  from rospr_jax.model.t5x_checkpoint import flatten  # pylint: disable=g-import-not-at-top
  with storage.output_folder(args.dest, "--to", kind=target_format.kind, overwrite_flag=None,
                             inputs=[args.source]) as dest_dir:
    source_format = format_of(args.source).name
    # Weights changed since the manifest their writer left are refused, not converted into a new artifact.
    config, params, stored = load_fingerprinted(args.source, _DTYPES[args.dtype])
    # The source's SentencePiece model goes along, so the result loads without --vocab.
    spm = tokenization.find_sentencepiece_model(args.source, required=False)
    # the written files' (no second read): the stored tensors' unless they are cast
    fingerprint = stored if _DTYPES[args.dtype] is None else params_fingerprint(config, params)
    options = formats.WriteOptions(Path(args.source), Path(spm) if spm else None, args.step, args.max_shard_size)
    written = write_checkpoint(target_format.name, dest_dir, config, params, options, fingerprint)
    inside = os.path.relpath(written, dest_dir)  # what the user reads: the committed folder
    written = storage.absolute(args.dest).rstrip("/") + ("" if inside == "." else f"/{inside}")
  count = sum(a.size for a in flatten(params).values())
  return (f"converted {given} ({source_format}) -> {written} ({target_format.name}): {count:,} parameters, "
          f"fingerprint {fingerprint}")


if __name__ == "__main__":
  sys.exit(main())

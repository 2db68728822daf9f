"""`rospr convert`: convert a T5 v1.1 / T0 checkpoint between Hugging Face and T5X formats.

  rospr convert --from bigscience-T0_3B --to t0_3b_t5x --format t5x
  rospr convert --from t0_3b_t5x --to t0_3b_hf --format hf --max-shard-size 2GB

Tensors keep their stored dtype unless `--dtype` says otherwise, so a round trip returns identical
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
from rospr_jax.storage import copies

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
                      help="hf: the directory to create; t5x: the model directory that receives "
                           "checkpoint_<step>")
  parser.add_argument("--format", choices=("hf", "t5x"), required=True, help="format to write")
  parser.add_argument("--dtype", choices=tuple(_DTYPES), default="keep",
                      help="dtype of the written tensors (default: keep the stored ones)")
  parser.add_argument("--step", type=int, default=0, help="step number of the T5X checkpoint written")
  parser.add_argument("--max-shard-size", type=parse_size, default=None,
                      help="shard Hugging Face weights into files of at most this size (default 5GB, "
                           "as transformers; it also bounds the extra memory of the write)")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  # JAX loads after the flags are parsed: --help and flag errors answer at once.
  from rospr_jax import tokenization  # pylint: disable=g-import-not-at-top
  from rospr_jax.model.checkpoints import (detect_format, load_checkpoint,  # pylint: disable=g-import-not-at-top
                                           params_fingerprint, save_hf, save_t5x)
  from rospr_jax.model import hf_checkpoint, t5x_checkpoint  # pylint: disable=g-import-not-at-top
  from rospr_jax.model.hf_checkpoint import DEFAULT_MAX_SHARD_BYTES, TOKENIZER_FILES  # pylint: disable=g-import-not-at-top
  from rospr_jax.model.t5x_checkpoint import flatten  # pylint: disable=g-import-not-at-top
  try:
    storage.require_local_args(args, flags={"source": "--from", "dest": "--to"}, urls=("dest", "source"))
    given, args.source = args.source, copies.local_copy(args.source, "--from")  # a URL: a local copy
    # --to is a folder artifact: written into a temporary folder, committed by its manifest (an existing
    # folder there is refused before the checkpoint is read).
    dest = storage.absolute(args.dest)  # a killed conversion's temporary folder, if any, goes first
    storage.remove_leftovers(os.path.dirname(dest), names=[os.path.basename(dest)])
    kind = hf_checkpoint.KIND if args.format == "hf" else t5x_checkpoint.KIND
    with storage.output_folder(args.dest, "--to", kind=kind, overwrite_flag=None, inputs=[args.source]) as dest_dir:
      source_format = detect_format(args.source)
      config, params = load_checkpoint(args.source, _DTYPES[args.dtype])
      # The source's SentencePiece model goes along, so the result loads without --vocab.
      spm = tokenization.find_sentencepiece_model(args.source, required=False)
      fingerprint = params_fingerprint(config, params)  # the written files' (no second read)
      if args.format == "hf":
        extra = ([Path(args.source) / name for name in TOKENIZER_FILES
                  if (Path(args.source) / name).is_file()] if source_format == "hf" else [])
        extra += [Path(spm)] if spm and Path(spm).name not in {f.name for f in extra} else []
        written = save_hf(dest_dir, config, params, args.max_shard_size or DEFAULT_MAX_SHARD_BYTES,
                          extra_files=extra, fingerprint=fingerprint)
      else:
        written = save_t5x(dest_dir, config, params, step=args.step, extra_files=[spm] if spm else [],
                           fingerprint=fingerprint)
      inside = os.path.relpath(written, dest_dir)  # what the user reads: the committed folder
      written = storage.absolute(args.dest).rstrip("/") + ("" if inside == "." else f"/{inside}")
  except (ValueError, OSError, ImportError) as e:  # a full disk names the destination
    print(f"rospr convert: error: {storage.with_path(e, args.dest)}", file=sys.stderr)
    return 2
  count = sum(a.size for a in flatten(params).values())
  print(f"converted {given} ({source_format}) -> {written} ({args.format}): {count:,} parameters, "
        f"fingerprint {fingerprint}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""`rospr fetch`: download the promptsource and BIG-bench archives into the cache, once, checksummed.

    rospr fetch [--cache DIR] [--force] [--no-vocab]

Prepares the templates, the BIG-bench tasks and the offline SentencePiece vocabulary under
`~/.cache/rospr_jax` (`$ROSPR_CACHE`); `scripts/setup.sh` runs it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from rospr_jax.data import archives, vocabulary


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(
      prog="rospr fetch",
      description="Download the promptsource 0.2.3 and bigbench 1.0.0 source archives into the cache "
                  "(once, checksummed) and prepare the templates, BIG-bench tasks and offline vocabulary.")
  parser.add_argument("--cache", default=None, help="cache folder (default: $ROSPR_CACHE or ~/.cache/rospr_jax)")
  parser.add_argument("--force", action="store_true", help="rebuild the prepared folders")
  parser.add_argument("--no-vocab", action="store_true", help="skip training the offline vocabulary")
  args = parser.parse_args(argv)
  cache = pathlib.Path(args.cache) if args.cache else archives.cache_dir()
  if args.cache:
    os.environ["ROSPR_CACHE"] = str(cache)
  archives.fetch_all(cache, force=args.force)
  if not args.no_vocab:
    path = vocabulary.offline_vocabulary_path(cache=cache, retrain=args.force)
    print(f"offline vocabulary: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

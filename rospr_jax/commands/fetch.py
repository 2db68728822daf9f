"""`rospr fetch`: the archives the package index still serves, and BIG-bench from a source you give.

    rospr fetch [--cache DIR] [--force]              promptsource 0.2.3 and the t5 0.9.4 wheel (sha256-
                                                     pinned), and BIG-bench from $ROSPR_BIGBENCH if set
    rospr fetch --bigbench SOURCE [--cache DIR] [--force]
                                                     only BIG-bench's store, from SOURCE: a google/BIG-bench
                                                     checkout, a Hugging Face parquet folder
                                                     (tasksource/bigbench or hails/bigbench), the old
                                                     bigbench-1.0.0.tar.gz, or `github` (the pinned commit)

Everything goes under `~/.cache/rospr_jax` (`$ROSPR_CACHE`); `scripts/setup.sh` runs the first form.
BIG-bench is optional: nothing of the set-up needs it. A BIG-bench store already built from the same
source is kept unless --force. Every failure is one line on stderr: exit status 2 for a source that
does not exist or is none of the forms, 1 for the rest (network, checksums, broken files).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from rospr_jax.data import archives, bigbench, bigbench_sources, vocabulary

PROG = "rospr fetch"


def _fail(e: BaseException) -> int:
  kind = "" if isinstance(e, (OSError, ValueError)) else f"{type(e).__name__}: "
  print(f"{PROG}: {kind}{' '.join(str(e).split())}", file=sys.stderr)
  return 2 if isinstance(e, (FileNotFoundError, bigbench_sources.SourceError)) else 1


def fetch_bigbench(source: str, cache: pathlib.Path, force: bool) -> None:
  folder, built = bigbench_sources.ensure_store(source, cache, force=force)
  store = bigbench.BigBenchStore(folder)
  print(f"BIG-bench ({store.source['form']}, {source}): {len(store.task_names())} multiple-choice tasks in "
        f"{folder} ({'built' if built else 'up to date'})")


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(
      prog=PROG,
      description="Download the archives the package index still serves (promptsource 0.2.3, the t5 0.9.4 "
                  "wheel; checksummed) into the cache, and build BIG-bench's store from a source you give.")
  parser.add_argument("--cache", default=None, help="cache folder (default: $ROSPR_CACHE or ~/.cache/rospr_jax)")
  parser.add_argument("--force", action="store_true", help="rebuild the prepared folders")
  parser.add_argument("--bigbench", default=None, metavar="SOURCE",
                      help="only build BIG-bench's store, from a google/BIG-bench checkout, a Hugging Face "
                           "parquet folder, bigbench-1.0.0.tar.gz, or `github` (default for a plain fetch: "
                           "$ROSPR_BIGBENCH)")
  args = parser.parse_args(argv)
  cache = pathlib.Path(args.cache) if args.cache else archives.cache_dir()
  if args.cache:
    os.environ["ROSPR_CACHE"] = str(cache)
  try:
    if args.bigbench:
      fetch_bigbench(args.bigbench, cache, args.force)
      return 0
    archives.fetch_all(cache, force=args.force)
    source = os.environ.get(bigbench_sources.ENV_SOURCE, "").strip()
    if source:
      fetch_bigbench(source, cache, args.force)
    else:
      print("BIG-bench: not configured (optional); `rospr fetch --bigbench PATH|github` or ROSPR_BIGBENCH "
            "adds it")
    print(f"offline vocabulary: {vocabulary.offline_vocabulary_path()} (in the package; "
          f"`{vocabulary.RETRAIN_COMMAND}` retrains it)")
  except Exception as e:  # pylint: disable=broad-except  (one line, never a traceback)
    return _fail(e)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

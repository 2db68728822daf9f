"""Running a `rospr` command line the way a test needs: in a subprocess (as a user meets it: a
traceback or a crash shows) or in this process (fast, with capsys). Both return (exit code, stderr)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_rospr(argv, capsys=None, *, in_subprocess: bool = False) -> tuple[int, str]:
  """`rospr ARGV`'s exit code and stderr; in this process (needs `capsys`) unless `in_subprocess`."""
  argv = [str(a) for a in argv]
  if in_subprocess:
    done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stderr
  from rospr_jax import cli  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  return cli.main(argv), capsys.readouterr().err

"""Paths this package reads and writes: local (or mounted) file systems only.

Checkpoints, libraries, run directories and reports go through `os` and numpy, which take a URL such
as `gs://bucket/run` for a relative path and write a local folder named `gs:`. On a Cloud TPU VM that
folder disappears with the VM, so URLs are refused where a command starts, before any work: mount the
bucket (`run_tpu.sh --mount BUCKET`, or `gcsfuse --implicit-dirs BUCKET /gcs/BUCKET`) and pass the
mounted path. (SeqIO's vocabularies and TFDS read through `tf.io.gfile` and do take `gs://`.)
"""

from __future__ import annotations

import argparse
import os
import re

import numpy as np

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def require_local(path: str | os.PathLike | None, what: str) -> str | None:
  """Returns `path` unchanged (None passes); raises ValueError naming `what` when it is a URL."""
  if path is None:
    return None
  text = os.fspath(path)
  if _URL.match(text):
    bucket = text.split("://", 1)[1].split("/", 1)[0]
    raise ValueError(
        f"{what} {text!r} is a URL; rospr-jax reads and writes local or mounted paths. Mount the "
        f"bucket (run_tpu.sh --mount {bucket}, or gcsfuse --implicit-dirs {bucket} /gcs/{bucket}) "
        f"and pass /gcs/{text.split('://', 1)[1]}.")
  return text


def require_local_args(args: argparse.Namespace, flags: dict[str, str] | None = None) -> None:
  """Refuses a command's string arguments that are URLs (its flags name files and folders; a
  `NAME=FILE` value is checked after the `=`). `flags` maps an argument's dest to the flag the user
  typed where they differ (`{"dest": "--to"}`)."""
  for name, value in vars(args).items():
    for item in value if isinstance(value, (list, tuple)) else [value]:
      if isinstance(item, str):
        require_local(item.split("=", 1)[1] if "=" in item and not _URL.match(item) else item,
                      (flags or {}).get(name, f"--{name.replace('_', '-')}"))


def from_process_zero(value: np.ndarray) -> np.ndarray:
  """`value` as process 0 has it, on every process (unchanged with one process): for decisions that
  all hosts must take alike because their computations run together."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.broadcast_one_to_all(value))


def writes_outputs() -> bool:
  """Whether this process writes a command's outputs: on several hosts (run_tpu.sh on a pod slice)
  only process 0 does, so that hosts sharing a mounted bucket never race on the same files."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0

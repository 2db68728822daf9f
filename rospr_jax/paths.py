"""Paths this package reads and writes: local (or mounted) paths, and published folders at URLs.

The compute core reads and writes local folders through `os` and numpy (atomic renames, locks). A
folder artifact may also live at a URL (`gs://bucket/lib`, `s3://...`, `memory://...`: any scheme
fsspec has a driver for; gcsfs for gs://): `output_directory` stages it locally and publishes it with a
commit marker written last, `input_directory` reads a checked local copy (see below). `rospr
build-library --out/--prompts` and `rospr retrieve --library/--out` take URLs this way. Other paths
(checkpoints, MODEL_DIR, OUTPUT_DIR, data files) are still refused as URLs where a command starts,
before any work: mount the bucket (`run_tpu.sh --mount BUCKET`, or `gcsfuse --implicit-dirs BUCKET
/gcs/BUCKET`) and pass the mounted path. (SeqIO's vocabularies and TFDS read through `tf.io.gfile`.)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Iterator

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


def require_local_args(args: argparse.Namespace, flags: dict[str, str] | None = None, *,
                       urls: tuple[str, ...] = ()) -> None:
  """Refuses a command's string arguments that are URLs (its flags name files and folders; a
  `NAME=FILE` value is checked after the `=`), except those whose dest is in `urls` (folders that go
  through `input_directory` / `output_directory`). `flags` maps an argument's dest to the flag the
  user typed where they differ (`{"dest": "--to"}`)."""
  for name, value in vars(args).items():
    if name in urls:
      continue
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


# --- Object-store folders (gs://, s3://, memory://, any fsspec URL) --------------------------------
#
# An object store has no atomic rename, no locks and no folders, so a folder artifact is written
# beside the run in a local staging folder (where the atomic writers and checks above keep their
# meaning), then published object by object with a commit marker written last: `_COMMITTED.json`,
# the list of every object with its size and sha256 (orbax's `commit_success.txt` plays the same part
# on GCS). A reader takes a folder only when its marker is there and every listed object matches it,
# so a writer killed mid-upload leaves a folder that readers refuse (naming it) and the next publish
# replaces. Reads go through a local copy under `$ROSPR_REMOTE_CACHE` (default `$ROSPR_CACHE/remote`),
# checked against the marker.

COMMIT_MARKER = "_COMMITTED.json"


def cache_root() -> str:
  """The cache root every part of the package shares: `$ROSPR_CACHE`, else `~/.cache/rospr_jax`."""
  return os.environ.get("ROSPR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rospr_jax")


def is_url(path: str | os.PathLike | None) -> bool:
  """Whether `path` is a URL (`gs://bucket/run`, `memory://x`), not a local or mounted path."""
  return path is not None and bool(_URL.match(os.fspath(path)))


def _filesystem(url: str):
  """(fsspec file system, path inside it) for `url`; a scheme with no installed driver is named."""
  import fsspec  # pylint: disable=g-import-not-at-top
  try:
    return fsspec.core.url_to_fs(url)
  except (ImportError, ValueError) as e:
    scheme = url.split("://", 1)[0]
    raise ValueError(f"{url}: no file system for {scheme}:// ({e}); install its fsspec driver "
                     f"(gcsfs for gs://, s3fs for s3://) or mount the bucket.") from e


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _commit_record(url: str, what: str) -> dict | None:
  fs, root = _filesystem(url)
  marker = f"{root.rstrip('/')}/{COMMIT_MARKER}"
  if not fs.exists(marker):
    return None
  try:
    record = json.loads(fs.cat_file(marker))
    files = record["files"]
    if not isinstance(files, dict) or not all(
        isinstance(f, dict) and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)
        for f in files.values()):
      raise TypeError("files is not an object of {name: {size, sha256}}")
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{what} {url}: its commit marker {COMMIT_MARKER} is damaged ({e}); publish the "
                     f"folder again.") from e
  return record


def is_committed(url: str) -> bool:
  """Whether the folder at `url` has a commit marker (it was published whole)."""
  return _commit_record(url, "folder") is not None


def publish_directory(local: str | os.PathLike, url: str, *, replace: bool) -> None:
  """Uploads the local folder `local` to `url`, its commit marker last.

  A committed folder at `url` is refused unless `replace`; with `replace` its marker is removed first
  (readers then refuse it as incomplete rather than read a mix), its objects are overwritten, those
  the new folder lacks are removed, and the new marker commits the whole.
  """
  fs, root = _filesystem(url)
  root = root.rstrip("/")
  if _commit_record(url, "folder") is not None:
    if not replace:
      raise FileExistsError(f"{url} already holds a published folder; pass the command's overwrite "
                            f"flag to replace it.")
    fs.rm_file(f"{root}/{COMMIT_MARKER}")
  files: dict[str, dict] = {}
  local = os.fspath(local)
  for directory, _, names in os.walk(local):
    for name in sorted(names):
      path = os.path.join(directory, name)
      relative = os.path.relpath(path, local).replace(os.sep, "/")
      with open(path, "rb") as f:
        data = f.read()
      fs.pipe_file(f"{root}/{relative}", data)
      files[relative] = {"size": len(data), "sha256": _sha256(data)}
  if fs.exists(root):
    for existing in fs.find(root):
      relative = existing[len(root) + 1:] if existing.startswith(root + "/") else None
      if relative and relative not in files and relative != COMMIT_MARKER:
        fs.rm_file(existing)
  fs.pipe_file(f"{root}/{COMMIT_MARKER}",
               (json.dumps({"files": files}, indent=1, sort_keys=True) + "\n").encode("utf-8"))
  logging.info("published %d files to %s", len(files), url)


def fetch_directory(url: str, what: str) -> str:
  """A local copy of the published folder at `url`, checked object by object against its marker.

  Copies live under `$ROSPR_REMOTE_CACHE` (default `$ROSPR_CACHE/remote`) as `<sha256 of url>/<marker
  sha256>`; one whose marker matches is reused. Raises FileNotFoundError naming `what` when the
  folder has no commit marker.
  """
  record = _commit_record(url, what)
  if record is None:
    raise FileNotFoundError(f"{what} {url} has no commit marker {COMMIT_MARKER}: it was never "
                            f"published, or its writer stopped mid-upload; write it again.")
  fs, root = _filesystem(url)
  root = root.rstrip("/")
  key = _sha256(json.dumps(record, sort_keys=True).encode("utf-8"))
  copies = os.environ.get("ROSPR_REMOTE_CACHE") or os.path.join(cache_root(), "remote")
  copy = os.path.join(copies, _sha256(url.encode("utf-8"))[:16], key[:16])
  if os.path.isfile(os.path.join(copy, COMMIT_MARKER)):
    return copy
  os.makedirs(os.path.dirname(copy), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(copy)}.tmp-", dir=os.path.dirname(copy))
  try:
    for relative, fact in sorted(record["files"].items()):
      if relative.startswith("/") or ".." in relative.split("/") or relative == COMMIT_MARKER:
        raise ValueError(f"{what} {url}: {COMMIT_MARKER} lists {relative!r}, not a name inside the "
                         f"folder; publish the folder again.")
      try:
        data = fs.cat_file(f"{root}/{relative}")
      except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} {url}: {relative}, listed in {COMMIT_MARKER}, is missing; "
                                f"a writer is replacing the folder or it was damaged.") from e
      if len(data) != fact["size"] or _sha256(data) != fact["sha256"]:
        raise ValueError(f"{what} {url}: {relative} does not match {COMMIT_MARKER} (size or sha256); "
                         f"a writer is replacing the folder or it was damaged.")
      target = os.path.join(tmp, *relative.split("/"))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with open(target, "wb") as f:
        f.write(data)
    with open(os.path.join(tmp, COMMIT_MARKER), "w", encoding="utf-8") as f:
      json.dump(record, f, sort_keys=True)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
      os.rename(tmp, copy)  # whole or absent; a copy another reader finished first is as good
    except OSError:
      if not os.path.isfile(os.path.join(copy, COMMIT_MARKER)):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return copy


def input_directory(path: str, what: str) -> str:
  """`path` itself when local; else a checked local copy of the published folder (`fetch_directory`)."""
  return fetch_directory(path, what) if is_url(path) else path


@contextlib.contextmanager
def output_directory(path: str, what: str, *, replace: bool = False,
                     publish: bool = True) -> Iterator[str]:
  """Yields where a command writes the folder `path`: `path` itself when local; for a URL a fresh local
  staging folder, published to `path` when the block succeeds (`publish=False`, on processes that do
  not write, skips it). A committed folder at the URL is refused before any work unless `replace`."""
  if not is_url(path):
    yield path
    return
  if not replace and is_committed(path):
    raise FileExistsError(f"{what} {path} already holds a published folder; pass the command's "
                          f"overwrite flag to replace it.")
  with tempfile.TemporaryDirectory(prefix=".rospr-staging-") as staging:
    local = os.path.join(staging, "out")
    yield local
    if publish and os.path.isdir(local):
      publish_directory(local, path, replace=replace)

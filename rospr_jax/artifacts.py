"""Files that outlive a run: written whole or not at all, readable by the team, checksummed.

Every writer in the project goes through here:

- `atomic_file(path)` / `write_text` / `write_json` / `save_npy`: a temporary name in the same folder,
  then a rename, so a reader (or a run killed half-way) never sees a partial file.
- `atomic_directory(final)`: a folder built beside `final` and renamed into place when its block
  succeeds; an older folder of that name is moved aside first (only with `replace=True`) and removed
  after the swap.
- Modes follow the user's umask as `open` and `mkdir` do (0644 / 0755 under the usual 022), not the
  0600 / 0700 that `tempfile` gives its names, so teammates can read shared run folders.
- `sha256_file`: the checksum manifests record and readers compare.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import IO, Any, Iterator

import numpy as np


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def file_mode() -> int:
  """The mode `open(path, "w")` would give a new file under the current umask."""
  return 0o666 & ~_umask()


def dir_mode() -> int:
  """The mode `os.mkdir` would give a new folder under the current umask."""
  return 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
  """Opens a temporary file beside `path` for writing; it becomes `path` when the block succeeds."""
  path = os.path.abspath(os.fspath(path))
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
  try:
    with os.fdopen(fd, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  with atomic_file(path, "wb") as f:
    f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` as UTF-8, atomically."""
  with atomic_file(path, "w", encoding="utf-8") as f:
    f.write(text)


def write_json(path: str | os.PathLike, payload: Any, **dumps_kwargs) -> None:
  """Writes `payload` as JSON (strict: NaN and infinities are refused), atomically."""
  write_text(path, json.dumps(payload, allow_nan=False, **dumps_kwargs) + "\n")


def save_npy(path: str | os.PathLike, array) -> None:
  """Saves an array in .npy format (no pickles; the name is kept as given), atomically."""
  with atomic_file(path, "wb") as f:
    np.save(f, np.asarray(array), allow_pickle=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      digest.update(block)
  return digest.hexdigest()


def replace_directory(tmp: str | os.PathLike, final: str | os.PathLike, *, replace: bool) -> None:
  """Renames the finished folder `tmp` to `final`.

  An empty `final` is taken over; a non-empty one is refused unless `replace`, in which case it is
  moved aside, the new folder renamed into place, and the old one removed.
  """
  tmp, final = pathlib.Path(tmp), pathlib.Path(final)
  os.chmod(tmp, dir_mode())
  old = None
  if final.exists():
    if not final.is_dir():
      raise FileExistsError(f"{final} exists and is not a directory.")
    if any(final.iterdir()):
      if not replace:
        raise FileExistsError(f"{final} already exists and is not empty.")
      old = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
      old.rmdir()
      os.replace(final, old)
  os.replace(tmp, final)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, replace: bool = False) -> Iterator[pathlib.Path]:
  """Yields a temporary folder beside `final` that becomes `final` when the block succeeds (see
  `replace_directory`); on error it is removed and `final` is untouched."""
  final = pathlib.Path(os.path.abspath(os.fspath(final)))
  if final.exists() and not replace and (not final.is_dir() or any(final.iterdir())):
    raise FileExistsError(f"{final} already exists and is not an empty directory; "
                          "choose a new destination.")
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
  try:
    yield tmp
    replace_directory(tmp, final, replace=replace)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)

"""Checked local copies of inputs at URLs that compute code opens as local files (a library's ScaNN
index, a checkpoint, a data file, a vocabulary).

A copy lives under `$ROSPR_REMOTE_CACHE` (default `$ROSPR_CACHE/remote`), keyed by the URL and by the
listing of what it copied (names, sizes, object versions), so a changed source makes a new copy. It
is filled in a temporary sibling and renamed into place, with a stamp of its files' sizes and times
beside it: a copy edited, truncated or emptied since (by hand, by a full disk) is dropped and fetched
again from its intact source, with a line saying so. What the artifact's own manifest lists is checked
by its reader (sha256), as for any local folder.

Copies are made at the edge of each command, once: by the command modules for their flags and gin
settings, and by the model and data gin files for CHECKPOINT and VOCABULARY (`@<name>/copies.local_copy()`,
called when the loader is, after the run's cheaper checks). What they hand inward is a `LocalCopy`: a
local path that remembers the URL it copies, which records and messages name (`storage.absolute`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Callable, Iterator

from rospr_jax import storage
from rospr_jax.storage import backend


def _copies_root() -> str:
  return os.environ.get("ROSPR_REMOTE_CACHE") or os.path.join(storage.cache_root(), "remote")


def _sha(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _stamp(folder: str) -> dict[str, list[int]]:
  """{relative name: [size, mtime_ns]} of the files under the local `folder`."""
  out = {}
  for base, _, names in os.walk(folder):
    for name in names:
      st = os.lstat(os.path.join(base, name))
      out[os.path.relpath(os.path.join(base, name), folder).replace(os.sep, "/")] = [st.st_size, st.st_mtime_ns]
  return out


def _damage(copy: str) -> str | None:
  """What changed in `copy` since it was filled (per its stamp `<copy>.stamp.json`), or None."""
  try:
    with open(copy + ".stamp.json", encoding="utf-8") as f:
      recorded = json.load(f)
  except (OSError, ValueError) as e:
    return f"its record of what was copied is missing or unreadable ({type(e).__name__})"
  now = _stamp(copy)
  changed = sorted(set(recorded) ^ set(now) | {k for k in set(recorded) & set(now) if recorded[k] != now[k]})
  return f"{', '.join(changed[:3])} changed since it was copied" if changed else None


@contextlib.contextmanager
def _locked(copy: str) -> Iterator[None]:
  import filelock  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(copy), exist_ok=True)
  with filelock.FileLock(copy + ".lock"):
    yield


def _cached(copy: str, fill: Callable[[str], None]) -> str:
  """`copy`, filled by `fill(tmp)` into a temporary sibling renamed into place unless it is there and
  intact; a damaged copy is dropped and filled again. Everything but the check of an intact copy is
  done under a lock on `copy` (readers on one machine share it)."""
  if os.path.isdir(copy) and _damage(copy) is None:
    return copy
  with _locked(copy):
    if os.path.isdir(copy):
      damage = _damage(copy)
      if damage is None:  # another reader filled it meanwhile
        return copy
      logging.warning("The local copy %s is damaged (%s); fetching it again from its source.", copy, damage)
      shutil.rmtree(copy, ignore_errors=True)
    storage.remove_leftovers(os.path.dirname(copy))
    tmp = tempfile.mkdtemp(prefix=storage.tmp_prefix(os.path.basename(copy)), dir=os.path.dirname(copy))
    try:
      fill(tmp)
      stamp = _stamp(tmp)  # a rename keeps sizes and modification times
      os.replace(tmp, copy)
      storage.write_json(copy + ".stamp.json", stamp, sort_keys=True)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return copy


class LocalCopy(str):
  """The local path of a copy of the object or folder at the URL `origin`: opened as the local path it
  is, named by its `origin` in records and messages (`storage.absolute`)."""

  origin: str

  def __new__(cls, local: str, origin: str) -> "LocalCopy":
    copy = super().__new__(cls, local)
    copy.origin = origin
    return copy

  def __reduce__(self):  # copied and pickled with its origin (gin copies the values it binds)
    return LocalCopy, (str(self), self.origin)


def local_copy(path: storage.PathLike | None, what: str) -> str | None:
  """`path` itself when local (None stays None); for a URL, a checked local copy of the object or of
  every object under the folder, as a `LocalCopy` (FileNotFoundError naming `what` when there is
  neither)."""
  if path is None or isinstance(path, LocalCopy):
    return path
  if not storage.is_url(path):
    return os.fspath(path).removeprefix("file://")
  source = storage.as_path(path, what)
  listing = backend.listing(os.fspath(path))
  if not listing:
    raise FileNotFoundError(f"{what} {path} does not exist (no such object or folder).")
  single = source.is_file()
  if any(".." in name.split("/") for name in listing):
    raise ValueError(f"{what} {path}: an object name leaves the folder.")
  copy = os.path.join(_copies_root(), _sha(os.fspath(source)), _sha(json.dumps(listing, sort_keys=True)))

  def fill(tmp: str) -> None:
    for name, (size, _) in sorted(listing.items()):
      target = os.path.join(tmp, *name.split("/"))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with (source if single else source / name).open("rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
      if os.path.getsize(target) != size:
        raise ValueError(f"{what} {path}: {name} changed while it was copied; try again once its writer "
                         "is done.")
    logging.info("%s %s: copied %d objects to %s", what, path, len(listing), copy)

  folder = _cached(copy, fill)
  return LocalCopy(os.path.join(folder, source.name) if single else folder, os.fspath(path))

"""Destinations of folder artifacts: what a command may write over (`check_destination`), the
temporary folder it writes into (`new_folder`, `output_folder`) and the commit that makes it the
artifact (`commit_folder`: renamed into place locally, uploaded with its manifest last at a URL). Part
of `rospr_jax.storage`, which re-exports these names."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from typing import Iterator, Sequence

from rospr_jax.storage import INCOMPLETE, MANIFEST, Path, PathLike, as_path, is_url
from rospr_jax.storage.files import read_json, sha256_file, tmp_prefix, umask, with_path, write_json
from rospr_jax.storage.manifests import Manifest


def _files_of(folder: str) -> list[str]:
  """Relative names of the files under the local `folder`, manifest last."""
  names = sorted(os.path.relpath(os.path.join(base, n), folder).replace(os.sep, "/")
                 for base, _, files in os.walk(folder) for n in files)
  return [n for n in names if n != MANIFEST] + [n for n in names if n == MANIFEST]


def listing(folder: str) -> dict[str, str]:
  """{relative name: sha256} of every file under the local `folder` but its manifest: what the
  manifest of a folder artifact lists."""
  return {n: sha256_file(os.path.join(folder, n)) for n in _files_of(folder) if n != MANIFEST}


def folder_listing(folder: Path, limit: int = 3) -> str:
  """The first entries of `folder`, for a message: `a.txt, data, notes.md, ... (7 entries)`."""
  names = sorted(p.name for p in folder.iterdir())
  return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _contains(outer: str, inner: str) -> bool:
  """Whether the local path `inner` is `outer` or lies below it (both made real)."""
  outer, inner = os.path.realpath(outer), os.path.realpath(inner)
  return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def recorded_kind(path: Path) -> str | None:
  """The "kind" recorded in the JSON file `path` (a manifest, a run folder's marker); None if none."""
  try:
    recorded = read_json(path) if path.is_file() else None
  except (OSError, ValueError):
    return None
  return recorded.get("kind") if isinstance(recorded, dict) else None


def writable_folder(final: PathLike, what: str, inputs: Sequence[PathLike | None] = (),
                    ignore: Sequence[str] = ()) -> Path | None:
  """`final` as a Path when it is a folder holding entries (but those named in `ignore`), None when
  it is absent or empty; refuses a symbolic link, the working folder or one above it, a folder that is
  or holds one of `inputs` or lies inside an input folder, and a file, naming `what`."""
  target = as_path(final, what, output=True)
  text = os.fspath(final)
  if not is_url(final):
    local = os.path.abspath(text.removeprefix("file://"))
    if os.path.islink(local.rstrip(os.sep) or os.sep):
      raise ValueError(f"{what} {text} is a symbolic link (to {os.readlink(local.rstrip(os.sep))}); give "
                       "a folder of its own, not a link.")
    if _contains(local, os.getcwd()):
      raise ValueError(f"{what} {text} is the working folder or a folder above it; give a new folder "
                       "for the output.")
    for item in inputs:
      path = None if item is None or is_url(item) else os.fspath(item).removeprefix("file://")
      if path is not None and _contains(local, path):
        raise ValueError(f"{what} {text} is or holds the input {os.fspath(item)}; give a new folder for the "
                         "output.")
      if path is not None and os.path.isdir(path) and _contains(path, local):
        raise ValueError(f"{what} {text} lies inside the input {os.fspath(item)}; give a folder outside it "
                         "(rospr writes nothing into its inputs).")
  if not target.exists():
    return None
  if not target.is_dir():
    raise FileExistsError(f"{what} {text} is a file; give a new folder (rospr never replaces a file it "
                          "did not write).")
  if not any(p.name not in ignore for p in target.iterdir()):
    return None
  return target


def check_destination(final: PathLike, what: str, *, kind: str, overwrite: bool = False,
                      overwrite_flag: str | None = "--overwrite", inputs: Sequence[PathLike | None] = ()) -> None:
  """Refuses, before any work, a destination the folder artifact `final` (of `kind`) may not take.

  The rule: a command writes a new or empty folder, or replaces an artifact of its own `kind` (its
  manifest says so) when `overwrite` is set (the user passed `overwrite_flag`); anything else at
  `final` is the user's and is refused. So are, whatever they hold, a symbolic link, the working
  folder or a folder above it, and a folder that is or holds one of the command's `inputs`.

  Raises:
    FileExistsError / ValueError naming `what` (the flag or setting), `final` and why.
  """
  target = writable_folder(final, what, inputs)
  if target is None:
    return
  found = recorded_kind(target / MANIFEST)
  if found != kind:
    raise FileExistsError(f"{what} {os.fspath(final)} holds files that are not a {kind} "
                          f"({folder_listing(target)}); rospr replaces only its own artifacts: give a new "
                          "or empty folder.")
  if not overwrite:
    hint = f"pass {overwrite_flag} to replace it" if overwrite_flag else "give a new or empty folder"
    raise FileExistsError(f"{what} {os.fspath(final)} already holds a {kind}; {hint}.")


def _decommit(final: Path, kind: str) -> None:
  """Empties the object-store folder `final` but for a manifest that marks it incomplete (written
  first, one object: readers refuse the folder from then on, and the next writer of `kind` may replace
  it)."""
  write_json(final / MANIFEST, {"kind": kind, INCOMPLETE: True})
  for entry in final.iterdir():
    if entry.name != MANIFEST:
      entry.rmtree() if entry.is_dir() else entry.unlink()


def new_folder(final: PathLike, what: str, *, kind: str, overwrite: bool = False,
               overwrite_flag: str | None = "--overwrite", inputs: Sequence[PathLike | None] = ()) -> str:
  """A local temporary folder to write the folder artifact `final` (of `kind`) into (`commit_folder`
  makes it `final`), once `check_destination` has accepted `final`."""
  check_destination(final, what, kind=kind, overwrite=overwrite, overwrite_flag=overwrite_flag, inputs=inputs)
  target = as_path(final, what, output=True)
  parent = None if is_url(final) else os.fspath(target.parent)
  if parent:
    os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=tmp_prefix(target.name), dir=parent)


def commit_folder(tmp: str, final: PathLike, what: str, kind: str, facts: dict | None = None) -> None:
  """Makes the finished local folder `tmp` the folder artifact `final` of `kind`: its manifest written
  last (a `Manifest` of `kind` listing every file's sha256, with `facts`, when the writer wrote none).
  Locally an older `final` is renamed aside (a temporary name of this process, which `remove_leftovers` sweeps if
  it is killed) and `tmp` renamed into place, so `final` is always the old artifact or the new one; at
  a URL the old folder is decommitted (its manifest removed first) and the files uploaded, the
  manifest last."""
  target = as_path(final, what, output=True)
  names = _files_of(tmp)
  if MANIFEST not in names:
    Manifest(kind, dict(facts or {}), listing(tmp)).write(tmp)
    names.append(MANIFEST)
  os.chmod(tmp, 0o777 & ~umask())
  try:
    if not is_url(final):
      _replace_local(tmp, target)
      return
    if target.exists():
      _decommit(target, kind)
    for name in names:  # streamed one object at a time; the manifest last
      with open(os.path.join(tmp, name), "rb") as src, (target / name).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    logging.info("%s: uploaded %d files to %s", what, len(names), final)
    shutil.rmtree(tmp, ignore_errors=True)  # the local staging folder has done its work
  except OSError as e:
    if with_path(e, final) is e:
      raise
    raise with_path(e, final) from e


def _replace_local(tmp: str, target: Path) -> None:
  """Renames the folder `tmp` to `target`, an older `target` first renamed aside (onto an empty folder
  of this process's temporary name: atomic) and removed after. Another process committing the same
  artifact at once (two builds of one store) may rename its folder into place between the two renames:
  that one is moved aside in turn, so the last rename wins and both commits succeed."""
  asides = []
  try:
    for _ in range(_COMMIT_ATTEMPTS):
      if os.path.lexists(target):
        aside = tempfile.mkdtemp(prefix=tmp_prefix(target.name), dir=os.fspath(target.parent))
        asides.append(aside)
        try:
          os.replace(target, aside)
        except FileNotFoundError:  # another process moved it first
          pass
      try:
        os.replace(tmp, target)
        return
      except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # not another commit arriving first
          raise
    raise OSError(errno.EBUSY, f"other processes kept committing it; {_COMMIT_ATTEMPTS} renames failed",
                  os.fspath(target))
  finally:
    for aside in asides:
      shutil.rmtree(aside, ignore_errors=True)


_COMMIT_ATTEMPTS = 20


@contextlib.contextmanager
def output_folder(final: PathLike, what: str, *, kind: str, overwrite: bool = False,
                  overwrite_flag: str | None = "--overwrite", inputs: Sequence[PathLike | None] = (),
                  facts: dict | None = None) -> Iterator[str]:
  """Yields a local temporary folder (`new_folder`: `final` checked first) that becomes the folder
  artifact `final` of `kind` when the block succeeds (`commit_folder`, `facts` in its manifest); on
  error `final` is untouched and the temporary folder removed."""
  tmp = new_folder(final, what, kind=kind, overwrite=overwrite, overwrite_flag=overwrite_flag, inputs=inputs)
  try:
    yield tmp
    commit_folder(tmp, final, what, kind, facts)
  except OSError as e:  # a full disk names the folder being written, not its temporary name
    inside = os.fspath(e.filename or "")
    if inside.startswith(tmp):
      raise type(e)(e.errno, e.strerror, os.fspath(final) + inside[len(tmp):]) from e
    if with_path(e, final) is e:
      raise
    raise with_path(e, final) from e
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

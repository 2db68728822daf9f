"""Files that outlive a run: written whole or not at all, readable by the team, checksummed.

Every writer in the project goes through here:

- `atomic_file(path)` / `write_text` / `write_json` / `save_npy`: a temporary name in the same folder,
  then a rename, so a reader (or a run killed half-way) never sees a partial file.
- `atomic_directory(final)`: a folder built beside `final` and renamed into place when its block
  succeeds; an older folder of that name (only with `replace=True`) is exchanged with it in one
  step where Linux `renameat2(RENAME_EXCHANGE)` allows, else moved aside under a swap marker, and
  removed after the swap. `recover_directory(final)` finishes or undoes a swap a killed writer left
  half-way; readers call it before opening a folder.
- `atomic_files(directory, unit, names)`: a set of files (a report) written into a temporary folder
  and moved in together under a marker `.<unit>.swap`; `recover_files` finishes a killed move.
- Temporary names carry their writer (`tmp_prefix`: `.<name>.tmp-<host>-<pid>-*`), so that
  `remove_leftovers` removes, naming them, only those of dead writers of this host. A write that
  fails with an `OSError` naming no file (a full disk) re-raises it naming the path.
- Modes follow the user's umask as `open` and `mkdir` do (0644 / 0755 under the usual 022), not the
  0600 / 0700 that `tempfile` gives its names, so teammates can read shared run folders.
- `sha256_file`: the checksum manifests record and readers compare.
- `write_manifest` / `read_manifest` / `check_listed_file`: the one checked-manifest folder idiom (a
  manifest.json written last, listing files and their sha256) that prompt exports, libraries and the
  data cache share; `read_json` reads any other JSON artifact with an error that names the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import IO, Any, Iterator, Sequence

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


def _host_tag() -> str:
  return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def tmp_prefix(name: str) -> str:
  """The prefix of this process's temporary names for `name`: `.<name>.tmp-<host>-<pid>-`, so that a
  later run can tell a leftover of a killed writer (same host, pid gone) from a live writer's file
  (see `remove_leftovers`)."""
  return f".{name}.tmp-{_host_tag()}-{os.getpid()}-"


# A temporary name made with `tmp_prefix` (tempfile adds 8 characters of [a-z0-9_]).
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def _pathless(e: BaseException) -> bool:
  return isinstance(e, OSError) and e.errno is not None and e.filename is None


def with_path(e: OSError, path: str | os.PathLike) -> OSError:
  """`e` naming `path` (`[Errno 28] No space left on device: '/runs/x/results.json'`) when it names
  no file itself; else `e` unchanged."""
  if not _pathless(e):
    return e
  return type(e)(e.errno, e.strerror or os.strerror(e.errno), os.fspath(path))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
  """Opens a temporary file beside `path` for writing; it becomes `path` when the block succeeds."""
  path = os.path.abspath(os.fspath(path))
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(os.path.basename(path)), dir=directory)
  try:
    with os.fdopen(fd, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if _pathless(e):
      raise with_path(e, path) from e
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


# ---- checked manifests: one format of artifact folder (prompt exports, libraries, the data cache) ----

MANIFEST = "manifest.json"


def text_lines(path: str | os.PathLike, shown: str | os.PathLike | None = None) -> Iterator[tuple[int, str]]:
  """(line number, line) of the text file `path`, decoded as UTF-8 one line at a time, so that a byte
  that is not UTF-8 is refused naming `shown` (default `path`), the line and the column, instead of
  Python's "'utf-8' codec can't decode byte 0xe9 in position 33" with no file.

  Raises:
    FileNotFoundError: no such file (named). ValueError: a line that is not UTF-8.
  """
  shown = shown or path
  try:
    f = open(path, "rb")
  except FileNotFoundError:
    raise FileNotFoundError(f"{shown} does not exist") from None
  with f:
    for line_no, raw in enumerate(f, start=1):
      try:
        yield line_no, raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{shown}: line {line_no} is not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                         f"{len(raw[:e.start].decode('utf-8', 'replace')) + 1}); save the file as UTF-8.") from None


def read_json(path: str | os.PathLike, what: str = "") -> Any:
  """The JSON in `path`; a file that does not parse is refused naming it, the line and the column."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{what + ' ' if what else ''}{os.fspath(path)} is not valid JSON ({e.msg} at line "
                     f"{e.lineno} column {e.colno}).") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{what + ' ' if what else ''}{os.fspath(path)} is not UTF-8 text ({e.reason}).") from None


def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
  """Writes `directory`/manifest.json atomically (last: a folder with a manifest has all its files)."""
  write_json(os.path.join(directory, MANIFEST), manifest, indent=1, sort_keys=True)


def listed_file(directory: str | os.PathLike, relative: str, what: str) -> str:
  """The path of a file the manifest of `directory` lists; FileNotFoundError naming both if absent."""
  path = os.path.join(directory, relative)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} {os.fspath(directory)} is missing {relative}, which its {MANIFEST} "
                            "lists.")
  return path


def read_manifest(directory: str | os.PathLike, what: str, *, required: Sequence[str] = (),
                  kind: str | None = None, format_version: int | None = None,
                  rebuild: str = "Rebuild it.") -> dict:
  """The checked manifest of an artifact folder.

  Args:
    directory: the folder; its manifest.json was written last, after every file it lists.
    what: the artifact's name for messages ("Library", "Prompt export", ...).
    required: keys the manifest must have. kind / format_version: the values it must record.
    rebuild: what the user does when the kind or version is not this reader's.

  Raises:
    FileNotFoundError: the folder or its manifest is missing. ValueError: the manifest does not parse,
      lacks keys, or is of another kind or version (each message names the manifest file).
  """
  directory = os.fspath(directory)
  path = os.path.join(directory, MANIFEST)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{what} directory {directory} does not exist.")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} {directory} has no {MANIFEST}.")
  manifest = read_json(path, f"{what} manifest")
  if not isinstance(manifest, dict):
    raise ValueError(f"{what} manifest {path} holds a JSON {type(manifest).__name__}, not an object.")
  missing = [k for k in required if k not in manifest]
  if missing:
    raise ValueError(f"{what} manifest {path} lacks the keys {missing}.")
  if kind is not None and manifest.get("kind") != kind:
    raise ValueError(f"{what} manifest {path} is of kind {manifest.get('kind')!r}, not {kind!r}.")
  if format_version is not None and manifest.get("format_version") != format_version:
    raise ValueError(f"{what} manifest {path} has format version {manifest.get('format_version')}; this "
                     f"reader reads version {format_version}. {rebuild}")
  return manifest


def check_listed_file(directory: str | os.PathLike, relative: str, sha256: str | None, what: str, *,
                      verify: bool = True) -> str:
  """`listed_file`, and (with `verify`) its sha256 compared with the manifest's."""
  path = listed_file(directory, relative, what)
  if verify:
    actual = sha256_file(path)
    if actual != sha256:
      raise ValueError(f"{what} file {relative} in {os.fspath(directory)} is corrupted: sha256 "
                       f"{actual[:16]}... differs from the manifest's {str(sha256)[:16]}....")
  return path


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
_renameat2_fn = None


def _renameat2():
  """libc's `renameat2` (glibc >= 2.28 on Linux), or None."""
  global _renameat2_fn
  if _renameat2_fn is None:
    fn = False
    if sys.platform.startswith("linux"):
      try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", False)
      except OSError:
        fn = False
      if fn:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
    _renameat2_fn = fn
  return _renameat2_fn or None


def _rename_exchange(a: str | os.PathLike, b: str | os.PathLike) -> None:
  """Swaps the names `a` and `b` in one step (`renameat2(..., RENAME_EXCHANGE)`).

  Raises OSError; ENOSYS where the call is missing, EINVAL where the file system cannot exchange.
  """
  fn = _renameat2()
  if fn is None:
    raise OSError(errno.ENOSYS, "renameat2 is not available", os.fspath(a))
  if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


# Folders this process is swapping right now: `recover_directory` leaves their markers alone.
_swapping: set[str] = set()
_swapping_lock = threading.Lock()


def _marker(final: pathlib.Path) -> pathlib.Path:
  return final.parent / f".{final.name}.swap"


def _relative(path: pathlib.Path, parent: pathlib.Path) -> str:
  return path.name if path.parent == parent else os.fspath(path)


def _pid_alive(pid: int) -> bool:
  """Whether a process of this host with that pid is running."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _writer_alive(record: dict) -> bool:
  """Whether the process that wrote a swap marker may still be swapping."""
  pid = record.get("pid")
  if record.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
    return False  # another host cannot be asked; this process's own swaps are in `_swapping`
  return _pid_alive(pid)


LOCK_FILE = ".rospr.lock"


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike, command: str) -> Iterator[None]:
  """Holds `<directory>/.rospr.lock` (its holder's command, host, pid and start time) while a run
  writes into `directory`, so that a second run into the same folder is refused instead of mixing
  its files in. A lock whose holder is gone (same host, pid not running) is taken over, with a
  warning; a lock of another host is never taken over (its holder cannot be asked).
  """
  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, LOCK_FILE)
  me = {"command": command, "host": socket.gethostname(), "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, file_mode())
      break
    except FileExistsError:
      try:
        with open(path, encoding="utf-8") as f:
          holder = json.load(f)
      except (OSError, ValueError):
        holder = {}
      pid = holder.get("pid")
      if holder.get("host") == me["host"] and isinstance(pid, int) and pid != me["pid"] and not _pid_alive(pid):
        logging.warning("Taking over the stale lock %s of %s (pid %d is not running).", path,
                        holder.get("command"), pid)
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
        continue
      raise FileExistsError(
          f"{directory} is in use by {holder.get('command', 'another run')} (pid {pid} on "
          f"{holder.get('host')}, since {holder.get('started')}); wait for it to end, or delete {path} "
          "if that run is gone.") from None
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(me, f)
  try:
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


def recover_directory(final: str | os.PathLike) -> None:
  """Finishes or undoes a swap of `final` that a killed writer left half-way (see `replace_directory`).

  Does nothing without a marker `.<name>.swap` beside `final`, or while its writer is alive. With
  `final` missing, the new folder is renamed into place, or, when it is gone, the old one back;
  with `final` present, the leftovers are removed. Then the marker goes. Readers call this before
  opening a folder; writers call it before replacing one.
  """
  final = pathlib.Path(os.path.abspath(os.fspath(final)))
  marker = _marker(final)
  if not marker.is_file():
    return
  with _swapping_lock:  # held throughout, so that no swap of this process starts meanwhile
    if os.fspath(final) not in _swapping:
      _recover(final, marker)


def _read_marker(marker: pathlib.Path, required: dict[str, type] | None = None) -> dict | None:
  """The record of a swap marker; an unreadable one (or one without the `required` keys of their
  types) is removed with a warning, and gives None."""
  required = required or {}
  try:
    record = json.loads(marker.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in required.items()):
      keys = ", ".join(f"{k} ({t.__name__})" for k, t in required.items())
      raise ValueError(f"not a JSON object{' with ' + keys if keys else ''}")
  except (OSError, ValueError) as e:
    logging.warning("Removing the unreadable swap marker %s (%s).", marker, e)
    marker.unlink(missing_ok=True)
    return None
  return record


def _recover(final: pathlib.Path, marker: pathlib.Path) -> None:
  record = _read_marker(marker)
  if record is None:
    return
  old = final.parent / str(record["old"]) if record.get("old") else None
  new = final.parent / str(record["new"]) if record.get("new") else None
  if _writer_alive(record):
    return
  if old is not None and not old.name.startswith(f".{final.name}.old-"):
    old = None  # only ever touch names replace_directory made
  if not final.exists():
    if new is not None and new.is_dir():
      os.replace(new, final)
      logging.warning("%s: finished an interrupted swap (moved the new folder %s into place).",
                      final, new.name)
    elif old is not None and old.is_dir():
      os.replace(old, final)
      logging.warning("%s: undid an interrupted swap (moved the old folder %s back).", final, old.name)
    else:
      logging.warning("%s: an interrupted swap left neither the new nor the old folder.", final)
  else:
    if new is not None and new.is_dir():
      logging.warning("%s: an interrupted swap never started; removing the new folder %s.",
                      final, new.name)
      shutil.rmtree(new, ignore_errors=True)
    if old is not None and old.exists():
      logging.warning("%s: removing the old folder %s left by an interrupted swap.", final, old.name)
  if old is not None and old.exists():
    shutil.rmtree(old, ignore_errors=True)
  marker.unlink(missing_ok=True)


def replace_directory(tmp: str | os.PathLike, final: str | os.PathLike, *, replace: bool) -> None:
  """Renames the finished folder `tmp` to `final`.

  An empty `final` is taken over; a non-empty one is refused unless `replace`, in which case the two
  are exchanged in one step (Linux `renameat2(RENAME_EXCHANGE)`) and the old one, now at `tmp`,
  removed. Where the exchange is not available, the old folder is moved aside and the new one
  renamed into place, with a marker `.<name>.swap` beside `final` so that `recover_directory`
  can finish or undo a swap killed between the two renames.
  """
  tmp = pathlib.Path(os.path.abspath(os.fspath(tmp)))
  final = pathlib.Path(os.path.abspath(os.fspath(final)))
  recover_directory(final)
  os.chmod(tmp, dir_mode())
  if final.exists():
    if not final.is_dir():
      raise FileExistsError(f"{final} exists and is not a directory.")
    if any(final.iterdir()):
      if not replace:
        raise FileExistsError(f"{final} already exists and is not empty.")
      with _swapping_lock:
        _swapping.add(os.fspath(final))
      try:
        _swap(tmp, final)
      finally:
        with _swapping_lock:
          _swapping.discard(os.fspath(final))
      return
  os.replace(tmp, final)


def _swap(tmp: pathlib.Path, final: pathlib.Path) -> None:
  try:
    _rename_exchange(tmp, final)
  except OSError as e:
    if e.errno not in _NO_EXCHANGE:
      raise
  else:
    shutil.rmtree(tmp, ignore_errors=True)  # the old folder
    return
  old = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
  old.rmdir()
  marker = _marker(final)
  write_json(marker, {"final": final.name, "old": old.name, "new": _relative(tmp, final.parent),
                      "pid": os.getpid(), "host": socket.gethostname()})
  try:
    os.replace(final, old)
  except BaseException:
    marker.unlink(missing_ok=True)
    raise
  try:
    os.replace(tmp, final)
  except BaseException:
    try:  # put the old folder back; if even that fails, the marker lets recover_directory do it
      os.replace(old, final)
    except BaseException:
      logging.warning("%s: could not move the old folder %s back; recover_directory(%r) will.",
                      final, old.name, os.fspath(final))
    else:
      marker.unlink(missing_ok=True)
    raise
  shutil.rmtree(old, ignore_errors=True)
  marker.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, replace: bool = False) -> Iterator[pathlib.Path]:
  """Yields a temporary folder beside `final` that becomes `final` when the block succeeds (see
  `replace_directory`); on error it is removed and `final` is untouched."""
  final = pathlib.Path(os.path.abspath(os.fspath(final)))
  recover_directory(final)
  if final.exists() and not replace and (not final.is_dir() or any(final.iterdir())):
    raise FileExistsError(f"{final} already exists and is not an empty directory; "
                          "choose a new destination.")
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=tmp_prefix(final.name), dir=final.parent))
  try:
    yield tmp
    replace_directory(tmp, final, replace=replace)
  except OSError as e:
    if _pathless(e):
      raise with_path(e, final) from e
    raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)


def _marked_names(directory: str) -> set[str]:
  """Names the swap markers in `directory` still need (a swap's new folder, a unit's files)."""
  names = set()
  for entry in os.listdir(directory):
    if entry.startswith(".") and entry.endswith(".swap"):
      try:
        with open(os.path.join(directory, entry), encoding="utf-8") as f:
          record = json.load(f)
        names.update(str(record[k]) for k in ("new", "old", "tmp") if record.get(k))
      except (OSError, ValueError, TypeError, AttributeError):
        continue
  return names


def remove_leftovers(directory: str | os.PathLike, *, names: Sequence[str] | None = None,
                     recursive: bool = False) -> list[str]:
  """Removes the temporaries that killed writers left in `directory` and says so (one warning
  naming each); returns their paths.

  Only names this module made (`tmp_prefix`: `.<name>.tmp-<host>-<pid>-*`) whose writer is provably
  gone are touched: same host, pid not running, not this process. With `names`, only temporaries of
  those names; with `recursive`, in every folder below too. A name a swap marker still needs is left
  to `recover_directory` / `recover_files`.
  """
  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    return []
  host, me = _host_tag(), os.getpid()
  removed = []
  for folder, subdirs, files in os.walk(directory):
    needed = _marked_names(folder)
    for entry in list(subdirs) + files:
      match = _TMP_NAME.match(entry)
      if (not match or entry in needed or (names is not None and match["name"] not in names)
          or match["host"] != host or int(match["pid"]) == me or _pid_alive(int(match["pid"]))):
        continue
      path = os.path.join(folder, entry)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
      removed.append(path)
    subdirs[:] = [d for d in subdirs if recursive and os.path.join(folder, d) not in removed]
  if removed:
    logging.warning("Removed %d leftovers of interrupted runs (their writers are gone): %s",
                    len(removed), ", ".join(removed))
  return removed


def _files_marker(directory: pathlib.Path, unit: str) -> pathlib.Path:
  return directory / f".{unit}.swap"


def _move_files(directory: pathlib.Path, record: dict) -> None:
  """Moves a unit's files from its temporary folder into `directory` and removes the unit's names it
  no longer has; safe to repeat (a name already moved is not in the folder any more)."""
  tmp = directory / record["tmp"]
  for name in record["files"]:
    if (tmp / name).exists():
      os.replace(tmp / name, directory / name)
  for name in record["remove"]:
    with contextlib.suppress(FileNotFoundError):
      os.remove(directory / name)


def recover_files(directory: str | os.PathLike, unit: str) -> None:
  """Finishes moving a unit of files (`atomic_files`) that a killed writer left half-way: the files
  were complete before the first one moved, so the move is rolled forward."""
  directory = pathlib.Path(os.path.abspath(os.fspath(directory)))
  marker = _files_marker(directory, unit)
  if not marker.is_file():
    return
  record = _read_marker(marker, required={"tmp": str, "files": list, "remove": list})
  if record is None:
    return
  tmp = directory / record["tmp"]
  if _writer_alive(record):
    return
  _move_files(directory, record)
  logging.warning("%s: finished moving in the %s files %s that an interrupted run left half-way.",
                  directory, unit, record["files"])
  shutil.rmtree(tmp, ignore_errors=True)
  marker.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(directory: str | os.PathLike, unit: str, names: Sequence[str]) -> Iterator[pathlib.Path]:
  """Yields a temporary folder inside `directory`; the files the block writes there (some of `names`,
  no others) replace `directory/<name>` together when it succeeds, and the names of `names` it did
  not write are removed, so `directory` never holds files of two different writes of the unit.

  Nothing in `directory` changes before the block has written every file (a full disk stops it with
  the old files in place). The files are then moved in under a marker `.<unit>.swap`; a writer killed
  while moving them is finished by `recover_files(directory, unit)`, which the next write calls
  first (and a reader should: `rospr_jax.eval.report.recover_report`).
  """
  directory = pathlib.Path(os.path.abspath(os.fspath(directory)))
  directory.mkdir(parents=True, exist_ok=True)
  recover_files(directory, unit)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=tmp_prefix(unit), dir=directory))
  marker = _files_marker(directory, unit)
  moving = False
  try:
    yield tmp
    written = sorted(os.listdir(tmp))
    unexpected = sorted(set(written) - set(names))
    if unexpected:
      raise ValueError(f"{directory}: {unexpected} are not files of the {unit} unit {list(names)}.")
    record = {"unit": unit, "tmp": tmp.name, "files": written,
              "remove": [n for n in names if n not in written],
              "pid": os.getpid(), "host": socket.gethostname()}
    write_json(marker, record)
    moving = True  # from here on, the marker and the folder finish the move if this one fails
    _move_files(directory, record)
    marker.unlink(missing_ok=True)
    moving = False
  except OSError as e:
    if _pathless(e):
      raise with_path(e, directory / unit) from e
    raise
  finally:
    if tmp.exists() and not moving:
      shutil.rmtree(tmp, ignore_errors=True)

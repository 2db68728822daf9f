"""Run folders (MODEL_DIR, OUTPUT_DIR): claimed by a marker naming their kind and resumed only by the
same command (`claim_run_folder`), held by one run at a time (`run_lock`, a `filelock`), and swept of
the temporaries that killed writers left (`remove_leftovers`). Part of `rospr_jax.storage`, which
re-exports these names."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
from typing import Iterator, Sequence

from rospr_jax import storage
from rospr_jax.storage import PathLike


def claim_run_folder(directory: PathLike, command: str, what: str, *, mark: bool = True) -> None:
  """Makes `directory` the run folder of a `rospr COMMAND` run (flag or macro `what`): an absent or
  empty folder receives the marker `.rospr_run.json` naming its kind; a folder holding that marker of
  the same kind is resumed; anything else (a user's files, another command's run, a file, a link, the
  working folder) is refused before any work, naming `what`. Without `mark`, only checks."""
  kind = run_kind(command)
  lock_files = (storage.LOCK_FILE, storage.LOCK_FILE + ".json")
  target = storage.writable_folder(directory, what, ignore=lock_files)
  if target is None:
    if mark:
      storage.write_json(storage.as_path(directory, what, output=True) / storage.RUN_MARKER, {"kind": kind})
    return
  found = storage.recorded_kind(target / storage.RUN_MARKER)
  if found != kind:
    raise FileExistsError(
        f"{what} {os.fspath(directory)} holds files that are not a {kind} ({storage.folder_listing(target)}"
        f"{'; it is a ' + found if found else ''}); a run resumes only its own folder: give a new or empty "
        "one.")


def run_kind(command: str) -> str:
  """The kind a `rospr COMMAND` run folder's marker records: `train-prompts` -> `rospr_train_prompts_run`."""
  return f"rospr_{command.replace('-', '_')}_run"


@contextlib.contextmanager
def run_lock(directory: PathLike, command: str, what: str) -> Iterator[None]:
  """Holds `<directory>/.rospr.lock` (a `filelock.FileLock`, released by the kernel if the holder dies)
  while a run writes into the local folder `directory`, so a second run into it is refused naming the
  holder, once `claim_run_folder` has accepted the folder (`what` names its flag or macro). An object
  store has no lock that epath can take atomically (GCS's `ifGenerationMatch=0` is not reachable
  through epath): a run folder at a URL is not locked, and two runs must not write one URL; orbax
  still never tears a checkpoint, and records are single objects."""
  if storage.is_url(directory):
    claim_run_folder(directory, command, what)
    yield
    return
  claim_run_folder(directory, command, what, mark=False)  # refused before the lock file is made
  import filelock  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(os.fspath(directory).removeprefix("file://"))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, storage.LOCK_FILE)
  holder = path + ".json"
  if os.path.isdir(path):  # was: "[Errno 21] Is a directory"
    raise FileExistsError(f"{path} is a folder, where {command} keeps the lock file of the run in {directory}; "
                          "move that folder away (rospr never writes one there).")
  lock = filelock.FileLock(path, timeout=0)
  try:
    lock.acquire()
  except filelock.Timeout:
    try:
      who = storage.read_json(holder)
    except (OSError, ValueError):
      who = {}
    raise FileExistsError(f"{directory} is in use by {who.get('command', 'another run')} (pid "
                          f"{who.get('pid')} on {who.get('host')}, since {who.get('started')}); wait for it "
                          "to end.") from None
  try:
    claim_run_folder(directory, command, what)
    storage.write_json(holder, {"command": command, "host": socket.gethostname(), "pid": os.getpid(),
                        "started": __import__("time").strftime("%Y-%m-%dT%H:%M:%S%z")})
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(holder)
    lock.release()


_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_leftovers(directory: PathLike, *, names: Sequence[str] | None = None,
                     recursive: bool = False) -> list[str]:
  """Removes the temporaries (`storage.tmp_prefix`) that killed writers of this host left in the local folder
  `directory` (of `names` only, when given; below it too with `recursive`), one warning naming them;
  returns their paths. A temporary whose writer is alive, or of another host, is left alone."""
  if storage.is_url(directory) or not os.path.isdir(directory):
    return []
  me, host = os.getpid(), storage.tmp_prefix("x").split("-")[1]
  removed = []
  for folder, subdirs, files in os.walk(os.path.abspath(os.fspath(directory))):
    for entry in subdirs + files:
      match = _TMP_NAME.match(entry)
      if (not match or (names is not None and match["name"] not in names) or match["host"] != host
          or int(match["pid"]) == me or _alive(int(match["pid"]))):
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
    logging.warning("Removed %d leftovers of interrupted runs (their writers are gone): %s", len(removed),
                    ", ".join(removed))
  return removed

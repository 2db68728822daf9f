"""Where artifacts live, and the one rule by which every file and folder of the project is written.

A path is a local (or mounted) path or an object-store URL (`gs://bucket/run`, `s3://...`), one
`etils.epath.Path` either way (`as_path`); `file://X` is the local path X. Bucket URLs go through fsspec
with gcsfs and s3fs (`backend`), in production and in the tests alike. Schemes whose objects do not
outlive the process (`memory://`) are refused for outputs, and any other scheme, a missing driver or an
unreachable bucket is refused naming the flag or setting that gave it.

**The storage rule.** A file is written whole: locally into a temporary sibling renamed into place, on
an object store as one object (an object write is atomic there). A folder artifact (a prompt export, a
library, a converted checkpoint, the demo's output) is committed by its `manifest.json`, written last,
which lists its files with their sha256 (one type, `Manifest`, for every kind; its kind's `ManifestKind.read`
checks the manifest and those files on read):
`output_folder` yields a temporary folder beside it, and locally renames the finished folder into place;
on an object store it uploads the files and then the manifest (there is no rename). A command writes
only a new or empty folder, or replaces an artifact of its own kind (its manifest's `kind`) when told
to (`--overwrite`); anything else at the destination is the user's and is refused before any work, as
are links, the working folder and folders holding an input or inside one (`check_destination`). A local replace
renames the old folder aside and the new one into place; on an object store the old manifest is first
replaced by one marking the folder incomplete, so a replace killed half-way leaves a folder that
readers refuse and the next writer of that kind replaces. Run folders are claimed by a marker naming
their kind (`claim_run_folder`) and resumed only by the same command. Run folders (MODEL_DIR, OUTPUT_DIR) are used in place: orbax commits each
checkpoint itself and every record is one file; one run at a time holds a local run folder (`run_lock`,
a `filelock`). Temporary names carry their writer's host and pid, so `remove_leftovers` removes those of
killed writers only. Inputs at URLs that compute code must open as local files (a library's ScaNN
index, a checkpoint) are read through checked copies under `$ROSPR_REMOTE_CACHE` (`copies.local_copy`),
made at the edge of each command; everything else is read where it is.
"""

from __future__ import annotations

import os
import re

from etils import epath

from rospr_jax.storage import backend

backend.use_fsspec()

Path = epath.Path
PathLike = str | os.PathLike
MANIFEST = "manifest.json"
LOCK_FILE = ".rospr.lock"
INCOMPLETE = "incomplete"  # a manifest's mark of an object-store folder being replaced (`_decommit`)
RUN_MARKER = ".rospr_run.json"  # a run folder's kind (`claim_run_folder`)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EPHEMERAL = ("memory://",)


def cache_root() -> str:
  """The cache root every part of the package shares: `$ROSPR_CACHE`, else `~/.cache/rospr_jax`."""
  return os.environ.get("ROSPR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rospr_jax")


def is_url(path: PathLike | None) -> bool:
  """Whether `path` names an object store (`gs://b/run`), not a local or mounted path."""
  return path is not None and bool(_URL.match(os.fspath(path))) and not os.fspath(path).startswith("file://")


def as_path(path: PathLike, what: str = "path", *, output: bool = False) -> Path:
  """`path` as an epath.Path (`file://X` is the local X; a bucket URL goes through `backend`'s
  fsspec drivers); `output` refuses schemes that do not persist.

  Raises:
    ValueError naming `what` (the flag or setting): a scheme other than gs:// and s3://, a missing
    driver or a bucket out of reach (`backend.check_bucket`), or `memory://` as output.
  """
  text = os.fspath(path)
  if text.startswith("file://"):
    text = text[len("file://"):] or "/"
  if output and text.startswith(_EPHEMERAL):
    raise ValueError(f"{what} {text}: {text.split('://')[0]}:// objects vanish when the process ends; "
                     "give a local path or a bucket (gs://, s3://).")
  if is_url(text):
    backend.check_bucket(text, what)
  return Path(text)


def absolute(path: PathLike | None) -> str | None:
  """What records and messages name: a URL as given, a local copy of one by that URL
  (`copies.LocalCopy`), a local path made absolute (None stays None)."""
  if path is None:
    return None
  if getattr(path, "origin", None):
    return path.origin
  return os.fspath(path) if is_url(path) else os.path.abspath(os.fspath(path).removeprefix("file://"))


def require_local(path: PathLike | None, setting: str, reader: str) -> None:
  """Refuses a URL given to `reader`, which opens local files only: the commands and the run files
  hand it a local copy, made at their edge (`copies.local_copy`); `setting` names what gave the URL."""
  if is_url(path):
    raise ValueError(f"{reader} reads local files; {setting} {os.fspath(path)} is a URL: give it through "
                     f"the {setting} setting of a command or run file, or pass storage.copies.local_copy().")


# Files written whole and read with named errors (`files.py`), manifests (`manifests.py`), destinations
# and commits of folder artifacts (`folders.py`), run folders (claimed by their kind, locked, swept of
# killed writers' leftovers: `runs.py`).
# pylint: disable=g-import-not-at-top,wrong-import-position
from rospr_jax.storage.files import (atomic_file, decode_line, load_npy, read_json, save_npy, sha256_file,
                                     text_lines, tmp_prefix, umask, with_path, write_bytes, write_json,
                                     write_text)
from rospr_jax.storage.manifests import FACTS_KEY, Manifest, ManifestKind, facts_sha256
from rospr_jax.storage.folders import (check_destination, commit_folder, folder_listing, listing, new_folder,
                                       output_folder, recorded_kind, writable_folder)
from rospr_jax.storage.runs import claim_run_folder, remove_leftovers, run_kind, run_lock

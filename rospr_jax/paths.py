"""Paths this package reads and writes: local (or mounted) paths, and folders and files at URLs.

The compute core reads and writes local folders through `os` and numpy (atomic renames, locks). A
folder may also live at a URL (`gs://bucket/lib`, `s3://...`, `memory://...`: any scheme fsspec has a
driver for; gcsfs for gs://), published with a commit marker written last:

- `output_directory`: a one-shot output folder (a library, a selection, a converted checkpoint),
  staged locally and published when the command succeeds (`output_file`: one object, uploaded whole);
- `run_directory`: a resumable run folder (MODEL_DIR, OUTPUT_DIR), worked on in a local copy that
  follows the URL and is published after each checkpoint or record;
- `input_directory` / `fetch_directory`, `input_file` / `fetch_input_args`, `input_tree`: checked
  local copies of published folders, of single objects (data files, vocabularies) and of folders
  other tools wrote (checkpoints).

Flags outside this layer (`--shard-dir`) are refused as URLs where the command starts
(`require_local_args`), before any work, with mount advice (`run_tpu.sh --mount BUCKET`, or `gcsfuse
--implicit-dirs BUCKET /gcs/BUCKET`). (SeqIO's vocabularies and TFDS read through `tf.io.gfile`.)
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
from typing import Callable, Iterator


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
# What tells one version of an object from another in fsspec's `info` (GCS, S3, local, memory).
_VERSION_KEYS = ("generation", "md5Hash", "ETag", "etag", "LastModified", "mtime", "created")


def cache_root() -> str:
  """The cache root every part of the package shares: `$ROSPR_CACHE`, else `~/.cache/rospr_jax`."""
  return os.environ.get("ROSPR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rospr_jax")


def is_url(path: str | os.PathLike | None) -> bool:
  """Whether `path` is a URL (`gs://bucket/run`, `memory://x`), not a local or mounted path."""
  return path is not None and bool(_URL.match(os.fspath(path)))


def _filesystem(url: str, what: str = ""):
  """(fsspec file system, path inside it) for `url`; a scheme with no installed driver is named, with
  `what` (the flag or setting that gave the URL)."""
  import fsspec  # pylint: disable=g-import-not-at-top
  try:
    fs, path = fsspec.core.url_to_fs(url)
  except (ImportError, ValueError) as e:
    scheme = url.split("://", 1)[0]
    named = f"{what} {url}" if what else url
    raise ValueError(f"{named}: no file system for {scheme}:// ({e}); install its fsspec driver (gcsfs "
                     f"for gs://, s3fs for s3://) or mount the bucket.") from e
  from fsspec.implementations.local import LocalFileSystem  # pylint: disable=g-import-not-at-top
  if isinstance(fs, LocalFileSystem) and not fs.auto_mkdir:  # file:// as an object store: no folders
    fs = LocalFileSystem(auto_mkdir=True)
  return fs, path


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _file_fact(path: str) -> dict:
  """{"size", "sha256"} of the local file `path`, read in 1 MiB pieces."""
  digest, size = hashlib.sha256(), 0
  with open(path, "rb") as f:
    for piece in iter(lambda: f.read(1 << 20), b""):
      digest.update(piece)
      size += len(piece)
  return {"size": size, "sha256": digest.hexdigest()}


def _marker_files(record: object) -> dict:
  files = record["files"] if isinstance(record, dict) else None
  if not isinstance(files, dict) or not all(
      isinstance(f, dict) and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)
      for f in files.values()):
    raise TypeError("files is not an object of {name: {size, sha256}}")
  return files


def _commit_record(url: str, what: str) -> dict | None:
  fs, root = _filesystem(url, what)
  marker = f"{root.rstrip('/')}/{COMMIT_MARKER}"
  if not fs.exists(marker):
    return None
  try:
    record = json.loads(fs.cat_file(marker))
    _marker_files(record)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{what} {url}: its commit marker {COMMIT_MARKER} is damaged ({e}); publish the "
                     f"folder again.") from e
  return record


def _committed_ancestor(url: str, what: str) -> tuple[str, str, dict] | None:
  """(folder URL, path of `url` inside it, marker) of the nearest folder at or above `url` that holds a
  commit marker (`gs://b/run/export` is read through `gs://b/run`'s), or None."""
  scheme, rest = url.rstrip("/").split("://", 1)
  parts = rest.split("/")
  lowest = 2 if parts[0] == "" else 1  # file:///tmp/x stops at file:///tmp, never at the root or cwd
  for cut in range(len(parts), lowest - 1, -1):
    folder = f"{scheme}://{'/'.join(parts[:cut])}"
    record = _commit_record(folder, what)
    if record is not None:
      return folder, "/".join(parts[cut:]), record
  return None


def is_committed(url: str, what: str = "folder") -> bool:
  """Whether the folder at `url` has a commit marker (it was published whole)."""
  return _commit_record(url, what) is not None


def _is_scratch(name: str) -> bool:
  """Whether a file or folder name is a writer's scratch, never published: the run lock, the
  temporaries and swap markers of `artifacts` (`.<name>.tmp-*`, `.<name>.swap`), partial downloads
  (`*.part-<pid>`) and orbax's unfinished checkpoints. Other dot names (zarr's `.zarray`) are data."""
  return (name == ".rospr.lock" or ".part-" in name or ".orbax-checkpoint-tmp" in name
          or (name.startswith(".") and (".tmp-" in name or name.endswith(".swap"))))


def _publishable(local: str) -> Iterator[tuple[str, str]]:
  """(relative name, path) of the files a publish uploads: all but writers' scratch (`_is_scratch`)."""
  for directory, folders, names in os.walk(local):
    folders[:] = sorted(d for d in folders if not _is_scratch(d))
    for name in sorted(names):
      if not _is_scratch(name) and name != COMMIT_MARKER:
        path = os.path.join(directory, name)
        yield os.path.relpath(path, local).replace(os.sep, "/"), path


def _put_whole(fs, data: bytes | None, local: str | None, remote: str) -> None:
  """Writes one object whole: `data` (or the local file `local`) to `remote`. An object store writes
  an object atomically; on a local file system (file://) it is written beside and renamed in place."""
  from fsspec.implementations.local import LocalFileSystem  # pylint: disable=g-import-not-at-top
  if isinstance(fs, LocalFileSystem):
    target = fs._strip_protocol(remote)  # pylint: disable=protected-access
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.part-{os.getpid()}"
    try:
      if data is None:
        shutil.copyfile(local, tmp)
      else:
        with open(tmp, "wb") as f:
          f.write(data)
      os.replace(tmp, target)
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
  elif data is None:
    fs.put_file(local, remote)
  else:
    fs.pipe_file(remote, data)


def _write_marker(fs, root: str, files: dict, partial: bool = False) -> None:
  record = {"files": files, **({"partial": True} if partial else {})}
  _put_whole(fs, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"), None,
             f"{root}/{COMMIT_MARKER}")


def publish_directory(local: str | os.PathLike, url: str, *, replace: bool) -> int:
  """Uploads the local folder `local` to `url`, its commit marker last; returns the objects uploaded.

  A committed folder at `url` is refused unless `replace`. With `replace` only objects whose size or
  sha256 differ from the old marker's are uploaded (a run folder published after each checkpoint sends
  only what is new). Before any object that the old marker lists is overwritten or removed, the marker
  is rewritten `partial`, listing only the objects that stay: readers (`fetch_directory`) refuse it
  rather than read a mix, and a run resumed from it (`run_directory`) keeps exactly what it lists.
  """
  fs, root = _filesystem(url)
  root = root.rstrip("/")
  try:
    old = _commit_record(url, "folder")
  except ValueError:  # a damaged marker: with `replace`, published again from scratch
    if not replace:
      raise
    logging.warning("%s: its commit marker is damaged; publishing the folder again whole.", url)
    old = {"files": {}, "partial": True}
  if old is not None and not replace:
    raise FileExistsError(f"{url} already holds a published folder; pass the command's overwrite "
                          f"flag to replace it.")
  local_paths = dict(_publishable(os.fspath(local)))
  files = {relative: _file_fact(path) for relative, path in local_paths.items()}
  previous = old["files"] if old is not None else {}
  if old is not None and files == previous and not old.get("partial"):
    return 0  # already published as it is
  kept = {name: fact for name, fact in previous.items() if files.get(name) == fact}
  if old is not None and kept != previous:
    _write_marker(fs, root, kept, partial=True)
  uploads = [name for name in files if name not in kept]
  for name in uploads:  # streamed: a checkpoint is never held in memory whole
    fs.put_file(local_paths[name], f"{root}/{name}")
  for stale in sorted(set(previous) - set(files)):  # only what this folder published: never others'
    with contextlib.suppress(FileNotFoundError):
      fs.rm_file(f"{root}/{stale}")
  _write_marker(fs, root, files)
  logging.info("published %s to %s (%d of %d files uploaded)", local, url, len(uploads), len(files))
  return len(uploads)


def _download(fs, root: str, url: str, what: str, relative: str, fact: dict, target: str) -> None:
  """Copies object `relative` of the folder at `url` to the local file `target`, checked against its
  marker entry `fact`."""
  parts = relative.split("/")
  if relative.startswith("/") or ".." in parts or "" in parts or "." in parts or relative == COMMIT_MARKER:
    raise ValueError(f"{what} {url}: {COMMIT_MARKER} lists {relative!r}, not a name inside the "
                     f"folder; publish the folder again.")
  os.makedirs(os.path.dirname(target), exist_ok=True)
  partial = f"{target}.part-{os.getpid()}"
  try:
    try:
      fs.get_file(f"{root}/{relative}", partial)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"{what} {url}: {relative}, listed in {COMMIT_MARKER}, is missing; "
                              f"a writer is replacing the folder or it was damaged.") from e
    if _file_fact(partial) != {"size": fact["size"], "sha256": fact["sha256"]}:
      raise ValueError(f"{what} {url}: {relative} does not match {COMMIT_MARKER} (size or sha256); "
                       f"a writer is replacing the folder or it was damaged.")
    os.replace(partial, target)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(partial)


_DEAD_COPY = re.compile(r"(?:^\..*\.tmp-|\.part-)(\d+)(?:-|$)")


def _remove_dead_copies(directory: str) -> None:
  """Removes what copies killed on this machine left in `directory` (`.<name>.tmp-<pid>-*` folders,
  `*.part-<pid>` files) once their pid is gone; the cache is one machine's, so a pid names a process."""
  with contextlib.suppress(FileNotFoundError):
    for name in os.listdir(directory):
      match = _DEAD_COPY.search(name)
      if not match or int(match.group(1)) == os.getpid():
        continue
      try:
        os.kill(int(match.group(1)), 0)
        continue  # its writer is alive
      except ProcessLookupError:
        pass
      except PermissionError:
        continue
      path = os.path.join(directory, name)
      logging.warning("removing %s, left by a copy that was killed", path)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)


def _copies_root() -> str:
  return os.environ.get("ROSPR_REMOTE_CACHE") or os.path.join(cache_root(), "remote")


def fetch_directory(url: str, what: str) -> str:
  """A local copy of the published folder at `url`, checked object by object against its marker.

  `url` may also be a folder inside a published one (`gs://b/run/export`, read through the marker of
  `gs://b/run`). Copies live under `$ROSPR_REMOTE_CACHE` (default `$ROSPR_CACHE/remote`) as `<sha256
  of url>/<marker sha256>`; one whose marker matches is reused. Raises FileNotFoundError naming `what`
  when no folder at or above `url` has a commit marker, or its marker says a writer is replacing it.
  """
  found = _committed_ancestor(url, what)
  if found is None:
    raise FileNotFoundError(f"{what} {url} has no commit marker {COMMIT_MARKER}: it was never "
                            f"published, or its writer stopped mid-upload; write it again.")
  folder, inside, record = found
  if record.get("partial"):
    raise FileNotFoundError(f"{what} {url}: the commit marker of {folder} is partial: a writer is "
                            f"replacing the folder, or stopped while it did; read it once it is published.")
  prefix = f"{inside}/" if inside else ""
  listed = {name[len(prefix):]: fact for name, fact in record["files"].items() if name.startswith(prefix)}
  if not listed:
    raise FileNotFoundError(f"{what} {url}: the published folder {folder} holds nothing under {inside!r}.")
  fs, root = _filesystem(folder)
  root = root.rstrip("/")
  key = _sha256(json.dumps(record, sort_keys=True).encode("utf-8"))
  copy = os.path.join(_copies_root(), _sha256(_canonical(url).encode("utf-8"))[:16], key[:16])

  def fill(tmp: str) -> None:
    for relative, fact in sorted(listed.items()):
      _download(fs, root, url, what, prefix + relative, fact, os.path.join(tmp, *relative.split("/")))
    with open(os.path.join(tmp, COMMIT_MARKER), "w", encoding="utf-8") as f:
      json.dump({"files": listed}, f, sort_keys=True)

  return _local_copy(copy, fill)


def _stamp(folder: str) -> dict[str, list[int]]:
  """{relative name: [size, mtime_ns]} of every entry under `folder` (links not followed)."""
  out = {}
  for base, _, names in os.walk(folder):
    for name in names:
      st = os.lstat(os.path.join(base, name))
      out[os.path.relpath(os.path.join(base, name), folder).replace(os.sep, "/")] = [st.st_size, st.st_mtime_ns]
  return out


def _copy_damage(copy: str) -> str | None:
  """What changed in the local copy `copy` since it was filled (a file edited, truncated, removed or
  added), or None. Cheap: sizes and modification times against the stamp `<copy>.stamp.json` written
  beside it when it was made (not inside: readers list a copy's files)."""
  try:
    with open(copy + ".stamp.json", encoding="utf-8") as f:
      recorded = json.load(f)
    now = _stamp(copy)
  except (OSError, ValueError) as e:
    return f"its record of what was copied is missing or unreadable ({type(e).__name__})"
  if not isinstance(recorded, dict):
    return "its record of what was copied is not a JSON object"
  changed = sorted(set(recorded) ^ set(now) | {k for k in set(recorded) & set(now) if recorded[k] != now[k]})
  return f"{', '.join(changed[:3])} changed since it was copied" if changed else None


@contextlib.contextmanager
def _copy_lock(copy: str) -> Iterator[None]:
  """Held while a copy is checked, dropped, filled, renamed and stamped, so that a reader never takes a
  copy another reader is still stamping for a damaged one (the stamp is written after the rename)."""
  import fcntl  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(copy), exist_ok=True)
  with open(copy + ".lock", "a", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def _local_copy(copy: str, fill: Callable[[str], None]) -> str:
  """`copy` when it exists and is as it was filled (it is only ever renamed into place whole); else
  `fill(tmp)` writes a temporary sibling folder that is renamed to `copy` (what killed copies left is
  removed first). A copy changed since (a file edited, truncated or removed by hand or by a full disk)
  is dropped and fetched again from its intact source, with a line saying so. The check of an intact
  copy takes no lock; anything else is done under `_copy_lock`, the copy checked again first."""
  if os.path.isdir(copy) and _copy_damage(copy) is None:
    return copy
  with _copy_lock(copy):
    if os.path.isdir(copy):
      damage = _copy_damage(copy)
      if damage is None:  # another reader finished (or stamped) it meanwhile
        return copy
      logging.warning("The local copy %s is damaged (%s); fetching it again from its source.", copy, damage)
      shutil.rmtree(copy, ignore_errors=True)
    _remove_dead_copies(os.path.dirname(copy))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(copy)}.tmp-{os.getpid()}-", dir=os.path.dirname(copy))
    try:
      fill(tmp)
      stamp = _stamp(tmp)  # a rename keeps sizes and modification times
      os.chmod(tmp, 0o777 & ~_umask())
      os.rename(tmp, copy)  # whole or absent (under the lock no other copy can appear meanwhile)
      part = f"{copy}.stamp.json.part-{os.getpid()}"
      with open(part, "w", encoding="utf-8") as f:
        json.dump(stamp, f, sort_keys=True)
      os.replace(part, copy + ".stamp.json")  # a copy killed before its stamp is fetched again
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return copy


def _canonical(url: str) -> str:
  """`url` spelled one way (`gs://b//run/` is `gs://b/run`): what keys local copies and locks."""
  scheme, rest = url.split("://", 1)
  return f"{scheme.lower()}://{re.sub('/+', '/', rest).rstrip('/')}"


def _version(info: dict) -> dict:
  """An object's size and version (fsspec `info`): what tells one state of it from another."""
  return {"size": int(info["size"]), **{k: str(info[k]) for k in _VERSION_KEYS if info.get(k) is not None}}


def _listing(fs, root: str) -> dict[str, dict]:
  """{relative name: `_version`} of every object under `root`."""
  try:
    found = fs.find(root, detail=True)
  except FileNotFoundError:
    found = {}
  listing = {}
  for name, info in found.items():
    name = name if "://" not in name else name.split("://", 1)[1]
    relative = name[len(root) + 1:] if name.startswith(root + "/") else None
    if relative and info.get("type", "file") == "file":
      listing[relative] = _version(info)
  return listing


def input_file(path: str, what: str) -> str:
  """`path` itself when local; for a URL (`gs://b/data/copa.jsonl`) a local copy of that one object (an
  object is written whole, so a plain file needs no commit marker), under `$ROSPR_REMOTE_CACHE/files`,
  keyed by the object's size and version: read again only once it changes."""
  if not is_url(path):
    return path
  fs, inner = _filesystem(path, what)
  try:
    info = fs.info(inner)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{what} {path} does not exist (no such object).") from e
  if info.get("type", "file") != "file":
    raise FileNotFoundError(f"{what} {path} is a folder, not a file.")
  version = _version(info)
  key = _sha256(json.dumps(version, sort_keys=True).encode("utf-8"))
  target_dir = os.path.join(_copies_root(), "files", _sha256(_canonical(path).encode("utf-8"))[:16], key[:16])
  target = os.path.join(target_dir, path.rstrip("/").rsplit("/", 1)[1])
  if os.path.isfile(target):
    if os.path.getsize(target) == version["size"]:
      return target
    logging.warning("The local copy %s of %s is damaged (%d bytes, the object has %d); fetching it again.",
                    target, path, os.path.getsize(target), version["size"])
  os.makedirs(target_dir, exist_ok=True)
  _remove_dead_copies(target_dir)
  tmp = f"{target}.part-{os.getpid()}"
  try:
    try:
      fs.get_file(inner, tmp)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"{what} {path} does not exist (no such object).") from e
    if os.path.getsize(tmp) != version["size"] or _version(fs.info(inner)) != version:
      raise ValueError(f"{what} {path} changed while it was copied; try again once its writer is done.")
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
  return target


def fetch_input_args(args: argparse.Namespace, dests: tuple[str, ...]) -> None:
  """Replaces each URL among the file arguments `dests` of `args` (a `NAME=URL` value after its `=`)
  with a local copy (`input_file`), naming the flag when the object is missing."""
  def local(value: str, flag: str) -> str:
    name, sep, rest = value.partition("=") if "=" in value and not _URL.match(value) else ("", "", value)
    return name + sep + input_file(rest, flag)
  for dest in dests:
    value, flag = getattr(args, dest, None), f"--{dest.replace('_', '-')}"
    if isinstance(value, str):
      setattr(args, dest, local(value, flag))
    elif isinstance(value, list):
      setattr(args, dest, [local(v, flag) if isinstance(v, str) else v for v in value])


def input_tree(path: str, what: str) -> str:
  """`path` itself when local; for a URL a local copy of every object under it: a checkpoint or a data
  folder that another tool wrote (gsutil, a Hugging Face download), which has no commit marker. A
  folder at or inside a published one goes through `fetch_directory` (checked against its marker);
  any other is copied as listed, keyed by the listing (names, sizes and the store's object versions),
  each object's size checked against it, so a changed object makes a new copy. Copies live under
  `$ROSPR_REMOTE_CACHE/trees`."""
  if not is_url(path):
    return path
  if _committed_ancestor(path, what) is not None:
    return fetch_directory(path, what)
  fs, root = _filesystem(path, what)
  root = root.rstrip("/")
  listing = _listing(fs, root)
  if not listing:
    raise FileNotFoundError(f"{what} {path}: no such folder (no objects under it).")
  key = _sha256(json.dumps(listing, sort_keys=True).encode("utf-8"))
  copy = os.path.join(_copies_root(), "trees", _sha256(_canonical(path).encode("utf-8"))[:16], key[:16])

  def fill(tmp: str) -> None:
    for relative, fact in sorted(listing.items()):
      if ".." in relative.split("/"):
        raise ValueError(f"{what} {path}: the object name {relative!r} leaves the folder.")
      target = os.path.join(tmp, *relative.split("/"))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      fs.get_file(f"{root}/{relative}", target)
      if os.path.getsize(target) != fact["size"]:
        raise ValueError(f"{what} {path}: {relative} changed while it was copied; try again once "
                         f"its writer is done.")
    if _listing(fs, root) != listing:  # an object rewritten meanwhile (same size or not)
      raise ValueError(f"{what} {path} changed while it was copied; try again once its writer is done.")
    logging.info("%s %s: copied %d objects to %s", what, path, len(listing), copy)

  return _local_copy(copy, fill)


def input_directory(path: str, what: str) -> str:
  """`path` itself when local; else a checked local copy of the published folder (`fetch_directory`)."""
  return fetch_directory(path, what) if is_url(path) else path


@contextlib.contextmanager
def output_directory(path: str, what: str, *, replace: bool = False, publish: bool = True,
                     overwrite_flag: str | None = "--overwrite") -> Iterator[str]:
  """Yields where a command writes the folder `path`: `path` itself when local; for a URL a fresh local
  staging folder, published to `path` when the block succeeds (`publish=False`, on processes that do
  not write, skips it). A committed folder at the URL is refused before any work unless `replace`
  (the refusal names `overwrite_flag`, the command's flag that sets it, if it has one)."""
  if not is_url(path):
    yield path
    return
  _filesystem(path, what)  # a scheme with no driver here is refused before any work
  if not replace and is_committed(path, what):
    hint = f"pass {overwrite_flag} to replace it" if overwrite_flag else "give another URL"
    raise FileExistsError(f"{what} {path} already holds a published folder; {hint}.")
  with tempfile.TemporaryDirectory(prefix=".rospr-staging-") as staging:
    local = os.path.join(staging, "out")
    yield local
    if publish and os.path.isdir(local):
      publish_directory(local, path, replace=replace)


@contextlib.contextmanager
def output_file(path: str, what: str) -> Iterator[str]:
  """Yields where a command writes the file `path`: `path` itself when local; for a URL a local file,
  uploaded whole to `path` when the block succeeds (an object is never seen half-written)."""
  if not is_url(path):
    yield path
    return
  fs, inner = _filesystem(path, what)
  with tempfile.TemporaryDirectory(prefix=".rospr-staging-") as staging:
    local = os.path.join(staging, path.rstrip("/").rsplit("/", 1)[1])
    yield local
    _put_whole(fs, None, local, inner)


class RunFolder:
  """Where a resumable run (train-prompts' MODEL_DIR, evaluate's OUTPUT_DIR) works: `local` is the
  folder itself, or for a URL a local working copy that `publish()` uploads, only what changed since
  the last publish (the command calls it after each checkpoint or record; `run_directory` once more at
  the end)."""

  def __init__(self, path: str, local: str, publishes: bool):
    self.path, self.local, self._publishes = path, local, publishes

  def publish(self) -> None:
    if self._publishes:
      publish_directory(self.local, self.path, replace=True)


def _mirror(url: str, local: str, what: str) -> int:
  """Makes `local` hold exactly what the marker at `url` lists (nothing when there is none), fetching
  only the objects that differ; returns how many it fetched."""
  try:
    record = _commit_record(url, what)
  except ValueError as e:  # a damaged marker: nothing it lists can be trusted; the run starts over
    logging.warning("%s; this run starts over and publishes the folder again.", e)
    record = None
  listed = record["files"] if record is not None else {}
  if record is not None and record.get("partial"):
    logging.warning("%s %s: its writer stopped while publishing; resuming from the %d files its "
                    "partial marker lists.", what, url, len(listed))
  for relative, path in list(_publishable(local)):
    if relative not in listed:
      os.remove(path)
  for directory, _, _ in sorted(os.walk(local), reverse=True):  # a step folder emptied above goes too
    if directory != local and not os.listdir(directory):
      os.rmdir(directory)
  fs, root = _filesystem(url, what)
  fetched = 0
  for relative, fact in sorted(listed.items()):
    target = os.path.join(local, *relative.split("/"))
    if os.path.isfile(target) and _file_fact(target) == {"size": fact["size"], "sha256": fact["sha256"]}:
      continue
    _download(fs, root.rstrip("/"), url, what, relative, fact, target)
    fetched += 1
  return fetched


@contextlib.contextmanager
def run_directory(path: str, what: str, *, writes: bool = True) -> Iterator[RunFolder]:
  """Yields the `RunFolder` of the run folder `path`.

  A local `path` is used as it is. For a URL the working copy is `$ROSPR_REMOTE_CACHE/runs/<sha256 of
  url>`, made to match what `path` has published (so a run on a fresh machine resumes from the last
  checkpoint or record published), held by this run alone on this machine (an object store has no
  locks: two machines must not run into one URL), and published once more when the block ends, also
  when it raises (what a failed run finished is kept for its rerun). `writes=False` (processes other
  than 0) gives a private empty folder and publishes nothing.
  """
  if not is_url(path):
    yield RunFolder(path, path, publishes=False)
    return
  if not writes:
    with tempfile.TemporaryDirectory(prefix=".rospr-run-") as scratch:
      yield RunFolder(path, scratch, publishes=False)
    return
  import fcntl  # pylint: disable=g-import-not-at-top
  local = os.path.join(_copies_root(), "runs", _sha256(_canonical(path).encode("utf-8"))[:16])
  os.makedirs(local, exist_ok=True)
  with open(local + ".lock", "a", encoding="utf-8") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise FileExistsError(f"{what} {path}: its working copy {local} is in use by another run on this "
                            f"machine; wait for it to end.") from e
    fetched = _mirror(path, local, what)
    if fetched:
      logging.info("%s %s: fetched %d published files into %s to resume.", what, path, fetched, local)
    folder = RunFolder(path, local, publishes=True)
    try:
      yield folder
    except BaseException:
      try:
        folder.publish()
      except Exception:  # noqa: BLE001 - the run's own error is the one to report
        logging.exception("%s %s: publishing what the failed run finished failed too.", what, path)
      raise
    folder.publish()

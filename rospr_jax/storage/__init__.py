"""Where artifacts live, and the one rule by which every file and folder of the project is written.

A path is a local (or mounted) path or an object-store URL (`gs://bucket/run`, `s3://...`), one
`etils.epath.Path` either way (`as_path`); `file://X` is the local path X. Schemes whose objects do not
outlive the process (`memory://`) are refused for outputs, and any scheme epath has no driver for is
refused naming the flag or setting that gave it.

**The storage rule.** A file is written whole: locally into a temporary sibling renamed into place, on
an object store as one object (an object write is atomic there). A folder artifact (a prompt export, a
library, a converted checkpoint, the demo's output) is committed by its `manifest.json`, written last,
which lists its files with their sha256 (`read_manifest` / `check_listed_file` check them on read):
`output_folder` yields a temporary folder beside it, and locally renames the finished folder into place;
on an object store it uploads the files and then the manifest (there is no rename). A command writes
only a new or empty folder, or replaces an artifact of its own kind (its manifest's `kind`) when told
to (`--overwrite`); anything else at the destination is the user's and is refused before any work, as
are links, the working folder and folders holding an input (`check_destination`). A local replace
renames the old folder aside and the new one into place; on an object store the old manifest is first
replaced by one marking the folder incomplete, so a replace killed half-way leaves a folder that
readers refuse and the next writer of that kind replaces. Run folders are claimed by a marker naming
their kind (`claim_run_folder`) and resumed only by the same command. Run folders (MODEL_DIR, OUTPUT_DIR) are used in place: orbax commits each
checkpoint itself and every record is one file; one run at a time holds a local run folder (`run_lock`,
a `filelock`). Temporary names carry their writer's host and pid, so `remove_leftovers` removes those of
killed writers only. Inputs at URLs that compute code must open as local files (a library's ScaNN
index, a checkpoint) are read through checked copies under `$ROSPR_REMOTE_CACHE` (`local_copy`).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from typing import IO, Any, Iterator, Sequence

from etils import epath
import numpy as np

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
  """`path` as an epath.Path (`file://X` is the local X); `output` refuses schemes that do not persist.

  Raises:
    ValueError naming `what` (the flag or setting): a scheme with no driver, or `memory://` as output.
  """
  text = os.fspath(path)
  if text.startswith("file://"):
    text = text[len("file://"):] or "/"
  if output and text.startswith(_EPHEMERAL):
    raise ValueError(f"{what} {text}: {text.split('://')[0]}:// objects vanish when the process ends; "
                     "give a local path or a bucket (gs://, s3://).")
  try:
    return Path(text)
  except (KeyError, NotImplementedError) as e:
    raise ValueError(f"{what} {text}: no driver for {text.split('://')[0]}:// here; give a local path, "
                     "gs:// (gcsfs) or s3:// (s3fs), or mount the bucket.") from e


def require_local_args(args: argparse.Namespace, flags: dict[str, str] | None = None, *,
                       urls: tuple[str, ...] = ()) -> None:
  """Refuses the URLs among a command's string arguments but those whose dest is in `urls` (a
  `NAME=FILE` value is checked after the `=`), naming the flag (`flags` maps a dest to the flag typed)
  and how to mount the bucket: these files are opened by code that reads local files only."""
  for name, value in vars(args).items():
    for item in value if isinstance(value, (list, tuple)) and name not in urls else [value]:
      if not isinstance(item, str) or name in urls:
        continue
      text = item.split("=", 1)[1] if "=" in item and not _URL.match(item) else item
      if is_url(text):
        bucket, rest = text.split("://", 1)[1].split("/", 1)[0], text.split("://", 1)[1]
        flag = (flags or {}).get(name, f"--{name.replace('_', '-')}")
        raise ValueError(f"{flag} {text!r} is a URL; this flag reads local or mounted paths. Mount the "
                         f"bucket (run_tpu.sh --mount {bucket}, or gcsfuse --implicit-dirs {bucket} "
                         f"/gcs/{bucket}) and pass /gcs/{rest}.")


# --- Writing files whole -----------------------------------------------------------------------------


def umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def tmp_prefix(name: str) -> str:
  """This process's temporary names for `name`: `.<name>.tmp-<host>-<pid>-` (see `remove_leftovers`)."""
  host = hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]
  return f".{name}.tmp-{host}-{os.getpid()}-"


def with_path(e: OSError, path: PathLike) -> OSError:
  """`e` naming `path` when it names no file itself (a full disk: `[Errno 28] ... : 'run/x.json'`)."""
  if not isinstance(e, OSError) or e.errno is None or e.filename is not None:
    return e
  return type(e)(e.errno, e.strerror or os.strerror(e.errno), os.fspath(path))


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
  """A file object whose contents become `path` whole when the block succeeds, or never."""
  if is_url(path):
    buffer = io.StringIO() if "b" not in mode else io.BytesIO()
    yield buffer
    data = buffer.getvalue()
    as_path(path, output=True).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return
  path = os.path.abspath(os.fspath(path).removeprefix("file://"))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(os.path.basename(path)), dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~umask())  # as `open` would, not tempfile's 0600: teammates read runs
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, OSError) and with_path(e, path) is not e:
      raise with_path(e, path) from e
    raise


def write_bytes(path: PathLike, data: bytes) -> None:
  with atomic_file(path, "wb") as f:
    f.write(data)


def write_text(path: PathLike, text: str) -> None:
  """Writes `text` as UTF-8, whole."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, payload: Any, **dumps_kwargs) -> None:
  """Writes `payload` as JSON (strict: NaN and infinities are refused), whole."""
  write_text(path, json.dumps(payload, allow_nan=False, **dumps_kwargs) + "\n")


def save_npy(path: PathLike, array) -> None:
  """Saves an array in .npy format (no pickles), whole."""
  with atomic_file(path, "wb") as f:
    np.save(f, np.asarray(array), allow_pickle=False)


def load_npy(path: PathLike, *, mmap: bool = False) -> np.ndarray:
  """The array in the .npy file `path` (memory-mapped when local and `mmap`); never unpickles."""
  if not is_url(path):
    return np.load(os.fspath(path), mmap_mode="r" if mmap else None, allow_pickle=False)
  return np.load(io.BytesIO(as_path(path).read_bytes()), allow_pickle=False)


def sha256_file(path: PathLike, chunk: int = 1 << 24) -> str:
  digest = hashlib.sha256()
  with as_path(path).open("rb") as f:
    while block := f.read(chunk):
      digest.update(block)
  return digest.hexdigest()


# --- Reading, with errors that name the file -----------------------------------------------------------


def text_lines(path: PathLike, shown: PathLike | None = None) -> Iterator[tuple[int, str]]:
  """(line number, line) of the UTF-8 text file `path`; a byte that is not UTF-8 is refused naming
  `shown` (default `path`), the line and the column.

  Raises:
    FileNotFoundError: no such file (named). ValueError: a line that is not UTF-8.
  """
  shown = shown or path
  try:
    f = as_path(path).open("rb")
  except FileNotFoundError:
    raise FileNotFoundError(f"{shown} does not exist") from None
  with f:
    for line_no, raw in enumerate(f, start=1):
      yield line_no, decode_line(raw, shown, line_no)


def decode_line(raw: bytes, shown: PathLike, line_no: int, *, cut: bool = False) -> str:
  """Line `line_no` of the file `shown` as text; a byte that is not UTF-8 is refused naming the file,
  the line and the column. With `cut` (the line's first bytes only), an incomplete last character is
  left out."""
  decoder = codecs.getincrementaldecoder("utf-8")()
  try:
    return decoder.decode(raw, final=not cut)
  except UnicodeDecodeError as e:
    raise ValueError(f"{shown}: line {line_no} is not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                     f"{len(raw[:e.start].decode('utf-8', 'replace')) + 1}); save the file as UTF-8.") from None


def read_json(path: PathLike, what: str = "") -> Any:
  """The JSON in `path`; one that does not parse is refused naming the file, the line and the column."""
  named = f"{what + ' ' if what else ''}{os.fspath(path)}"
  try:
    return json.loads(as_path(path).read_bytes().decode("utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{named} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}).") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{named} is not UTF-8 text ({e.reason}).") from None


# --- Folder artifacts: committed by manifest.json, written last ------------------------------------------


def write_manifest(directory: PathLike, manifest: dict) -> None:
  """Writes `directory`/manifest.json whole: the last file of a folder artifact, which commits it."""
  write_json(as_path(directory) / MANIFEST, manifest, indent=1, sort_keys=True)


FACTS_KEY = "facts_sha256"  # a manifest's digest of its own facts (`with_facts_sha256`)


def facts_sha256(manifest: dict) -> str:
  """sha256 of a manifest's facts: every key but FACTS_KEY, as JSON with sorted keys (of the facts as
  they read back from JSON: a tuple is a list, a number key a string, as in the written manifest)."""
  facts = json.loads(json.dumps({k: v for k, v in manifest.items() if k != FACTS_KEY}))
  return hashlib.sha256(json.dumps(facts, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


def with_facts_sha256(manifest: dict) -> dict:
  """`manifest` with the digest of its facts (FACTS_KEY), which `check_facts` compares on read: the
  sha256s of a manifest protect its files, this protects what it says (source names, a metric, ...)."""
  return {**manifest, FACTS_KEY: facts_sha256(manifest)}


def check_facts(manifest: dict, path: PathLike, what: str, rebuild: str) -> None:
  """Refuses a manifest whose facts differ from the digest it records (edited after it was written),
  naming it. A manifest without one (written before digests were recorded) passes."""
  recorded = manifest.get(FACTS_KEY)
  if recorded is not None and recorded != (got := facts_sha256(manifest)):
    raise ValueError(f"{what} manifest {os.fspath(path)} was edited after it was written: its facts have sha256 "
                     f"{got[:16]}..., not the {str(recorded)[:16]}... it records. {rebuild}")


def read_manifest(directory: PathLike, what: str, *, required: Sequence[str] = (), kind: str | None = None,
                  format_version: int | None = None, rebuild: str = "Rebuild it.") -> dict:
  """The checked manifest of the folder artifact `directory` (`what` names it in messages).

  Raises:
    FileNotFoundError: the folder or its manifest is missing (a folder without one was never
      committed). ValueError: the manifest does not parse, is of another `kind` (a manifest without
      one passes unless "kind" is `required`: artifacts written before kinds were recorded), lacks a
      `required` key, or is of another `format_version` (`rebuild` says what to do); each message names
      the manifest file.
  """
  folder = as_path(directory, what)
  path = folder / MANIFEST
  if not folder.is_dir():
    raise FileNotFoundError(f"{what} directory {directory} does not exist.")
  if not path.is_file():
    inner = sorted(p.parent.name for p in folder.glob(f"*/{MANIFEST}"))
    if inner:  # the parent of folder artifacts (a prompt export's checkpoint_<step>/, ...)
      raise FileNotFoundError(f"{what} {directory} has no {MANIFEST} of its own; it holds the folder "
                              f"artifacts {', '.join(inner[:3])}{', ...' if len(inner) > 3 else ''}: give "
                              f"the folder of a {what.lower()}.")
    raise FileNotFoundError(f"{what} {directory} has no {MANIFEST}: it was never completed (its writer "
                            "stopped, or is replacing it); write it again.")
  manifest = read_json(path, f"{what} manifest")
  if not isinstance(manifest, dict):
    raise ValueError(f"{what} manifest {path} holds a JSON {type(manifest).__name__}, not an object.")
  if manifest.get(INCOMPLETE):
    raise FileNotFoundError(f"{what} {directory} was never completed (its writer stopped while replacing "
                            "it); write it again.")
  found = manifest.get("kind")  # None: written before kinds were recorded, unless "kind" is required
  if kind is not None and found != kind and (found is not None or "kind" in required):
    raise ValueError(f"{directory} is not a {what.lower()}: its manifest {path} is of kind {found!r}, "
                     f"not {kind!r}.")
  missing = [k for k in required if k not in manifest]
  if missing:
    raise ValueError(f"{what} manifest {path} lacks the keys {missing}.")
  if format_version is not None and manifest.get("format_version") != format_version:
    raise ValueError(f"{what} manifest {path} has format version {manifest.get('format_version')}; this "
                     f"reader reads version {format_version}. {rebuild}")
  return manifest


def listed_file(directory: PathLike, relative: str, what: str) -> str:
  """The path of a file the manifest of `directory` lists; FileNotFoundError naming both if absent."""
  path = as_path(directory) / relative
  if not path.is_file():
    raise FileNotFoundError(f"{what} {os.fspath(directory)} is missing {relative}, which its {MANIFEST} lists.")
  return os.fspath(path)


def check_listed_file(directory: PathLike, relative: str, sha256: str | None, what: str, *,
                      verify: bool = True) -> str:
  """`listed_file`, and (with `verify`) its sha256 compared with the manifest's."""
  path = listed_file(directory, relative, what)
  if verify and (actual := sha256_file(path)) != sha256:
    raise ValueError(f"{what} file {relative} in {os.fspath(directory)} is corrupted: sha256 "
                     f"{actual[:16]}... differs from the manifest's {str(sha256)[:16]}....")
  return path


def _files_of(folder: str) -> list[str]:
  """Relative names of the files under the local `folder`, manifest last."""
  names = sorted(os.path.relpath(os.path.join(base, n), folder).replace(os.sep, "/")
                 for base, _, files in os.walk(folder) for n in files)
  return [n for n in names if n != MANIFEST] + [n for n in names if n == MANIFEST]


def _listing(folder: Path, limit: int = 3) -> str:
  """The first entries of `folder`, for a message: `a.txt, data, notes.md, ... (7 entries)`."""
  names = sorted(p.name for p in folder.iterdir())
  return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _contains(outer: str, inner: str) -> bool:
  """Whether the local path `inner` is `outer` or lies below it (both made real)."""
  outer, inner = os.path.realpath(outer), os.path.realpath(inner)
  return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _kind_in(path: Path) -> str | None:
  """The "kind" recorded in the JSON file `path` (a manifest, a run folder's marker); None if none."""
  try:
    recorded = read_json(path) if path.is_file() else None
  except (OSError, ValueError):
    return None
  return recorded.get("kind") if isinstance(recorded, dict) else None


def _writable_folder(final: PathLike, what: str, inputs: Sequence[PathLike | None] = (),
                     ignore: Sequence[str] = ()) -> Path | None:
  """`final` as a Path when it is a folder holding entries (but those named in `ignore`), None when
  it is absent or empty; refuses a symbolic link, the working folder or one above it, a folder that is
  or holds one of `inputs`, and a file, naming `what`."""
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
      if item is not None and not is_url(item) and _contains(local, os.fspath(item).removeprefix("file://")):
        raise ValueError(f"{what} {text} is or holds the input {os.fspath(item)}; give a new folder for the "
                         "output.")
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
  target = _writable_folder(final, what, inputs)
  if target is None:
    return
  found = _kind_in(target / MANIFEST)
  if found != kind:
    raise FileExistsError(f"{what} {os.fspath(final)} holds files that are not a {kind} ({_listing(target)}); "
                          "rospr replaces only its own artifacts: give a new or empty folder.")
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
  last (one listing every file's sha256, `kind` and `facts`, when the writer wrote none). Locally an
  older `final` is renamed aside (a temporary name of this process, which `remove_leftovers` sweeps if
  it is killed) and `tmp` renamed into place, so `final` is always the old artifact or the new one; at
  a URL the old folder is decommitted (its manifest removed first) and the files uploaded, the
  manifest last."""
  target = as_path(final, what, output=True)
  names = _files_of(tmp)
  if MANIFEST not in names:
    write_manifest(tmp, {"files": {n: sha256_file(os.path.join(tmp, n)) for n in names}, **(facts or {}),
                         "kind": kind})
    names.append(MANIFEST)
  os.chmod(tmp, 0o777 & ~umask())
  try:
    if not is_url(final):
      aside = None
      if os.path.lexists(target):
        aside = tempfile.mkdtemp(prefix=tmp_prefix(target.name), dir=os.fspath(target.parent))
        os.replace(target, aside)  # onto the empty folder just made: atomic
      os.replace(tmp, target)
      if aside:
        shutil.rmtree(aside, ignore_errors=True)
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


def absolute(path: PathLike | None) -> str | None:
  """What records and messages name: a URL as given, a local path made absolute (None stays None)."""
  if path is None:
    return None
  return os.fspath(path) if is_url(path) else os.path.abspath(os.fspath(path).removeprefix("file://"))


# --- Run folders: one run at a time; leftovers of killed writers -----------------------------------------


def claim_run_folder(directory: PathLike, command: str, what: str, *, mark: bool = True) -> None:
  """Makes `directory` the run folder of a `rospr COMMAND` run (flag or macro `what`): an absent or
  empty folder receives the marker `.rospr_run.json` naming its kind; a folder holding that marker of
  the same kind is resumed; anything else (a user's files, another command's run, a file, a link, the
  working folder) is refused before any work, naming `what`. Without `mark`, only checks."""
  kind = run_kind(command)
  target = _writable_folder(directory, what, ignore=(LOCK_FILE, LOCK_FILE + ".json"))
  if target is None:
    if mark:
      write_json(as_path(directory, what, output=True) / RUN_MARKER, {"kind": kind})
    return
  found = _kind_in(target / RUN_MARKER)
  if found != kind:
    raise FileExistsError(
        f"{what} {os.fspath(directory)} holds files that are not a {kind} ({_listing(target)}"
        f"{'; it is a ' + found if found else ''}); a run resumes only its own folder: give a new or empty one.")


def run_kind(command: str) -> str:
  """The kind a `rospr COMMAND` run folder's marker records: `train-prompts` -> `rospr_train_prompts_run`."""
  return f"rospr_{command.replace('-', '_')}_run"


@contextlib.contextmanager
def run_lock(directory: PathLike, command: str, what: str) -> Iterator[None]:
  """Holds `<directory>/.rospr.lock` (a `filelock.FileLock`, released by the kernel if the holder dies)
  while a run writes into the local folder `directory`, so a second run into it is refused naming the
  holder, once `claim_run_folder` has accepted the folder (`what` names its flag or macro). An object
  store has no lock that epath can take atomically (GCS's `ifGenerationMatch=0` is not reachable
  through tf.io.gfile or epath): a run folder at a URL is not locked, and two runs must not write one
  URL; orbax still never tears a checkpoint, and records are single objects."""
  if is_url(directory):
    claim_run_folder(directory, command, what)
    yield
    return
  claim_run_folder(directory, command, what, mark=False)  # refused before the lock file is made
  import filelock  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(os.fspath(directory).removeprefix("file://"))
  os.makedirs(directory, exist_ok=True)
  path, holder = os.path.join(directory, LOCK_FILE), os.path.join(directory, LOCK_FILE + ".json")
  if os.path.isdir(path):  # was: "[Errno 21] Is a directory"
    raise FileExistsError(f"{path} is a folder, where {command} keeps the lock file of the run in {directory}; "
                          "move that folder away (rospr never writes one there).")
  lock = filelock.FileLock(path, timeout=0)
  try:
    lock.acquire()
  except filelock.Timeout:
    try:
      who = read_json(holder)
    except (OSError, ValueError):
      who = {}
    raise FileExistsError(f"{directory} is in use by {who.get('command', 'another run')} (pid "
                          f"{who.get('pid')} on {who.get('host')}, since {who.get('started')}); wait for it "
                          "to end.") from None
  try:
    claim_run_folder(directory, command, what)
    write_json(holder, {"command": command, "host": socket.gethostname(), "pid": os.getpid(),
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
  """Removes the temporaries (`tmp_prefix`) that killed writers of this host left in the local folder
  `directory` (of `names` only, when given; below it too with `recursive`), one warning naming them;
  returns their paths. A temporary whose writer is alive, or of another host, is left alone."""
  if is_url(directory) or not os.path.isdir(directory):
    return []
  me, host = os.getpid(), tmp_prefix("x").split("-")[1]
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

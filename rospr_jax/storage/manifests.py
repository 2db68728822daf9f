"""Folder artifacts' manifests: one type, `Manifest`, that every kind of folder artifact writes (its
`manifest.json`, written last, commits the folder) and reads back through its `ManifestKind`, which
checks the folder, the manifest's kind, keys, format version and facts' digest, and the files it lists
(presence, sha256). Part of `rospr_jax.storage`, which re-exports these names."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Mapping

from rospr_jax.storage import INCOMPLETE, MANIFEST, Path, PathLike, as_path
from rospr_jax.storage.files import read_json, sha256_file, write_json

FACTS_KEY = "facts_sha256"  # a manifest's digest of its own facts (`facts_sha256`)
_OWN_KEYS = ("kind", "format_version", FACTS_KEY)  # the keys of a manifest that are not a kind's facts


def facts_sha256(record: Mapping[str, Any]) -> str:
  """sha256 of a manifest's facts: every key of its JSON `record` but FACTS_KEY, as JSON with sorted
  keys (of the facts as they read back from JSON: a tuple is a list, a number key a string)."""
  facts = json.loads(json.dumps({k: v for k, v in record.items() if k != FACTS_KEY}))
  return hashlib.sha256(json.dumps(facts, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Manifest:
  """The manifest of a folder artifact, as written to (and read from) its `manifest.json`.

  Attributes:
    kind: the artifact's kind ("rospr_library", ...; None in manifests written before kinds were).
    facts: what the kind records (a library's sources, shards, metric, ...): every key of the JSON but
      "kind", "format_version", FACTS_KEY and, unless the kind lists its files itself, "files".
    files: {path relative to the folder: sha256} of the files it lists under "files" (a kind that
      records its files within its facts, `ManifestKind.listed`, has none here).
    format_version: the kind's layout version, None for kinds without one.
  """

  kind: str | None
  facts: Mapping[str, Any]
  files: Mapping[str, str] = dataclasses.field(default_factory=dict)
  format_version: int | None = None

  def record(self) -> dict[str, Any]:
    """The JSON object of manifest.json: the facts, the files, kind and version, and the facts' digest."""
    clash = sorted(k for k in self.facts if k in _OWN_KEYS or (self.files and k == "files"))
    if clash:
      raise ValueError(f"A manifest's facts may not hold its own keys {clash}.")
    record = dict(self.facts)
    if self.files:
      record["files"] = dict(self.files)
    if self.kind is not None:
      record["kind"] = self.kind
    if self.format_version is not None:
      record["format_version"] = self.format_version
    return {**record, FACTS_KEY: facts_sha256(record)}

  def write(self, directory: PathLike) -> None:
    """Writes `directory`/manifest.json whole, the digest of its facts included: the last file of a
    folder artifact, which commits it (`folders.commit_folder` uploads it last)."""
    write_json(as_path(directory) / MANIFEST, self.record(), indent=1, sort_keys=True)


def _located(directory: PathLike, relative: str) -> tuple[Path, str]:
  """(the folder, the path in it) of a listed file; "../" leads out of `directory` (a prompt export's
  per-source files lie beside its table's folder)."""
  root = as_path(directory)
  while relative.startswith("../"):
    root, relative = root.parent, relative[3:]
  return root, relative


@dataclasses.dataclass(frozen=True)
class ManifestKind:
  """What one kind of folder artifact declares of its manifests; `read` checks one against it.

  Attributes:
    what: names the artifact in messages ("Library", "Prompt export", ...).
    kind: the "kind" its manifests record (None: any; a manifest without one passes unless "kind" is
      `required`: artifacts written before kinds were recorded).
    required: keys every manifest of it holds.
    format_version: the layout version this code reads and writes (None: unversioned).
    rebuild: what to do about a refused one ("Rebuild the library.").
    listed: {path relative to the folder: sha256} of the files from the facts, for a kind that records
      them there (None: the manifest's "files").
  """

  what: str
  kind: str | None = None
  required: tuple[str, ...] = ()
  format_version: int | None = None
  rebuild: str = "Rebuild it."
  listed: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None

  def manifest(self, facts: Mapping[str, Any], files: Mapping[str, str] | None = None) -> Manifest:
    """A manifest of this kind recording `facts` (and listing `files`), to `write`."""
    return Manifest(self.kind, dict(facts), dict(files or {}), self.format_version)

  def files(self, manifest: Manifest, directory: PathLike = "") -> dict[str, str]:
    """{relative path: sha256} of every file `manifest` (of `directory`) lists; a listing of another shape
    (a manifest edited, its digest recomputed or removed) is refused naming the manifest."""
    try:
      files = dict(self.listed(manifest.facts) if self.listed is not None else manifest.files)
      if all(isinstance(name, str) for name in files):
        return files
    except (AttributeError, KeyError, TypeError, ValueError):
      pass
    raise ValueError(f"{self.what} manifest {os.path.join(os.fspath(directory), MANIFEST)} does not list its files "
                     f"as a {self.what.lower()}'s manifest does. {self.rebuild}")

  def read(self, directory: PathLike, *, verify: bool = True) -> Manifest:
    """The checked manifest of the folder artifact `directory`.

    Args:
      directory: the artifact's folder (local or at a URL).
      verify: compare every listed file's sha256 with the manifest's (reads every byte once); without,
        listed files are only checked to exist.

    Raises:
      FileNotFoundError: the folder, its manifest or a listed file is missing (a folder without a
        manifest was never committed). ValueError: the manifest does not parse, is of another kind,
        lacks a required key, is of another format version, was edited after it was written (its facts
        differ from their digest), or a listed file differs from its sha256; each message names the
        manifest or the file, and says what to do (`rebuild`).
    """
    record = self._record(directory)
    path = os.path.join(os.fspath(directory), MANIFEST)
    self._check_record(record, directory, path)
    own_files = self.listed is None
    manifest = Manifest(record.get("kind"), {k: v for k, v in record.items()
                                             if k not in _OWN_KEYS and not (own_files and k == "files")},
                        record.get("files", {}) if own_files else {}, record.get("format_version"))
    for relative, sha256 in self.files(manifest, directory).items():
      self._check_file(directory, relative, sha256, verify)
    return manifest

  def verify(self, directory: PathLike, manifest: Manifest) -> None:
    """Compares every file `manifest` (read from `directory`) lists with its sha256: what `read` does
    with `verify`, for a reader that first checks the facts the caller expects, refusing a wrong
    artifact before it hashes every byte."""
    for relative, sha256 in self.files(manifest, directory).items():
      self._check_file(directory, relative, sha256, True)

  def _record(self, directory: PathLike) -> dict[str, Any]:
    """The JSON object of `directory`'s manifest; refuses a missing folder or manifest, one that does
    not parse or is not an object, and the mark of a replace that never completed."""
    what = self.what
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
    record = read_json(path, f"{what} manifest")
    if not isinstance(record, dict):
      raise ValueError(f"{what} manifest {path} holds a JSON {type(record).__name__}, not an object.")
    if record.get(INCOMPLETE):
      raise FileNotFoundError(f"{what} {directory} was never completed (its writer stopped while replacing "
                              "it); write it again.")
    return record

  def _check_record(self, record: dict[str, Any], directory: PathLike, path: str) -> None:
    """Refuses a manifest of another kind, without a required key, of another format version, or whose
    facts differ from the digest it records (a manifest without one, written before digests were
    recorded, passes)."""
    what, found = self.what, record.get("kind")
    if self.kind is not None and found != self.kind and (found is not None or "kind" in self.required):
      raise ValueError(f"{directory} is not a {what.lower()}: its manifest {path} is of kind {found!r}, "
                       f"not {self.kind!r}.")
    missing = [k for k in self.required if k not in record]
    if missing:
      raise ValueError(f"{what} manifest {path} lacks the keys {missing}.")
    if self.format_version is not None and record.get("format_version") != self.format_version:
      raise ValueError(f"{what} manifest {path} has format version {record.get('format_version')}; this "
                       f"reader reads version {self.format_version}. {self.rebuild}")
    recorded = record.get(FACTS_KEY)
    if recorded is not None and recorded != (got := facts_sha256(record)):
      raise ValueError(f"{what} manifest {path} was edited after it was written: its facts have sha256 "
                       f"{got[:16]}..., not the {str(recorded)[:16]}... it records. {self.rebuild}")

  def _check_file(self, directory: PathLike, relative: str, sha256: str | None, verify: bool) -> None:
    """Refuses a listed file that is missing or (with `verify`) differs from its sha256, naming it."""
    root, relative = _located(directory, relative)
    path = root / relative
    if not path.is_file():
      raise FileNotFoundError(f"{self.what} {os.fspath(root)} is missing {relative}, which its {MANIFEST} "
                              f"lists. {self.rebuild}")
    if verify and (actual := sha256_file(path)) != sha256:
      raise ValueError(f"{self.what} file {relative} in {os.fspath(root)} is corrupted: sha256 "
                       f"{actual[:16]}... differs from the manifest's {str(sha256)[:16]}.... {self.rebuild}")

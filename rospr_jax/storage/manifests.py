"""Folder artifacts' manifests: `manifest.json`, written last, commits a folder; its facts' digest and
its files' sha256s are checked on read. Part of `rospr_jax.storage`, which re-exports these names."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

from rospr_jax.storage import INCOMPLETE, MANIFEST, PathLike, as_path
from rospr_jax.storage.files import read_json, sha256_file, write_json


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

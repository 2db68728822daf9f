"""The promptsource and BIG-bench source archives: fetched once, checksummed, cached (`rospr fetch`).

Neither package is installed: promptsource 0.2.3 declares Python < 3.10 and bigbench 1.0.0 pulls heavy
dependencies. Their source archives are taken from the package index (the PEP 691 "simple" JSON API
that pip itself reads; `PIP_INDEX_URL` or `ROSPR_INDEX_URL` point elsewhere) and checked against the
sha256 pinned below. `pip download` is not used because pip refuses bigbench 1.0.0 (its metadata
declares a direct-URL dependency on bleurt) and would run each archive's setup.py.

Cache layout (root: `$ROSPR_CACHE`, default `~/.cache/rospr_jax`):

  archives/promptsource-0.2.3.tar.gz       the archive as published
  archives/t5-0.9.4-py2.py3-none-any.whl   the old t5 package (its rank-classification metric is a
                                           reference the tests compare with; never installed)
  promptsource-0.2.3/templates/<dataset>[/<subset>]/templates.yaml, templates.py, manifest.json
  bigbench/                                BIG-bench's store, from a source the user gives (see
                                           `rospr_jax.data.bigbench_sources`; not fetched here)

bigbench 1.0.0 is no longer served by the index: BIGBENCH below only pins the sdist a user may still
give as a BIG-bench source. Every file and folder is written under a temporary name and renamed.
Nothing here runs at import time; readers raise FileNotFoundError naming `rospr fetch` when the cache
is empty.
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
from typing import Callable, Iterator

from rospr_jax import storage

CACHE_KIND = "rospr_cache"  # the manifest's "kind" of a prepared cache folder
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
ARCHIVES = (PROMPTSOURCE, T5_WHEEL)  # what `rospr fetch` downloads (BIGBENCH is only a pin)

# A downloader writes the archive's bytes to the given path (tests pass a fake one).
Downloader = Callable[[ArchiveSpec, pathlib.Path], None]


def cache_dir() -> pathlib.Path:
  """The cache root: `$ROSPR_CACHE`, else `~/.cache/rospr_jax`."""
  return pathlib.Path(storage.cache_root())


def archive_path(spec: ArchiveSpec, cache: pathlib.Path | None = None) -> pathlib.Path:
  return (cache or cache_dir()) / "archives" / spec.filename


CACHE = storage.ManifestKind("Data cache", CACHE_KIND, required=("sha256",), rebuild="Run `rospr fetch`.")


@contextlib.contextmanager
def _staged_dir(final: pathlib.Path, facts: dict) -> Iterator[pathlib.Path]:
  """A temporary folder beside `final`; when the block ends without error, a manifest of `facts`
  listing every file is written into it and it replaces `final`. On error it is removed."""
  with storage.output_folder(final, "The cache folder", kind=CACHE_KIND, overwrite=True) as tmp:
    yield pathlib.Path(tmp)
    CACHE.manifest(facts, storage.listing(tmp)).write(tmp)


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
    if path.stat().st_size == spec.size and storage.sha256_file(path) == spec.sha256:
      return path
    print(f"rospr fetch: {path} does not match its pinned sha256; downloading it again", file=sys.stderr)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".partial", dir=path.parent)
  os.close(fd)
  tmp = pathlib.Path(tmp_name)
  try:
    (download or index_download)(spec, tmp)
    got = storage.sha256_file(tmp)
    if got != spec.sha256:
      raise ValueError(f"downloaded {spec.filename} has sha256 {got}, expected {spec.sha256}; "
                       "the cache was left unchanged")
    os.chmod(tmp, 0o666 & ~storage.umask())
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()
  return path


# ---------------------------------------------------------------------------------------------------
# promptsource: templates.yaml files (and templates.py, the reference implementation tests load).


def _manifest_ok(folder: pathlib.Path, spec: ArchiveSpec, verify: bool = False) -> bool:
  """Whether `folder` was extracted whole from `spec`'s archive (a cache: anything else is rebuilt):
  its manifest, and the files it lists (their sha256 too with `verify`)."""
  if not (folder / storage.MANIFEST).exists():
    return False
  try:
    manifest = CACHE.read(folder, verify=verify)
  except (FileNotFoundError, ValueError) as e:
    print(f"rospr fetch: {e} Extracting it again.", file=sys.stderr)
    return False
  return manifest.facts["sha256"] == spec.sha256


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
# BIG-bench: no longer served by the index. Its store (`<cache>/bigbench/`) is built from a source the
# user gives (a checkout, Hugging Face parquet, this sdist if kept, or GitHub) by
# `rospr_jax.data.bigbench_sources` (`bigbench_dir()`, `bigbench_configured()`, `build_store()`);
# BIGBENCH above is the pin that an sdist given as a source must match.


# ---------------------------------------------------------------------------------------------------
# `rospr fetch`.


def fetch_all(cache: pathlib.Path | None = None, download: Downloader | None = None,
              force: bool = False, log: Callable[[str], None] = print) -> dict[str, str]:
  """Fetches the archives and prepares their cached forms; does nothing that is already done (a prepared
  folder whose files differ from the sha256 its manifest lists is prepared again).

  Returns:
    {archive file name: sha256}.
  """
  cache = cache or cache_dir()
  cache.mkdir(parents=True, exist_ok=True)
  done = {}
  for spec, folder, build in ((PROMPTSOURCE, cache / PROMPTSOURCE.root, extract_promptsource),):
    start = time.time()
    path = fetch_archive(spec, cache, download)
    log(f"{spec.filename}: sha256 {spec.sha256} ok ({path})")
    if force or not _manifest_ok(folder, spec, verify=True):
      build(path, cache)
      log(f"  prepared {folder} in {time.time() - start:.0f} s")
    else:
      log(f"  {folder} is up to date")
    done[spec.filename] = spec.sha256
  path = fetch_archive(T5_WHEEL, cache, download)
  log(f"{T5_WHEEL.filename}: sha256 {T5_WHEEL.sha256} ok ({path}; the tests' reference metric)")
  done[T5_WHEEL.filename] = T5_WHEEL.sha256
  return done

"""The one backend for bucket URLs: fsspec, with gcsfs for gs:// and s3fs for s3://.

TensorFlow is installed (SeqIO, ScaNN), and then etils.epath sends gs:// and s3:// to tf.io.gfile,
which in TensorFlow 2.20 has no s3:// at all and no way to point gs:// at a local server. This module
chooses fsspec instead, for the whole process (`use_fsspec`: epath's own switch, `EPATH_USE_TF=false`),
so our paths, orbax's and TFDS's go through the same drivers: gcsfs's `GCSFileSystem` (named
explicitly, not gcsfs's experimental default) and s3fs's `S3FileSystem`. The drivers take their
endpoints and credentials from the usual places (Application Default Credentials, `AWS_*`); the tests
point them at local emulators (`STORAGE_EMULATOR_HOST`, `AWS_ENDPOINT_URL`) and run this same code.

A bucket path is checked the first time its bucket is used (`check_bucket`): a missing driver, or a
bucket the driver cannot reach (no network, no credentials), is refused in one line naming the flag.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from typing import Any, Iterator

DRIVERS = {"gs": ("gcsfs", "gcsfs.core.GCSFileSystem"), "s3": ("s3fs", "s3fs.S3FileSystem")}
_ALIASES = {"gcs": "gs"}  # fsspec's second name for GCS (epath asks for it)
_DRIVER_LOGGERS = ("gcsfs", "s3fs", "aiobotocore", "botocore", "google.auth")
_REACHED: set[tuple[str, str]] = set()


def use_fsspec() -> None:
  """Routes every epath path at a bucket in this process through fsspec and the drivers of `DRIVERS`."""
  os.environ["EPATH_USE_TF"] = "false"
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access  # read once, maybe before us
  import fsspec  # pylint: disable=g-import-not-at-top
  for scheme, (_, driver) in [*DRIVERS.items(), *((a, DRIVERS[s]) for a, s in _ALIASES.items())]:
    fsspec.register_implementation(scheme, driver, clobber=True)


def scheme_of(url: str) -> str:
  """`gs` for `gs://b/x`."""
  return url.split("://", 1)[0]


def filesystem(url: str) -> Any:
  """The fsspec filesystem that serves `url` (the one epath uses for it)."""
  import fsspec  # pylint: disable=g-import-not-at-top
  return fsspec.filesystem(scheme_of(url))


def require_driver(url: str, what: str) -> None:
  """Refuses, naming `what`, a scheme other than gs:// and s3://, or one whose driver is not installed."""
  scheme = scheme_of(url)
  if scheme not in DRIVERS:
    raise ValueError(f"{what} {url}: {scheme}:// is not served here; give a local or mounted path, a "
                     "gs:// or an s3:// URL.")
  module = DRIVERS[scheme][0]
  try:
    importlib.import_module(module)
  except ImportError as e:
    raise ValueError(f"{what} {url}: {scheme}:// needs the {module} package, which is not installed "
                     f"({e}); pip install {module}, or mount the bucket and give its local path.") from None


@contextlib.contextmanager
def _quiet_drivers() -> Iterator[None]:
  """The drivers' own retry logs (a traceback per retry) held back: the caller reports one line."""
  loggers = [logging.getLogger(name) for name in _DRIVER_LOGGERS]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL + 1)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def check_bucket(url: str, what: str) -> None:
  """Refuses `url` in one line naming `what` when its driver is missing or its bucket cannot be reached
  (no network, no credentials, no such bucket); a bucket reached once in this process is not asked
  again."""
  require_driver(url, what)
  bucket = url.split("://", 1)[1].split("/", 1)[0]
  if (scheme_of(url), bucket) in _REACHED:
    return
  try:
    with _quiet_drivers():
      filesystem(url).exists(url)
  except Exception as e:  # pylint: disable=broad-except  # each driver has its own errors
    reason = " ".join(str(e).split()) or type(e).__name__
    raise ValueError(f"{what} {url}: cannot reach the bucket through {DRIVERS[scheme_of(url)][0]} "
                     f"({type(e).__name__}: {reason}); check the network and the credentials, or mount "
                     "the bucket and give its local path.") from None
  _REACHED.add((scheme_of(url), bucket))


def listing(url: str) -> dict[str, list]:
  """{name: [size, version]} of the object `url` (its base name), or of every object under the folder
  `url` (names relative to it), in one listing; `version` changes when an object is rewritten (GCS's
  generation, S3's ETag). Empty when there is nothing at `url`."""
  fs = filesystem(url)
  root = fs._strip_protocol(url).rstrip("/")  # pylint: disable=protected-access
  found = fs.find(root, detail=True)
  out = {}
  for name, info in found.items():
    relative = os.path.basename(root) if name == root else name[len(root) + 1:]
    if info.get("type") != "directory" and (name == root or name.startswith(root + "/")):
      out[relative] = [int(info.get("size") or 0), str(_version(info))]
  return out


def _version(info: dict) -> Any:
  """What tells one write of an object from the next, in a driver's `info`."""
  for key in ("generation", "ETag", "etag", "md5Hash", "mtime", "LastModified"):
    if info.get(key) is not None:
      return info[key]
  return ""


def forget() -> None:
  """Drops the drivers' cached filesystems and the buckets reached: the next use reads the endpoints
  and credentials (`STORAGE_EMULATOR_HOST`, `AWS_*`) again."""
  from etils.epath import backend as epath_backend  # pylint: disable=g-import-not-at-top
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  for _, driver in DRIVERS.values():
    module, name = driver.rsplit(".", 1)
    with contextlib.suppress(ImportError):
      getattr(importlib.import_module(module), name).clear_instance_cache()
  _REACHED.clear()

"""One entry point for checkpoints: load either format, save either format, fingerprint.

  config, params = load_checkpoint("bigscience-T0_3B/")            # a Hugging Face directory
  config, params = load_checkpoint("gs-copy/t0_3b/", jnp.bfloat16)  # a T5X model or checkpoint_<step> dir
  save_hf("out/hf", config, params); save_t5x("out/t5x", config, params, step=0)

`params` is a nested dict of host numpy arrays with T5X names (docs/design.md, "The model");
`jax.device_put(params, shardings)` places them. The format readers live in `hf_checkpoint.py` and
`t5x_checkpoint.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from rospr_jax import artifacts, paths
from rospr_jax.model.config import T5Config
from rospr_jax.model.hf_checkpoint import CONFIG_FILE, hf_weight_files, load_hf, read_hf_config, save_hf
from rospr_jax.model.t5x_checkpoint import CHECKPOINT_FILE, load_t5x, resolve_checkpoint_file, save_t5x

__all__ = ["checkpoint_fingerprint", "detect_format", "load_checkpoint", "save_hf", "save_t5x"]

logger = logging.getLogger(__name__)

_CACHE_NAME = "checkpoint_sha256.json"
_CACHE_VERSION = 1
_CACHE_MAX_ENTRIES = 50_000
_STAT_FIELDS = ("size", "mtime_ns", "ctime_ns", "ino", "dev")
# A cached hash is trusted only for a file unchanged this long before it was hashed (see `_sha256`).
_RACY_NS = 2_000_000_000
_LOG_BYTES = 1_000_000_000  # Hashing a file larger than this is logged (about 2 s a GB).


def detect_format(path: str | os.PathLike) -> str:
  """"hf" for a directory with config.json, "t5x" for a T5X checkpoint (file, step dir or model dir)."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no such checkpoint.")
  if path.is_dir() and (path / CONFIG_FILE).is_file():
    return "hf"
  if path.is_file() and path.name != CHECKPOINT_FILE:
    raise ValueError(f"{path}: expected a checkpoint directory (Hugging Face: config.json + weights; "
                     f"T5X: checkpoint_<step>/{CHECKPOINT_FILE}), got a file.")
  resolve_checkpoint_file(path)  # Raises a clear error when this is no T5X checkpoint either.
  return "t5x"


def load_checkpoint(path: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[T5Config, dict[str, Any]]:
  """Loads a Hugging Face or T5X checkpoint, streaming tensors into place and casting them on the way.

  Args:
    path: a Hugging Face T5 directory, or a T5X checkpoint (`checkpoint` file, `checkpoint_<step>`
      directory, or the model directory holding them: the latest step is taken).
    dtype: dtype of the returned parameters (None keeps each stored dtype).

  Returns:
    (config with `param_dtype` set to `dtype` when given, nested dict of numpy arrays with T5X names).
  """
  path = paths.input_tree(os.fspath(path), "checkpoint")  # a URL: read from a local copy
  loader = load_hf if detect_format(path) == "hf" else load_t5x
  config, params = loader(path, dtype)
  if dtype is not None:
    config = config.replace(param_dtype=jnp.dtype(dtype) if isinstance(dtype, str) else dtype)
  return config, params


def _cache_file() -> Path:
  """The cache of full-file sha256s: `$ROSPR_CACHE/checkpoint_sha256.json` (default `~/.cache/rospr_jax`)."""
  return Path(paths.cache_root()) / _CACHE_NAME


def _read_cache(file: Path) -> dict[str, dict]:
  """The cache's entries, or {} when it is missing, unreadable or not what this module writes."""
  try:
    payload = json.loads(file.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return {}
  if not isinstance(payload, dict) or payload.get("version") != _CACHE_VERSION:
    return {}
  entries = payload.get("files")
  if not isinstance(entries, dict):
    return {}
  return {path: entry for path, entry in entries.items()
          if isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
          and all(isinstance(entry.get(k), int) for k in (*_STAT_FIELDS, "hashed_ns"))}


def _write_cache(file: Path, new: dict[str, dict]) -> None:
  """Merges `new` into the cache (re-read first, for other processes' entries); never raises."""
  try:
    entries = {**_read_cache(file), **new}
    if len(entries) > _CACHE_MAX_ENTRIES:  # The most recently hashed are kept.
      keep = sorted(entries, key=lambda p: entries[p]["hashed_ns"])[-_CACHE_MAX_ENTRIES:]
      entries = {p: entries[p] for p in keep}
    artifacts.write_json(file, {"version": _CACHE_VERSION, "files": entries}, sort_keys=True)
  except Exception as e:  # pylint: disable=broad-except  (the cache is an optimisation, never a failure)
    logger.debug("could not write the checkpoint hash cache %s: %s", file, e)


def _stat_key(st: os.stat_result) -> dict[str, int]:
  # ctime changes on every write (and on os.utime), and users cannot set it: an in-place edit that
  # keeps size and mtime still changes it. The inode and device catch a file replaced by another.
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
          "ino": st.st_ino, "dev": st.st_dev}


def _sha256(file: Path, cache: dict[str, dict], new: dict[str, dict]) -> tuple[int, str]:
  """The size and full sha256 of `file`, from `cache` when its entry still matches the file's stat.

  An entry is trusted only if the file had not changed for `_RACY_NS` when it was hashed: timestamps
  are coarser than the clock (a tick, or a second on some filesystems), so a write just after the
  hash could otherwise leave them as they were (git's "racy clean" problem). Such a file is hashed
  again next time.
  """
  key = os.path.realpath(file)
  st = os.stat(key)
  stat = _stat_key(st)
  entry = cache.get(key)
  if (entry is not None and all(entry[k] == v for k, v in stat.items())
      and max(entry["mtime_ns"], entry["ctime_ns"]) < entry["hashed_ns"] - _RACY_NS):
    return st.st_size, entry["sha256"]
  if st.st_size > _LOG_BYTES:
    logger.info("hashing %s (%.1f GB) for the checkpoint fingerprint; cached for next time", file,
                st.st_size / 1e9)
  hashed_ns = time.time_ns()
  digest = artifacts.sha256_file(key)
  after = _stat_key(os.stat(key))
  if after == stat:  # Not written to while it was read.
    new[key] = {**stat, "hashed_ns": hashed_ns, "sha256": digest}
  return st.st_size, digest


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
  """A stable 16-hex-digit digest of a checkpoint, for the manifests of what is derived from it.

  Covers the config (Hugging Face: config.json, key order and layout ignored) and each weight file's
  name relative to the checkpoint, size and full sha256 (T5X: every file of the `checkpoint_<step>`
  directory), so any changed byte changes it, while copying or moving the checkpoint keeps it.

  Full hashes of large checkpoints are slow (an 11 GB T0_3B: tens of seconds), so each file's sha256
  is cached in `$ROSPR_CACHE/checkpoint_sha256.json`, keyed by its real path, size, mtime, ctime,
  inode and device. A missing, corrupt or unwritable cache only means the files are hashed again.
  """
  lines = []
  if detect_format(path) == "hf":
    root = Path(path)
    hf = read_hf_config(root)
    lines.append("hf " + json.dumps(hf, sort_keys=True, separators=(",", ":")))
    files = hf_weight_files(root)
  else:
    root = resolve_checkpoint_file(path).parent
    lines.append("t5x")
    files = [f for f in root.rglob("*") if f.is_file()]
  cache_file = _cache_file()
  cache, new = _read_cache(cache_file), {}
  for file in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
    size, digest = _sha256(file, cache, new)
    lines.append(f"{file.relative_to(root).as_posix()} {size} {digest}")
  if new:
    _write_cache(cache_file, new)
  return hashlib.sha256(("v2\n" + "\n".join(lines)).encode()).hexdigest()[:16]

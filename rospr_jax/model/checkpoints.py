"""One entry point for checkpoints: load either format, save either format, fingerprint the weights.

  config, params = load_checkpoint("bigscience-T0_3B/")            # a Hugging Face directory
  config, params = load_checkpoint("gs-copy/t0_3b/", jnp.bfloat16)  # a T5X model or checkpoint_<step> dir
  config, params, fingerprint = load_fingerprinted("bigscience-T0_3B/", jnp.bfloat16)  # one read
  save_hf("out/hf", config, params); save_t5x("out/t5x", config, params, step=0)

`params` is a nested dict of host numpy arrays with T5X names (docs/design.md, "The model");
`jax.device_put(params, shardings)` places them. The formats are registered (`formats.py`) by the
modules that read and write them, `hf_checkpoint.py` and `t5x_checkpoint.py` (imported here: a new
format is one more such module); each streams `(T5X name, tensor as stored)` pairs through
`param_tree.collect`, where the fingerprint hashes each tensor before it is cast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax.numpy as jnp
import numpy as np

from rospr_jax import storage
from rospr_jax.model.config import T5Config
from rospr_jax.model import formats
from rospr_jax.model import hf_checkpoint, t5x_checkpoint  # the built-in formats, registered on import
from rospr_jax.model.param_tree import Params, collect, flatten

__all__ = ["checkpoint_fingerprint", "detect_format", "load_checkpoint", "load_fingerprinted",
           "params_fingerprint", "save_hf", "save_t5x", "write_checkpoint"]

logger = logging.getLogger(__name__)

# "v2" hashed the files (config.json, each weight file's name, size and sha256); "v3" hashes the tensors.
_FINGERPRINT_VERSION = "v3"
# Config fields that say how the model is run here (compute dtype, attention kernel), not what it is.
_RUNTIME_FIELDS = ("dtype", "param_dtype", "attention_impl", "fused_padding")
_HASH_BLOCK_BYTES = 16 * 2**20  # A transposed tensor is hashed in C order through copies of this size.

_CACHE_NAME = "checkpoint_fingerprint.json"
_CACHE_VERSION = 1
_CACHE_MAX_ENTRIES = 1_000
# A cached fingerprint is trusted only for files unchanged this long before they were hashed (see
# `_cached_fingerprint`).
_RACY_NS = 2_000_000_000
_LOG_BYTES = 1_000_000_000  # Hashing a checkpoint larger than this is logged.


format_of = formats.format_of  # the registered format of a checkpoint (`formats.CheckpointFormat`)


def detect_format(path: str | os.PathLike) -> str:
  """The name of the registered format of the checkpoint at `path` ("hf" for a directory with
  config.json, "t5x" for a T5X checkpoint: file, step dir or model dir); see `formats.format_of`."""
  return formats.format_of(path).name


def _open(path: str | os.PathLike) -> tuple[T5Config, Iterator[tuple[str, np.ndarray]]]:
  """The checked config and the stream of (T5X name, tensor as stored) of any registered format."""
  return formats.format_of(path).open(Path(path))


def read_config(path: str | os.PathLike) -> T5Config:
  """The checked config of a checkpoint of either format, reading no weights (`rospr plan`)."""
  config, tensors = _open(path)
  if hasattr(tensors, "close"):  # a generator: nothing was read
    tensors.close()
  return config


WEIGHTS_FINGERPRINT = "weights_fingerprint"  # the key of a saved checkpoint's manifest.json


def save_hf(path: str | os.PathLike, config: T5Config, params: Params, *args,
            fingerprint: str | None = None, **kwargs) -> Path:
  """`hf_checkpoint.save_hf`, its manifest.json recording the weights' fingerprint (`fingerprint`, when
  the caller has it: `params_fingerprint(config, params)`), which every fingerprinted load checks."""
  facts = {WEIGHTS_FINGERPRINT: fingerprint or params_fingerprint(config, params)}
  return hf_checkpoint.save_hf(path, config, params, *args, manifest_facts=facts, **kwargs)


def save_t5x(path: str | os.PathLike, config: T5Config, params: Params, *args,
             fingerprint: str | None = None, **kwargs) -> Path:
  """`t5x_checkpoint.save_t5x`, its `checkpoint_<step>/manifest.json` recording the weights' fingerprint
  (as `save_hf`)."""
  facts = {WEIGHTS_FINGERPRINT: fingerprint or params_fingerprint(config, params)}
  return t5x_checkpoint.save_t5x(path, config, params, *args, manifest_facts=facts, **kwargs)


def write_checkpoint(format_name: str, path: str | os.PathLike, config: T5Config, params: Params,
                     options: formats.WriteOptions, fingerprint: str | None = None) -> Path:
  """Writes `params` in the registered format `format_name` (`rospr convert`), its manifest.json
  recording the weights' fingerprint (as `save_hf`); returns the written checkpoint's folder."""
  facts = {**options.manifest_facts, WEIGHTS_FINGERPRINT: fingerprint or params_fingerprint(config, params)}
  return formats.get(format_name).write(Path(path), config, params,
                                        dataclasses.replace(options, manifest_facts=facts))


def _check_recorded(path: str | os.PathLike, fingerprint: str) -> str:
  """`fingerprint` of the checkpoint at `path`, refused (ValueError, naming the manifest) when the
  manifest.json its writer left records another: a weight file changed or was damaged since. That
  manifest is read as any folder artifact's (its kind, its facts' digest, its files' presence: their
  bytes are what `fingerprint` hashes)."""
  checkpoint_format = formats.format_of(path)
  folder = checkpoint_format.folder(Path(path))
  manifest = folder / storage.MANIFEST
  if not manifest.is_file():
    return fingerprint  # a checkpoint this project did not write (the hub's T0)
  recorded = storage.ManifestKind("Checkpoint", checkpoint_format.kind).read(folder, verify=False)
  recorded = recorded.facts.get(WEIGHTS_FINGERPRINT)
  if recorded is not None and recorded != fingerprint:
    raise ValueError(f"Checkpoint {path}: its weights have fingerprint {fingerprint}, not the {recorded} "
                     f"that {manifest} recorded when they were written: a weight file was changed or "
                     "damaged since. Restore it, or write the checkpoint again.")
  return fingerprint


def _with_dtype(config: T5Config, dtype: Any) -> T5Config:
  if dtype is None:
    return config
  return config.replace(param_dtype=jnp.dtype(dtype) if isinstance(dtype, str) else dtype)


def load_checkpoint(path: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[T5Config, Params]:
  """Loads a Hugging Face or T5X checkpoint, streaming tensors into place and casting them on the way.

  Args:
    path: a local Hugging Face T5 directory, or a T5X checkpoint (`checkpoint` file, `checkpoint_<step>`
      directory, or the model directory holding them: the latest step is taken), or a checkpoint of any
      registered format. A checkpoint at a URL is made local by the command that reads it
      (`backbone.load_backbone`, `rospr convert`), once.
    dtype: dtype of the returned parameters (None keeps each stored dtype).

  Returns:
    (config with `param_dtype` set to `dtype` when given, nested dict of numpy arrays with T5X names).
  """
  config, tensors = _open(path)
  return _with_dtype(config, dtype), collect(tensors, dtype)


def load_fingerprinted(path: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[T5Config, Params, str]:
  """`load_checkpoint` and `checkpoint_fingerprint` with one read of the files.

  When the cache does not know the files, each tensor is hashed inside the loading loop, as stored and
  before its cast: the fingerprint does not depend on `dtype`, and the checkpoint is neither read nor
  held twice.

  Returns:
    (config, params) as `load_checkpoint` returns them, and the checkpoint's fingerprint.
  """
  fingerprint, remember = _cached_fingerprint(path)
  config, tensors = _open(path)
  if fingerprint is not None:
    return _with_dtype(config, dtype), collect(tensors, dtype), _check_recorded(path, fingerprint)
  digests: dict[str, str] = {}
  params = collect(tensors, dtype, lambda name, array: digests.__setitem__(name, _tensor_digest(name, array)))
  fingerprint = _combine(config, digests)
  remember(fingerprint)
  return _with_dtype(config, dtype), params, _check_recorded(path, fingerprint)


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
  """A stable 16-hex-digit digest of a checkpoint's weights, for the manifests of what is derived from it.

  It covers every tensor the model loads, each by its T5X name, shape, stored dtype and values (in
  T5X's layout, C order), in name order, and the config fields that change what the model computes
  (`T5Config.inference_fields` less the compute dtype and attention kernel: the shapes, the relative
  position buckets and distance, the norm epsilon). So a Hugging Face checkpoint in any of its layouts
  (one safetensors file, shards, a PyTorch pickle), its `rospr convert` to T5X and the round trip back
  share one fingerprint, whatever dtype a backbone is loaded in, while any changed value, shape or
  stored dtype (`rospr convert --dtype`) changes it. Dropout (training only) and files the model does
  not read (tokenizer, the aliases `{en,de}coder.embed_tokens.weight`) are not covered.

  Hashing reads every tensor, one at a time (an 11 GB T0_3B: tens of seconds), so the fingerprint is
  cached in `$ROSPR_CACHE/checkpoint_fingerprint.json`, keyed by the real path, size, mtime, ctime,
  inode and device of the files it was read from. A missing, corrupt or unwritable cache only means
  hashing again. `load_fingerprinted` hashes while it loads.

  The hashed text begins with its version, "v3"; "v2" hashed the config and weight files, so prompt
  exports, training checkpoints, libraries and evaluation records written before record a file
  fingerprint, which differs from the one the same checkpoint gets now: they are refused with their
  "trained on backbone ..." messages. Rebuild them: train the prompts again (`rospr train-prompts`
  into a new MODEL_DIR; or give an old export's table as a bare `.npy` to `rospr build-library
  --prompts`, which records no backbone), build the library again, evaluate into a new OUTPUT_DIR.
  """
  fingerprint, remember = _cached_fingerprint(path)
  if fingerprint is None:
    config, tensors = _open(path)
    digests = {}
    for name, array in tensors:
      digests[name] = _tensor_digest(name, array)
      del array  # Before the next one is read: one tensor in memory at a time.
    fingerprint = _combine(config, digests)
    remember(fingerprint)
  return _check_recorded(path, fingerprint)


def params_fingerprint(config: T5Config, params: Params) -> str:
  """The fingerprint of a checkpoint that stores `params` (in their dtypes) with `config`: what
  `checkpoint_fingerprint` gives for the files `save_hf` or `save_t5x` writes from them."""
  return _combine(config, {name: _tensor_digest(name, np.asarray(array))
                           for name, array in flatten(params).items()})


# ---------------------------------------------------------------------------------------------------
# Hashing.


def _tensor_digest(name: str, array: np.ndarray) -> str:
  """sha256 of one tensor: its T5X name, shape and stored dtype, then its values, C order, little-endian.

  A view that is not C-contiguous (a transposed Hugging Face Linear weight) is copied
  `_HASH_BLOCK_BYTES` at a time, never whole.
  """
  digest = hashlib.sha256(f"{name} {list(array.shape)} {array.dtype.name}\n".encode())
  little = array.dtype.newbyteorder("<")
  if array.ndim < 2 or (array.flags.c_contiguous and array.dtype == little):
    blocks = [array]
  else:
    step = max(1, _HASH_BLOCK_BYTES * array.shape[0] // max(1, array.nbytes))
    blocks = (array[start:start + step] for start in range(0, array.shape[0], step))
  for block in blocks:
    digest.update(np.ascontiguousarray(block, dtype=little).reshape(-1).view(np.uint8))
  return digest.hexdigest()


def _combine(config: T5Config, digests: dict[str, str]) -> str:
  """The fingerprint of a config and its tensors' digests ({T5X name: `_tensor_digest`})."""
  fields = {k: v for k, v in config.inference_fields().items() if k not in _RUNTIME_FIELDS}
  lines = [_FINGERPRINT_VERSION, json.dumps(fields, sort_keys=True, separators=(",", ":"))]
  lines += [f"{name} {digests[name]}" for name in sorted(digests)]
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# The cache of fingerprints.


def _cache_file() -> Path:
  """`$ROSPR_CACHE/checkpoint_fingerprint.json` (default `~/.cache/rospr_jax`)."""
  return Path(storage.cache_root()) / _CACHE_NAME


def _read_cache(file: Path) -> dict[str, dict]:
  """The cache's entries, or {} when it is missing, unreadable or not what this module writes."""
  try:
    payload = json.loads(file.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return {}
  if not isinstance(payload, dict) or payload.get("version") != _CACHE_VERSION:
    return {}
  entries = payload.get("checkpoints")
  if not isinstance(entries, dict):
    return {}
  return {root: entry for root, entry in entries.items()
          if isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str)
          and isinstance(entry.get("files_sha256"), str) and isinstance(entry.get("hashed_ns"), int)}


def _write_cache(file: Path, new: dict[str, dict]) -> None:
  """Merges `new` into the cache (re-read first, for other processes' entries); never raises."""
  try:
    entries = {**_read_cache(file), **new}
    if len(entries) > _CACHE_MAX_ENTRIES:  # The most recently hashed are kept.
      keep = sorted(entries, key=lambda root: entries[root]["hashed_ns"])[-_CACHE_MAX_ENTRIES:]
      entries = {root: entries[root] for root in keep}
    storage.write_json(file, {"version": _CACHE_VERSION, "checkpoints": entries}, sort_keys=True)
  except Exception as e:  # pylint: disable=broad-except  (the cache is an optimisation, never a failure)
    logger.debug("could not write the checkpoint fingerprint cache %s: %s", file, e)


def _checkpoint_files(path: str | os.PathLike) -> tuple[str, dict[str, list]]:
  """The real path of the checkpoint's folder, and {file: [real path, size, mtime_ns, ctime_ns, inode,
  device]} of the files it is read from (Hugging Face: config.json, the weight files and their index;
  T5X: every file of `checkpoint_<step>`), relative to the folder."""
  checkpoint_format = formats.format_of(path)
  root, files = checkpoint_format.folder(Path(path)), checkpoint_format.files(Path(path))
  state = {}
  for file in files:
    # ctime changes on every write (and on os.utime), and users cannot set it: an in-place edit that
    # keeps size and mtime still changes it. The inode and device catch a file replaced by another,
    # the real path a link (a Hugging Face cache snapshot) pointed elsewhere.
    real = os.path.realpath(file)
    st = os.stat(real)
    state[file.relative_to(root).as_posix()] = [real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                                st.st_dev]
  return os.path.realpath(root), state


def _cached_fingerprint(path: str | os.PathLike) -> tuple[str | None, Callable[[str], None]]:
  """(the cached fingerprint of the checkpoint's files, a no-op), or (None, `remember`) when they must
  be hashed: `remember(fingerprint)` caches the fingerprint computed now, unless the files changed
  while they were read.

  An entry is trusted only if no file had changed for `_RACY_NS` when the hashing began: timestamps
  are coarser than the clock (a tick, or a second on some filesystems), so a write just after could
  otherwise leave them as they were (git's "racy clean" problem). Such files are hashed again next time.
  """
  root, state = _checkpoint_files(path)
  files_sha256 = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
  newest_ns = max((max(s[2], s[3]) for s in state.values()), default=0)
  cache_file = _cache_file()
  entry = _read_cache(cache_file).get(root)
  if (entry is not None and entry["files_sha256"] == files_sha256
      and newest_ns < entry["hashed_ns"] - _RACY_NS):
    return entry["fingerprint"], lambda fingerprint: None
  size = sum(s[1] for s in state.values())
  if size > _LOG_BYTES:
    logger.info("hashing the tensors of %s (%.1f GB) for the checkpoint fingerprint; cached for next time",
                path, size / 1e9)
  hashed_ns = time.time_ns()

  def remember(fingerprint: str) -> None:
    try:
      unchanged = _checkpoint_files(path) == (root, state)
    except (OSError, ValueError):
      unchanged = False
    if unchanged:  # Not written to while it was read.
      _write_cache(cache_file, {root: {"files_sha256": files_sha256, "hashed_ns": hashed_ns,
                                       "fingerprint": fingerprint}})

  return None, remember

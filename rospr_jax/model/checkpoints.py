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
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from rospr_jax import paths
from rospr_jax.model.config import T5Config
from rospr_jax.model.hf_checkpoint import CONFIG_FILE, hf_weight_files, load_hf, read_hf_config, save_hf
from rospr_jax.model.t5x_checkpoint import CHECKPOINT_FILE, load_t5x, resolve_checkpoint_file, save_t5x

__all__ = ["checkpoint_fingerprint", "detect_format", "load_checkpoint", "save_hf", "save_t5x"]

_MIB = 1024 * 1024


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
  paths.require_local(path, "checkpoint")
  loader = load_hf if detect_format(path) == "hf" else load_t5x
  config, params = loader(path, dtype)
  if dtype is not None:
    config = config.replace(param_dtype=jnp.dtype(dtype) if isinstance(dtype, str) else dtype)
  return config, params


def _file_digest(file: Path, root: Path) -> str:
  """Name, size and hashes of the first and last MiB of `file`."""
  size = file.stat().st_size
  with open(file, "rb") as f:
    head = hashlib.sha256(f.read(_MIB)).hexdigest()
    f.seek(max(size - _MIB, 0))
    tail = hashlib.sha256(f.read(_MIB)).hexdigest()
  return f"{file.relative_to(root).as_posix()} {size} {head} {tail}"


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
  """A stable 16-hex-digit digest of a checkpoint, for the manifests of what is derived from it.

  Covers the config (Hugging Face: config.json, key order ignored) and each weight file's name, size
  and first and last MiB (T5X: every file of the `checkpoint_<step>` directory). Copying or moving the
  checkpoint keeps it; changing its weights or config changes it.
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
    files = sorted(f for f in root.rglob("*") if f.is_file())
  lines += [_file_digest(f, root) for f in sorted(files)]
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

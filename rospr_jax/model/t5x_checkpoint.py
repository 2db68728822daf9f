"""T5X checkpoints: reading and writing T5X's on-disk layout, onto the canonical parameter tree.

The parameter tree with T5X's names is this project's canonical form (docs/design.md, "The model"); its
helpers (`param_shapes`, `flatten`, `unflatten`, `key_problems`, `collect`) live in `param_tree.py` and
are importable from here too.

T5X's layout (`t5x/checkpoints.py`, VERSION 3), for a model directory `MODEL_DIR`:

  MODEL_DIR/checkpoint_<step>/checkpoint   msgpack (flax.serialization) of
                                           {"version": 3, "optimizer": {"target": params, "state": {...}}}
  MODEL_DIR/checkpoint_<step>/target.encoder.layers_0.attention.query.kernel/
                                           a zarr array (tensorstore) for each large parameter

Inside the msgpack, a parameter is either the array itself (small arrays) or the tensorstore spec of its
zarr array, `{"driver": "zarr", "kvstore": {"driver": "file", "path": "target.encoder..."}, ...}`, with
the path relative to the `checkpoint_<step>` directory. T5X stores no model config: it is inferred from
the shapes. The few numbers shapes cannot tell (relative-position max distance, norm epsilon, dropout)
are written by `save_t5x` to a side file `rospr_config.json`, which T5X ignores; without it, T5 v1.1's
values are used (128, 1e-6, 0.0).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from rospr_jax import storage
from rospr_jax.model import formats
from rospr_jax.model.config import T5Config
# Re-exported: callers import the tree's helpers from here too.
from rospr_jax.model.param_tree import (Params, as_numpy_dtype, cast, collect, flatten,  # noqa: F401
                                        key_problems, param_shapes, raise_problems, unflatten)

T5X_VERSION = 3
CHECKPOINT_FILE = "checkpoint"
KIND = "rospr_t5x_checkpoint"  # the manifest's "kind" of a checkpoint this project writes
SIDE_CONFIG_FILE = "rospr_config.json"
# Arrays of more bytes than this go to tensorstore zarr arrays, smaller ones inline in the msgpack.
DEFAULT_INLINE_MAX_BYTES = 4096
_CHUNK_TARGET_BYTES = 64 * 1024 * 1024  # T5X's desired chunk size.
_WRITE_BYTES_IN_FLIGHT = 1024 * 1024 * 1024  # Bounds the copies tensorstore holds while compressing.
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


# ---------------------------------------------------------------------------------------------------
# Reading.


def resolve_checkpoint_file(path: str | os.PathLike) -> Path:
  """The msgpack `checkpoint` file of a T5X checkpoint.

  Args:
    path: the `checkpoint` file, a `checkpoint_<step>` directory, or the model directory holding
      `checkpoint_<step>` directories (the latest step is taken).
  """
  path = Path(path)
  if path.is_file():
    return path
  if not path.is_dir():
    raise FileNotFoundError(f"{path}: no such T5X checkpoint file or directory.")
  if (path / "state").is_dir() and not (path / CHECKPOINT_FILE).exists():
    raise ValueError(f"{path}: holds a `state/` directory, the Orbax layout of newer T5X versions, "
                     "which is not supported; export it as a classic T5X checkpoint (msgpack "
                     "`checkpoint` file plus zarr arrays).")
  if (path / CHECKPOINT_FILE).is_file():
    return path / CHECKPOINT_FILE
  steps = sorted((int(m.group(1)), child) for child in path.iterdir()
                 if (m := _STEP_DIR.match(child.name)) and (child / CHECKPOINT_FILE).is_file())
  if not steps:
    raise FileNotFoundError(
        f"{path}: not a T5X checkpoint: no `{CHECKPOINT_FILE}` file and no "
        f"`checkpoint_<step>/{CHECKPOINT_FILE}` inside.")
  return steps[-1][1] / CHECKPOINT_FILE


def _is_ts_spec(value: Any) -> bool:
  return isinstance(value, Mapping) and "driver" in value


def _flatten_target(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Like `flatten`, but a tensorstore spec (a dict with a "driver") is a leaf."""
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping) and not _is_ts_spec(value):
      flat.update(_flatten_target(value, path + "/"))
    else:
      flat[path] = value
  return flat


def _read_msgpack(file: Path) -> dict[str, Any]:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  data = file.read_bytes()
  try:
    contents = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types for damaged data.
    raise ValueError(f"{file}: corrupted or truncated T5X msgpack checkpoint "
                     f"({type(e).__name__}: {e}).") from e
  if not isinstance(contents, dict):
    raise ValueError(f"{file}: not a T5X checkpoint: the msgpack holds a {type(contents).__name__}, "
                     "not a dict.")
  return contents


class _ZarrArray:
  """A T5X parameter stored as a zarr array in a directory beside the msgpack file."""

  def __init__(self, name: str, spec: Mapping[str, Any], step_dir: Path, msgpack_file: Path):
    kvstore = spec.get("kvstore")
    relative = kvstore.get("path") if isinstance(kvstore, Mapping) else None
    relative = relative or spec.get("path")  # tensorstore < 0.1.14 kept the path at the top level.
    if spec.get("driver") != "zarr" or not isinstance(relative, str):
      raise ValueError(f"{msgpack_file}: parameter {name} has an unsupported tensorstore spec {spec!r} "
                       "(expected a zarr driver with a relative path).")
    relative = relative.rstrip("/")
    if os.path.isabs(relative) or ".." in Path(relative).parts or not relative:
      raise ValueError(f"{msgpack_file}: parameter {name} points outside the checkpoint directory "
                       f"({relative!r}); T5X writes paths relative to it.")
    self.name = name
    self.directory = step_dir / relative
    zarray = self.directory / ".zarray"
    if not zarray.is_file():
      raise FileNotFoundError(f"{zarray}: missing zarr metadata of parameter {name} "
                              "(incomplete checkpoint copy?).")
    try:
      self.metadata = json.loads(zarray.read_text())
      self.shape = tuple(int(d) for d in self.metadata["shape"])
      self.chunks = tuple(int(d) for d in self.metadata["chunks"])
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{zarray}: corrupted zarr metadata of parameter {name} ({e}).") from e
    declared = (spec.get("metadata") or {}).get("shape")
    if declared is not None and tuple(int(d) for d in declared) != self.shape:
      raise ValueError(f"{zarray}: parameter {name} has shape {self.shape} on disk but "
                       f"{tuple(declared)} in {msgpack_file}.")

  def _check_chunks_present(self) -> None:
    """A missing chunk reads as zeros without error when the fill value is null: refuse it."""
    if self.metadata.get("fill_value") is not None:
      return  # A missing chunk legitimately means "all fill value".
    separator = self.metadata.get("dimension_separator", ".")
    grid = [range(math.ceil(s / c)) if c else range(1) for s, c in zip(self.shape, self.chunks)]
    for index in itertools.product(*grid) if grid else [(0,)]:
      chunk = self.directory / separator.join(str(i) for i in index)
      if not chunk.is_file():
        raise ValueError(f"{chunk}: missing chunk file of parameter {self.name} "
                         "(the checkpoint is incomplete).")

  def read(self) -> np.ndarray:
    import tensorstore as ts  # pylint: disable=g-import-not-at-top
    self._check_chunks_present()
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(self.directory)}}
    try:
      store = ts.open(spec, open=True, read=True).result()
      return np.asarray(store.read().result())
    except Exception as e:  # tensorstore raises ValueError / RuntimeError subtypes for damaged data.
      raise ValueError(f"{self.directory}: cannot read the zarr array of parameter {self.name}: "
                       f"{e}") from e


def _infer_config(shapes: Mapping[str, tuple[int, ...]], side: Mapping[str, Any], file: Path) -> T5Config:
  """T5Config from parameter shapes (T5X stores no config)."""
  needed = ["token_embedder/embedding", "encoder/relpos_bias/rel_embedding",
            "encoder/layers_0/attention/query/kernel", "encoder/layers_0/mlp/wi_0/kernel"]
  absent = [k for k in needed if k not in shapes]
  if absent:
    raise ValueError(f"{file}: cannot infer the model shape: missing key(s) {', '.join(absent)} "
                     f"(present: {', '.join(sorted(shapes)[:8])}{' ...' if len(shapes) > 8 else ''}).")
  vocab, emb = shapes["token_embedder/embedding"]
  heads, buckets = shapes["encoder/relpos_bias/rel_embedding"]
  joined_kv = shapes["encoder/layers_0/attention/query/kernel"][-1]
  if heads <= 0 or joined_kv % heads:
    raise ValueError(f"{file}: encoder/layers_0/attention/query/kernel has {joined_kv} columns, not a "
                     f"multiple of the {heads} heads of encoder/relpos_bias/rel_embedding.")
  mlp = shapes["encoder/layers_0/mlp/wi_0/kernel"][-1]

  def depth(stack: str) -> int:
    indices = [int(m.group(1)) for k in shapes if (m := re.match(rf"^{stack}/layers_(\d+)/", k))]
    return max(indices) + 1 if indices else 0

  return T5Config(
      vocab_size=int(vocab), emb_dim=int(emb), num_heads=int(heads), head_dim=int(joined_kv // heads),
      mlp_dim=int(mlp), num_encoder_layers=depth("encoder"), num_decoder_layers=depth("decoder"),
      relative_attention_num_buckets=int(buckets),
      relative_attention_max_distance=int(side.get("relative_attention_max_distance", 128)),
      layer_norm_epsilon=float(side.get("layer_norm_epsilon", 1e-6)),
      dropout_rate=float(side.get("dropout_rate", 0.0)))


def _read_side_config(step_dir: Path) -> dict[str, Any]:
  file = step_dir / SIDE_CONFIG_FILE
  if not file.is_file():
    return {}
  try:
    side = json.loads(file.read_text())
  except ValueError as e:
    raise ValueError(f"{file}: corrupted JSON ({e}).") from e
  allowed = {"relative_attention_max_distance", "layer_norm_epsilon", "dropout_rate"}
  if not isinstance(side, dict) or set(side) - allowed:
    raise ValueError(f"{file}: expected a JSON object with keys among {sorted(allowed)}, got {side!r}.")
  return side


def open_t5x(path: str | os.PathLike) -> tuple[T5Config, Iterator[tuple[str, np.ndarray]]]:
  """Checks a T5X checkpoint's `target` parameters against the model their shapes describe.

  Args:
    path: see `resolve_checkpoint_file`.

  Returns:
    (config inferred from the shapes, iterator of (T5X name, array as stored), each zarr array read
    when its turn comes).
  """
  file = resolve_checkpoint_file(path)
  step_dir = file.parent
  contents = _read_msgpack(file)
  state = contents["optimizer"] if "optimizer" in contents else contents  # version 0 had no wrapper.
  target = state.get("target") if isinstance(state, Mapping) else None
  if not isinstance(target, Mapping):
    raise ValueError(f"{file}: not a T5X checkpoint: no `target` parameter tree "
                     f"(top-level keys: {sorted(contents)}).")
  leaves = _flatten_target(target)
  arrays: dict[str, np.ndarray | _ZarrArray] = {}
  for name, leaf in leaves.items():
    if _is_ts_spec(leaf):
      arrays[name] = _ZarrArray(f"target/{name}", leaf, step_dir, file)
    elif isinstance(leaf, np.ndarray):
      arrays[name] = leaf
    else:
      raise ValueError(f"{file}: parameter target/{name} is a {type(leaf).__name__}, not an array.")
  shapes = {name: tuple(a.shape) for name, a in arrays.items()}

  refusals = [f"{name} (shape {shapes[name]}): a non-gated feed-forward (T5 v1.0 / ReLU style); the "
              "model implements gated-GELU only (mlp/wi_0 and mlp/wi_1)"
              for name in shapes if name.endswith("mlp/wi/kernel")]
  if shapes and "decoder/logits_dense/kernel" not in shapes:
    refusals.append("no decoder/logits_dense/kernel: logits tied to the token embedding (T5X "
                    "`logits_via_embedding`, T5 v1.0 style) are not implemented; the model has untied "
                    "logits (T5 v1.1 / T0)")
  raise_problems(f"{file}: this T5X checkpoint is not a model this project implements:", refusals)

  config = _infer_config(shapes, _read_side_config(step_dir), file)
  raise_problems(f"{file}: the parameters do not match the T5 v1.1 model inferred from their shapes "
                 f"({config}):", key_problems(shapes, param_shapes(config)))

  return config, ((name, a.read() if isinstance(a, _ZarrArray) else a) for name, a in arrays.items())


def load_t5x(path: str | os.PathLike, dtype: Any = np.float32) -> tuple[T5Config, Params]:
  """Loads a T5X checkpoint's `target` parameters (`open_t5x`), one array at a time, cast to `dtype`.

  Returns:
    (config inferred from the shapes, nested dict of numpy arrays with T5X names; None as `dtype`
    keeps the stored dtypes).
  """
  config, tensors = open_t5x(path)
  return config, collect(tensors, dtype)


# ---------------------------------------------------------------------------------------------------
# Writing.


def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> list[int]:
  """Chunks of at most ~64 MiB: halve the largest dimension until a chunk fits."""
  chunks = list(shape) or []
  while chunks and math.prod(chunks) * itemsize > _CHUNK_TARGET_BYTES:
    i = int(np.argmax(chunks))
    chunks[i] = math.ceil(chunks[i] / 2)
  return [max(c, 1) for c in chunks]


def _write_zarr(directory: Path, array: np.ndarray) -> Any:
  """Starts writing `array` as a gzip zarr array; returns the tensorstore write future."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  spec = {
      "driver": "zarr",
      "dtype": array.dtype.name,
      "kvstore": {"driver": "file", "path": str(directory)},
      "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                   "chunks": _chunk_shape(array.shape, array.dtype.itemsize)},
  }
  store = ts.open(spec, create=True, open=False).result()
  return store.write(array)


@contextlib.contextmanager
def _settled_on_error():
  """Yields the list of tensorstore writes in flight, as (future, bytes); when the block fails, each is
  waited for, so that no write lands in the temporary folder after it is removed (a full disk used
  to leave `.checkpoint_<step>.tmp-*` behind, refilled by the pending writes). Not cancelled: a
  cancelled future reports done at once while its I/O may still be running."""
  pending: list[tuple[Any, int]] = []
  try:
    yield pending
  except BaseException:
    for future, _ in pending:
      try:
        future.result()
      except BaseException:  # noqa: BLE001 - failed too (the same full disk): either way it is over.
        pass
    raise


def save_t5x(path: str | os.PathLike, config: T5Config, params: Mapping[str, Any], step: int = 0, *,
             inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES, extra_files: Sequence[str | os.PathLike] = (),
             manifest_facts: dict | None = None) -> Path:
  """Writes `params` as T5X checkpoint `path/checkpoint_<step>` (atomically: temp dir, then rename).

  Arrays above `inline_max_bytes` become gzip zarr arrays written through tensorstore, as T5X writes
  them; smaller ones are stored inline in the msgpack. Parameters keep their dtype. The optimizer
  state holds only `step`. `extra_files` are copied into `checkpoint_<step>` (the SentencePiece
  model, which `tokenization.find_sentencepiece_model` looks for there). `manifest_facts` go into its
  manifest.json (`checkpoints.save_t5x`: the weights' fingerprint).

  Returns:
    The `checkpoint_<step>` directory.
  """
  flat = {name: np.asarray(value) for name, value in flatten(params).items()}
  raise_problems("save_t5x: the parameters do not match the config:",
                 key_problems({k: v.shape for k, v in flat.items()}, param_shapes(config)))
  from flax import serialization  # pylint: disable=g-import-not-at-top
  import tensorstore as ts  # pylint: disable=g-import-not-at-top

  final = Path(path) / f"checkpoint_{int(step)}"
  with (storage.output_folder(final, "T5X checkpoint", kind=KIND, overwrite_flag=None,
                                facts=manifest_facts) as tmp_dir,
        _settled_on_error() as pending):
    tmp = Path(tmp_dir)
    target = {}
    for name, array in flat.items():
      if array.nbytes <= inline_max_bytes:
        target[name] = array
        continue
      relative = "target." + name.replace("/", ".")
      while pending and sum(n for _, n in pending) + array.nbytes > _WRITE_BYTES_IN_FLIGHT:
        pending.pop(0)[0].result()
      pending.append((_write_zarr(tmp / relative, array), array.nbytes))
      spec = ts.Spec({"driver": "zarr", "dtype": array.dtype.name,
                      "kvstore": {"driver": "file", "path": relative},
                      "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                                   "chunks": _chunk_shape(array.shape, array.dtype.itemsize)}})
      target[name] = spec.to_json()
    for future, _ in pending:
      future.result()
    state = {"target": unflatten(target), "state": {"step": np.asarray(step, np.int32)}}
    data = serialization.msgpack_serialize({"version": T5X_VERSION, "optimizer": state})
    (tmp / CHECKPOINT_FILE).write_bytes(data)
    (tmp / SIDE_CONFIG_FILE).write_text(json.dumps({
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "dropout_rate": config.dropout_rate,
    }, indent=2) + "\n")
    for extra in map(Path, extra_files):
      (tmp / extra.name).write_bytes(extra.read_bytes())
  return final


# ---------------------------------------------------------------------------------------------------
# The format, registered (`formats.py`).


def _recognizes(path: Path) -> bool:
  """A `checkpoint` file, or a folder holding one (or `checkpoint_<step>/checkpoint`, or the Orbax
  layout, which `resolve_checkpoint_file` refuses by name)."""
  if path.is_file():
    return path.name == CHECKPOINT_FILE
  if (path / "state").is_dir():
    return True
  try:
    resolve_checkpoint_file(path)
  except (FileNotFoundError, ValueError):
    return False
  return True


def _folder(path: Path) -> Path:
  return resolve_checkpoint_file(path).parent


def _write(path: Path, config: T5Config, params: Mapping[str, Any], options: formats.WriteOptions) -> Path:
  """`rospr convert --format t5x`: `path/checkpoint_<step>`, the SentencePiece model inside it."""
  return save_t5x(path, config, params, step=options.step,
                  extra_files=[options.vocabulary] if options.vocabulary else [],
                  manifest_facts=dict(options.manifest_facts))


FORMAT = formats.register(formats.CheckpointFormat(
    name="t5x", kind=KIND, layout=f"T5X: checkpoint_<step>/{CHECKPOINT_FILE}",
    destination="the model directory that receives checkpoint_<step>", recognizes=_recognizes,
    missing=f"not a T5X checkpoint: no `{CHECKPOINT_FILE}` file and no `checkpoint_<step>/{CHECKPOINT_FILE}` inside",
    open=open_t5x, folder=_folder, files=lambda path: [f for f in _folder(path).rglob("*") if f.is_file()],
    write=_write))

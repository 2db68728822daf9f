"""The canonical parameter tree (T5X names): shapes, nesting, key checks, dtype casts, streamed loads.

The parameter tree with T5X's names is this project's canonical form (docs/design.md, "The model"): both
checkpoint readers (`hf_checkpoint.py`, `t5x_checkpoint.py`) map onto it and stream their tensors
through `collect`, where the checkpoint fingerprint (`checkpoints.py`) sees each one as stored.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from rospr_jax.model.config import T5Config

_MAX_LISTED_PROBLEMS = 30

Params = dict[str, Any]


def param_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """Flat `{"encoder/layers_0/attention/query/kernel": shape}` of every parameter of `config`'s model."""
  h, kv, mlp, v = config.emb_dim, config.joined_kv, config.mlp_dim, config.vocab_size
  relpos = (config.num_heads, config.relative_attention_num_buckets)
  shapes: dict[str, tuple[int, ...]] = {"token_embedder/embedding": (v, h)}

  def attention(prefix: str) -> None:
    for name in ("query", "key", "value"):
      shapes[f"{prefix}/{name}/kernel"] = (h, kv)
    shapes[f"{prefix}/out/kernel"] = (kv, h)

  def mlp_block(prefix: str) -> None:
    shapes[f"{prefix}/wi_0/kernel"] = (h, mlp)
    shapes[f"{prefix}/wi_1/kernel"] = (h, mlp)
    shapes[f"{prefix}/wo/kernel"] = (mlp, h)

  shapes["encoder/relpos_bias/rel_embedding"] = relpos
  for i in range(config.num_encoder_layers):
    layer = f"encoder/layers_{i}"
    shapes[f"{layer}/pre_attention_layer_norm/scale"] = (h,)
    attention(f"{layer}/attention")
    shapes[f"{layer}/pre_mlp_layer_norm/scale"] = (h,)
    mlp_block(f"{layer}/mlp")
  shapes["encoder/encoder_norm/scale"] = (h,)

  shapes["decoder/relpos_bias/rel_embedding"] = relpos
  for i in range(config.num_decoder_layers):
    layer = f"decoder/layers_{i}"
    shapes[f"{layer}/pre_self_attention_layer_norm/scale"] = (h,)
    attention(f"{layer}/self_attention")
    shapes[f"{layer}/pre_cross_attention_layer_norm/scale"] = (h,)
    attention(f"{layer}/encoder_decoder_attention")
    shapes[f"{layer}/pre_mlp_layer_norm/scale"] = (h,)
    mlp_block(f"{layer}/mlp")
  shapes["decoder/decoder_norm/scale"] = (h,)
  shapes["decoder/logits_dense/kernel"] = (h, v)
  return shapes


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> `{"a/b/c": leaf}` (any mapping is descended into)."""
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> Params:
  """`{"a/b/c": leaf}` -> nested dict."""
  tree: Params = {}
  for path, value in flat.items():
    node = tree
    *parents, last = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = value
  return tree


def key_problems(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                 where: Mapping[str, str] | None = None) -> list[str]:
  """Lists missing keys, unexpected keys and shape mismatches (each naming the key and the shapes).

  Args:
    found: shape of each key the checkpoint holds.
    expected: shape of each key the model needs.
    where: optional file name of each found key, added to its line.
  """
  where = where or {}

  def at(key: str) -> str:
    return f" in {where[key]}" if key in where else ""

  problems = [f"missing key {key} (expected shape {tuple(shape)})"
              for key, shape in expected.items() if key not in found]
  problems += [f"unexpected key {key} (shape {tuple(shape)}){at(key)}"
               for key, shape in found.items() if key not in expected]
  problems += [f"shape mismatch at {key}: expected {tuple(expected[key])}, found {tuple(shape)}{at(key)}"
               for key, shape in found.items()
               if key in expected and tuple(shape) != tuple(expected[key])]
  return problems


def raise_problems(header: str, problems: list[str]) -> None:
  """Raises one ValueError listing `problems` under `header` (does nothing when there are none)."""
  if not problems:
    return
  shown = problems[:_MAX_LISTED_PROBLEMS]
  lines = [header] + [f"  - {p}" for p in shown]
  if len(problems) > len(shown):
    lines.append(f"  ... and {len(problems) - len(shown)} more.")
  raise ValueError("\n".join(lines))


def as_numpy_dtype(dtype: Any) -> np.dtype | None:
  """jnp / numpy dtype or name -> numpy dtype (bfloat16 through ml_dtypes); None stays None."""
  if dtype is None:
    return None
  if isinstance(dtype, str) and dtype == "bfloat16":
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(dtype)


def cast(array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
  """C-contiguous `array` in `dtype` (None keeps its dtype), copying only when needed."""
  return np.ascontiguousarray(array, dtype=array.dtype if dtype is None else dtype)


def collect(tensors: Iterable[tuple[str, np.ndarray]], dtype: Any = np.float32,
            on_tensor: Callable[[str, np.ndarray], None] | None = None) -> Params:
  """The nested tree of a stream of `(T5X name, array as stored)`, each cast to `dtype` as it comes.

  `on_tensor(name, array)` sees each tensor's stored values (the checkpoint fingerprint hashes them):
  the cast array when the cast kept the dtype, else the stored one. Besides the tree, one stored
  array is alive at a time (None as `dtype` keeps each stored dtype).
  """
  target, flat = as_numpy_dtype(dtype), {}
  for name, array in tensors:
    value = cast(array, target)
    if on_tensor is not None:
      on_tensor(name, value if value.dtype == array.dtype else array)
    flat[name] = value
    del array, value  # Before the next one is read.
  return unflatten(flat)

"""One .safetensors file: read a tensor at a time through the `safetensors` library, every refusal
explained in terms of the file (truncated, which tensor's byte range is wrong), and written in one call.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from rospr_jax.model.param_tree import as_numpy_dtype

# The safetensors dtypes this reader accepts, with their numpy names (bfloat16 through ml_dtypes).
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "BOOL": "bool"}
# Bytes per element of every safetensors dtype, for explaining a header the library refused.
_SAFETENSORS_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
                         "BF16": 2, "I16": 2, "U16": 2, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
                         "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "I8": 1, "U8": 1, "BOOL": 1}
_LIBRARY_PREFIX = "Error while deserializing header: "
_MAX_HEADER_BYTES = 100_000_000  # The library refuses larger headers; never read more to explain.


def _open_safetensors(path: Path):
  """`safetensors.safe_open(path, framework="numpy")`: parses and validates the header, reads nothing else.

  Where the library offers it (safetensors >= 0.8) tensors are read with pread(2), each into one fresh
  buffer, so no page of the file stays mapped; older versions memory-map the file, which `read`
  unmaps after every tensor by closing the handle.
  """
  try:
    return safetensors.safe_open(path, framework="numpy", backend="pread")
  except TypeError:  # safetensors < 0.8: no `backend` argument.
    return safetensors.safe_open(path, framework="numpy")


def _explain_refusal(path: Path, error: Exception) -> str:
  """A message naming `path` (and the tensor, where one is at fault) for a file safetensors refused.

  The library decides that the file is bad; this only looks at the file again to say why in terms a
  reader can act on: truncated, header length beyond the file, which tensor's byte range is wrong.
  """
  reason = str(error)
  reason = reason[len(_LIBRARY_PREFIX):] if reason.startswith(_LIBRARY_PREFIX) else reason
  generic = f"{path}: corrupted or truncated safetensors file ({reason})."
  try:
    size = path.stat().st_size
    with open(path, "rb") as f:
      head = f.read(8)
      if len(head) < 8:
        return (f"{path}: truncated safetensors file ({size} bytes, shorter than its 8-byte header "
                "length).")
      header_size = int.from_bytes(head, "little")
      if 8 + header_size > size:
        return (f"{path}: truncated or corrupted safetensors file: its header claims {header_size} "
                f"bytes but the file has {size}.")
      if header_size > _MAX_HEADER_BYTES:
        return f"{path}: corrupted safetensors header: it claims {header_size} bytes ({reason})."
      raw = f.read(header_size)
    try:
      header = json.loads(raw.decode("utf-8"))
      if not isinstance(header, dict):
        raise ValueError(f"the header is a {type(header).__name__}, not an object")
    except (UnicodeDecodeError, ValueError) as e:
      return f"{path}: corrupted safetensors header ({e}; {reason})."
    data_size = size - 8 - header_size
    end_max, last = 0, None
    for key, info in header.items():
      if key == "__metadata__":
        continue
      try:
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        nbytes = math.prod(shape) * _SAFETENSORS_ITEMSIZE[info["dtype"]]
      except (KeyError, TypeError, ValueError):
        return f"{path}: corrupted safetensors header entry for {key}: {info!r} ({reason})."
      if begin < 0 or end - begin != nbytes:
        return (f"{path}: corrupted safetensors header: {key} of shape {shape} and dtype "
                f"{info['dtype']} needs {nbytes} bytes but spans bytes [{begin}, {end}).")
      if end > end_max:
        end_max, last = end, key
    if end_max > data_size:
      return (f"{path}: truncated safetensors file: {last} needs data bytes up to {end_max} but the "
              f"file holds {data_size} bytes of data.")
    if end_max < data_size:
      return (f"{path}: corrupted safetensors file: {data_size - end_max} bytes follow the last "
              f"tensor ({reason}).")
    return f"{path}: corrupted safetensors header ({reason})."
  except Exception:  # pylint: disable=broad-except  (the explanation must never hide the refusal)
    return generic


class SafetensorsFile:
  """Reads one tensor at a time from a .safetensors file through the `safetensors` library.

  Opening validates the header (the library's checks: JSON, dtypes, shapes against byte ranges, ranges
  tiling the file exactly); every refusal is a ValueError naming the file. `read` returns a fresh array
  in the stored dtype (BF16 as `ml_dtypes.bfloat16`).
  """

  def __init__(self, path: Path):
    self.path = path
    self.entries: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    try:
      with _open_safetensors(path) as f:
        for key in f.keys():
          view = f.get_slice(key)
          name, shape = view.get_dtype(), tuple(int(d) for d in view.get_shape())
          if name not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: {key} is stored as {name}, which is not supported (only "
                             f"{', '.join(_SAFETENSORS_DTYPES)}).")
          self.entries[key] = (as_numpy_dtype(_SAFETENSORS_DTYPES[name]), shape)
    except safetensors.SafetensorError as e:
      raise ValueError(_explain_refusal(path, e)) from e

  def shapes(self) -> dict[str, tuple[int, ...]]:
    return {key: entry[1] for key, entry in self.entries.items()}

  def read(self, key: str) -> np.ndarray:
    """A fresh array holding tensor `key`, in its stored dtype."""
    dtype, shape = self.entries[key]
    try:
      with _open_safetensors(self.path) as f:
        array = f.get_tensor(key)
    except safetensors.SafetensorError as e:
      raise ValueError(f"{_explain_refusal(self.path, e)} (Reading {key}, after the header had been "
                       "accepted: the file changed or is damaged.)") from e
    except TypeError as e:  # numpy does not know the dtype the library asked for.
      raise ValueError(f"{self.path}: the installed safetensors {safetensors.__version__} cannot read "
                       f"{key} ({dtype}) as a numpy array ({e}); upgrade safetensors.") from e
    if array.dtype != dtype:
      # BF16 is ml_dtypes.bfloat16 in this project; a library that hands BF16 over as its raw 16-bit
      # patterns gets them reinterpreted, never converted.
      if dtype == as_numpy_dtype("bfloat16") and array.dtype in (np.dtype(np.uint16), np.dtype(np.int16)):
        array = array.view(dtype)
      else:
        raise ValueError(f"{self.path}: the safetensors library read {key} as {array.dtype}; its header "
                         f"says {dtype}.")
    if tuple(array.shape) != shape:
      raise ValueError(f"{self.path}: the safetensors library read {key} with shape {tuple(array.shape)}; "
                       f"its header says {shape}.")
    return array


def _check_storable(file: Path, key: str, dtype: np.dtype) -> None:
  if not any(dtype == as_numpy_dtype(name) for name in _SAFETENSORS_DTYPES.values()):
    raise ValueError(f"{file}: {key} has dtype {dtype}, which cannot be stored in safetensors (only "
                     f"{', '.join(_SAFETENSORS_DTYPES.values())}).")


def write_safetensors(file: Path, tensors: list[tuple[str, np.ndarray, bool]]) -> int:
  """Writes [(key, array, transpose)] as one safetensors file with the library; returns data bytes.

  `safetensors.numpy.save_file` writes from the arrays' buffers, so they must be C-contiguous: the
  transposed kernels of this file are materialized for the call (one file's worth of copies).
  """
  arrays = {}
  for key, array, transpose in tensors:
    _check_storable(file, key, array.dtype)
    arrays[key] = np.ascontiguousarray(array.T if transpose else array)
  try:
    safetensors.numpy.save_file(arrays, file, metadata={"format": "pt"})
  except safetensors.SafetensorError as e:
    raise ValueError(f"{file}: the safetensors library refused to write it ({e}).") from e
  return sum(array.nbytes for array in arrays.values())

"""One PyTorch checkpoint file (`pytorch_model.bin`): read a tensor at a time, memory-mapped."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from rospr_jax.model.param_tree import as_numpy_dtype


class TorchFile:
  """Reads tensors from a PyTorch pickle (`torch.load(mmap=True, weights_only=True)`)."""

  def __init__(self, path: Path):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"{path}: reading a PyTorch checkpoint (.bin) needs PyTorch, which is not installed: "
          "`pip install torch` (the CPU build is enough), or use a safetensors checkpoint.") from e
    self.path = path
    self._torch = torch
    try:
      try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
      except RuntimeError as e:
        if "mmap" not in str(e):
          raise
        # Files written before torch 1.6 (legacy format) cannot be memory-mapped.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files.
      raise ValueError(f"{path}: corrupted or truncated PyTorch checkpoint "
                       f"({type(e).__name__}: {e}).") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
      raise ValueError(f"{path}: not a PyTorch state dict of tensors.")
    self.state = state

  def shapes(self) -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in self.state.items()}

  def read(self, key: str) -> np.ndarray:
    """A copy of tensor `key` in memory the caller owns (the file stays memory-mapped, not copied)."""
    tensor = self.state[key].detach().contiguous()
    if tensor.dtype == self._torch.bfloat16:
      return tensor.view(self._torch.int16).numpy().view(as_numpy_dtype("bfloat16")).copy()
    return tensor.numpy().copy()

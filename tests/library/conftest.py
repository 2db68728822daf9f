"""Fixtures of the library tests: clustered unit vectors."""

from __future__ import annotations

import numpy as np
import pytest


def _clustered(n: int, dim: int, num_centres: int, noise: float, seed: int,
               num_queries: int = 0):
  """Unit vectors around random Gaussian centres: (library [n, dim], queries [num_queries, dim])."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_centres, dim)).astype(np.float32)

  def draw(m):
    x = centres[rng.integers(0, num_centres, m)] + noise * rng.normal(size=(m, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

  return draw(n), draw(num_queries)


@pytest.fixture
def clustered():
  """The generator `clustered(n, dim, num_centres, noise, seed, num_queries=0)`."""
  return _clustered

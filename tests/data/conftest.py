"""Fixtures for the data tests: the archives cache that `rospr fetch` filled, the BIG-bench store built
from the checkout the tests write, and promptsource's own `templates.py` (loaded from the archive) as
the rendering reference."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import pytest

from rospr_jax.data import archives



def _require(fn):
  try:
    return fn()
  except FileNotFoundError as e:
    pytest.fail(f"this test needs the archives cache: {e}", pytrace=False)


@pytest.fixture(scope="session")
def templates_dir() -> pathlib.Path:
  return _require(archives.promptsource_templates_dir)


@pytest.fixture(scope="session")
def bigbench_folder(bigbench_cache) -> pathlib.Path:
  """The BIG-bench store built from the checkout the tests write (tests/bigbench_checkout.py)."""
  return bigbench_cache / "bigbench"


@pytest.fixture(scope="session")
def promptsource_reference(templates_dir):
  """promptsource 0.2.3's templates.py, executed from the archive's copy.

  Its imports of pandas and pkg_resources are stubbed (only `resource_filename`, which locates the
  templates folder, is used at import time); jinja2 and yaml are the real ones.
  """
  path = templates_dir.parent / "templates.py"
  stubs = {"pandas": types.ModuleType("pandas"), "pkg_resources": types.ModuleType("pkg_resources")}
  stubs["pkg_resources"].resource_filename = lambda *args: str(templates_dir)
  saved = {name: sys.modules.get(name) for name in stubs}
  sys.modules.update(stubs)
  try:
    spec = importlib.util.spec_from_file_location("promptsource_reference_templates", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    for name, old in saved.items():
      if old is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = old
  return module

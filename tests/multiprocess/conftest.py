"""Fixtures of the multi-process tests (helpers: mp_workers.py)."""

from __future__ import annotations

import pytest

from mp_workers import Launcher


@pytest.fixture(scope="module")
def rospr(tmp_path_factory):
  """A `Launcher` (one per test module, so module fixtures can run commands); every worker it
  started is killed at the end."""
  launcher = Launcher(tmp_path_factory.mktemp("logs"))
  yield launcher
  launcher.kill(launcher.workers)

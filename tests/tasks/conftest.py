"""Fixtures for the SeqIO task tests: the registered tasks (they need the cache `rospr fetch` fills)
and a data folder holding every dataset's example records as JSON lines."""

from __future__ import annotations

import pathlib

import pytest



@pytest.fixture(scope="session")
def registry():
  from rospr_tasks import registry as registry_lib  # pylint: disable=g-import-not-at-top  (registers on import)
  missing = {k: v for k, v in registry_lib.register_all().items() if v != "registered"}
  if missing:
    pytest.fail(f"rospr_tasks could not register {sorted(missing)}: {missing}", pytrace=False)
  return registry_lib


@pytest.fixture()
def with_data(data_dir, monkeypatch) -> pathlib.Path:
  monkeypatch.setenv("ROSPR_DATA_DIR", str(data_dir))
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  return data_dir

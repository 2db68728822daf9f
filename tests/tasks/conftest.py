"""Fixtures for the SeqIO task tests: the registered tasks (promptsource from the cache `rospr fetch`
fills, BIG-bench from the tests' own checkout)
and a data folder holding every dataset's example records as JSON lines."""

from __future__ import annotations

import pathlib

import pytest



@pytest.fixture(scope="session")
def registry(bigbench_cache):
  """Every part registered: BIG-bench from the session's test checkout (`bigbench_cache`), by store."""
  from rospr_jax.data import bigbench  # pylint: disable=g-import-not-at-top
  from rospr_tasks import registry as registry_lib  # pylint: disable=g-import-not-at-top  (registers on import)
  registry_lib.register_all()
  if registry_lib.STATUS.get("bigbench") != "registered":
    registry_lib.register_bigbench(bigbench.BigBenchStore(bigbench_cache / "bigbench"))
    registry_lib.STATUS["bigbench"] = "registered"
  missing = {k: v for k, v in registry_lib.register_all().items() if v != "registered"}
  if missing:
    pytest.fail(f"rospr_tasks could not register {sorted(missing)}: {missing}", pytrace=False)
  return registry_lib


@pytest.fixture()
def with_data(data_dir, monkeypatch) -> pathlib.Path:
  monkeypatch.setenv("ROSPR_DATA_DIR", str(data_dir))
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  return data_dir

"""Fixtures for the SeqIO task tests: the registered tasks (they need the cache `rospr fetch` fills)
and a data folder holding every dataset's example records as JSON lines."""

from __future__ import annotations

import json
import pathlib

import pytest

RECORDS_PATH = pathlib.Path(__file__).parents[1] / "data" / "testdata" / "example_records.json"


@pytest.fixture(scope="session")
def registry():
  from rospr_tasks import registry as registry_lib  # pylint: disable=g-import-not-at-top  (registers on import)
  missing = {k: v for k, v in registry_lib.register_all().items() if v != "registered"}
  if missing:
    pytest.fail(f"rospr_tasks could not register {sorted(missing)}: {missing}", pytrace=False)
  return registry_lib


@pytest.fixture(scope="session")
def example_records() -> dict:
  with open(RECORDS_PATH, encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, example_records) -> pathlib.Path:
  from rospr_jax.data import catalog  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("rospr_task_data")
  for spec in catalog.T0_TRAIN_DATASETS + catalog.HELD_OUT_DATASETS:
    folder = root / spec.key
    folder.mkdir(parents=True, exist_ok=True)
    for _, split in spec.splits:
      with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in example_records[spec.key])
  return root


@pytest.fixture()
def with_data(data_dir, monkeypatch) -> pathlib.Path:
  monkeypatch.setenv("ROSPR_DATA_DIR", str(data_dir))
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  return data_dir

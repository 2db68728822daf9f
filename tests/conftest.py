"""Test-wide settings: CPU only, 8 simulated devices for the sharding tests (set before JAX loads);
local copies of URL folders and files in a temporary folder of this session, not the user's cache."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "ROSPR_REMOTE_CACHE" not in os.environ:
  os.environ["ROSPR_REMOTE_CACHE"] = tempfile.mkdtemp(prefix="rospr-remote-copies-")
  atexit.register(shutil.rmtree, os.environ["ROSPR_REMOTE_CACHE"], ignore_errors=True)


import json  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

RECORDS_PATH = pathlib.Path(__file__).parent / "data" / "testdata" / "example_records.json"


@pytest.fixture(scope="session")
def example_records() -> dict:
  """Hand-written records of the 47 datasets (T0 sources and held-out), in Hugging Face's field layout."""
  with open(RECORDS_PATH, encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, example_records) -> pathlib.Path:
  """Every split of the 47 datasets as JSON lines (the example records), under one data folder."""
  from rospr_jax.data import catalog  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("rospr_data")
  for spec in catalog.T0_TRAIN_DATASETS + catalog.HELD_OUT_DATASETS:
    folder = root / spec.key
    folder.mkdir(parents=True, exist_ok=True)
    for _, split in spec.splits:
      with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in example_records[spec.key])
  return root

"""The bucket backend users run is the one the tests run: epath on fsspec, with gcsfs for gs:// and s3fs
for s3:// (rospr_jax/storage/backend.py), served here by local emulators (tests/conftest.py:
bucket_servers); a bucket that cannot be used is refused in one line naming the flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rospr_jax import storage
from rospr_jax.storage import backend, copies

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bucket_urls_take_fsspec_with_the_named_drivers_not_tf_io_gfile(bucket_servers):
  """TensorFlow is installed (epath's default for gs:// and s3:// then is tf.io.gfile); ours is fsspec.
  (`bucket_servers`: the drivers are made against the emulators, with no search for credentials.)"""
  import importlib.util
  import gcsfs.core
  import s3fs
  from etils.epath import backend as epath_backend
  assert importlib.util.find_spec("tensorflow") is not None
  for url, driver in (("gs://b/x", gcsfs.core.GCSFileSystem), ("s3://b/x", s3fs.S3FileSystem)):
    assert storage.Path(url)._backend is epath_backend.fsspec_backend, url  # pylint: disable=protected-access
    assert type(epath_backend.fsspec_backend.fs(url)) is driver, url
    assert type(backend.filesystem(url)) is driver, url


@pytest.mark.parametrize("object_store", ["gs", "s3"], indirect=True)
def test_the_storage_rule_at_either_emulated_bucket(object_store, tmp_path, monkeypatch):
  """A folder artifact committed by its manifest, files written whole, and checked local copies, on the
  drivers users run (a request to a real bucket differs only in its endpoint and credentials)."""
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  scheme = object_store.protocol[0]
  with storage.output_folder(f"{scheme}://bucket/lib", "Library", kind="test_library") as tmp:
    os.makedirs(os.path.join(tmp, "shards"))
    storage.save_npy(os.path.join(tmp, "shards", "a.npy"), np.arange(3))
  library = storage.ManifestKind("Library", "test_library")
  assert library.read(f"{scheme}://bucket/lib").files.keys() == {"shards/a.npy"}  # present, sha256 checked
  assert sorted(object_store.find("bucket/lib")) == ["bucket/lib/manifest.json", "bucket/lib/shards/a.npy"]
  copy = copies.local_copy(f"{scheme}://bucket/lib", "--library")
  assert np.load(os.path.join(copy, "shards", "a.npy")).tolist() == [0, 1, 2]
  storage.write_json(f"{scheme}://bucket/run/records/T0.json", {"accuracy": 1.0})
  assert storage.read_json(f"{scheme}://bucket/run/records/T0.json") == {"accuracy": 1.0}
  assert backend.listing(f"{scheme}://bucket/run/records/T0.json").keys() == {"T0.json"}
  object_store.pipe_file("bucket/lib/shards/a.npy", b"\x93NUMPY damaged")
  with pytest.raises(ValueError, match=r"Library file shards/a.npy in .*bucket/lib is corrupted"):
    library.read(f"{scheme}://bucket/lib")
  assert copies.local_copy(f"{scheme}://bucket/lib", "--library") != copy  # a new version: a new copy


def _rospr(tmp_path, out: str, env: dict[str, str]) -> subprocess.CompletedProcess:
  """`rospr build-library --out OUT` with valid inputs, in a process with the environment `env`."""
  np.save(tmp_path / "p.npy", np.zeros((1, 2, 64), dtype=np.float32))
  (tmp_path / "i.jsonl").write_text('{"source": "a", "text": "x"}\n')
  (tmp_path / "names.txt").write_text("a\n")
  argv = ["build-library", "--out", out, "--prompts", str(tmp_path / "p.npy"), "--instances",
          str(tmp_path / "i.jsonl"), "--source-names", str(tmp_path / "names.txt"), "--random-retriever",
          "tiny", "--vocab", str(tmp_path / "no-vocab.model")]
  return subprocess.run([sys.executable, "-m", "rospr_jax.cli", *argv], capture_output=True, text=True,
                        timeout=300, cwd=REPO, env=env)


def _one_line(done: subprocess.CompletedProcess, start: str) -> None:
  assert done.returncode == 2, done.stderr
  assert done.stderr.count("\n") == 1 and done.stderr.startswith(start), done.stderr


def test_a_bucket_without_credentials_is_refused_in_one_line_naming_the_flag(tmp_path):
  """A fresh machine (no credentials): one line, exit 2, before the inputs are read."""
  absent = str(tmp_path / "absent")
  env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
  env.update(AWS_SHARED_CREDENTIALS_FILE=absent, AWS_CONFIG_FILE=absent, AWS_EC2_METADATA_DISABLED="true")
  _one_line(_rospr(tmp_path, "s3://bucket/lib", env),
            "rospr build-library: --out s3://bucket/lib: cannot reach the bucket through s3fs (NoCredentialsError")


def test_a_bucket_whose_driver_is_missing_is_refused_in_one_line_naming_the_flag(tmp_path):
  """gcsfs not importable (a shadowing package that fails as a missing one does)."""
  shadow = tmp_path / "shadow" / "gcsfs"
  shadow.mkdir(parents=True)
  (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'gcsfs'\")\n")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])}
  _one_line(_rospr(tmp_path, "gs://bucket/lib", env),
            "rospr build-library: --out gs://bucket/lib: gs:// needs the gcsfs package, which is not installed")


def _examples(path) -> None:
  rng = np.random.default_rng(0)
  path.write_text("".join(
      json.dumps({"source": ["alpha", "beta"][i % 2], "inputs": rng.integers(3, 512, 8).tolist(),
                  "targets": rng.integers(3, 512, 2).tolist() + [1]}) + "\n" for i in range(16)))


def _train(examples, model_dir, steps: int) -> list[str]:
  return ["train-prompts", "--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin",
          f"--gin.EXAMPLES_FILE='{examples}'", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
          "--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=16", "--gin.TARGET_LENGTH=4", "--gin.PROMPT_LENGTH=4",
          "--gin.CHECKPOINT_EVERY=2", "--gin_bindings=configs.LoopConfig.summaries = False"]


def test_a_model_dir_at_an_emulated_gs_bucket_checkpoints_and_resumes_as_a_local_one(object_store, tmp_path,
                                                                                  monkeypatch, capsys):
  """MODEL_DIR at gs://: orbax's paths take this backend and its arrays tensorstore's GCS driver (pointed
  at the emulator by TENSORSTORE_GCS_HTTP_URL); 2 steps, then a rerun to 4 that resumes, give the
  prompts 4 steps in a local folder give."""
  from rospr_jax import cli
  from rospr_jax.prompt import export
  monkeypatch.setenv("ROSPR_REMOTE_CACHE", str(tmp_path / "copies"))
  _examples(tmp_path / "ex.jsonl")
  assert cli.main(_train(tmp_path / "ex.jsonl", tmp_path / "local", 4)) == 0
  assert cli.main(_train(tmp_path / "ex.jsonl", "gs://bucket/prompts", 2)) == 0
  capsys.readouterr()
  assert cli.main(_train(tmp_path / "ex.jsonl", "gs://bucket/prompts", 4)) == 0
  assert "Trained 2 prompts for 4 steps (resumed from step 2: 2 more steps)" in capsys.readouterr().out
  assert {"bucket/prompts/checkpoints/2", "bucket/prompts/checkpoints/4"} <= set(object_store.ls("bucket/prompts/checkpoints"))
  local = export.load_prompts(str(tmp_path / "local" / "export"), expected_sources=["alpha", "beta"])
  at_url = export.load_prompts(copies.local_copy("gs://bucket/prompts/export", "--prompts"),
                               expected_sources=["alpha", "beta"])
  assert at_url.step == local.step == 4
  np.testing.assert_array_equal(at_url.prompts, local.prompts)

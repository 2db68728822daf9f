"""Test-wide settings: CPU only, 8 simulated devices for the sharding tests (set before JAX loads); no
cloud metadata lookups; local copies of URL folders and files in a temporary folder of this session,
not the user's cache; local GCS and S3 emulators for the bucket tests (`bucket_servers`)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No test asks a cloud's metadata server for credentials (the bucket drivers and tensorstore look there
# when they find none): such lookups are turned off, or sent to a closed port on this machine.
os.environ.update(NO_GCE_CHECK="true", AWS_EC2_METADATA_DISABLED="true", GCE_METADATA_HOST="127.0.0.1:1",
                  GCE_METADATA_IP="127.0.0.1:1", GCE_METADATA_ROOT="127.0.0.1:1")
# One JAX compilation cache for the whole run, in a new folder (the xdist workers and every `rospr`
# subprocess inherit it): a command run as a subprocess recompiles what an earlier one compiled
# (op by op, a tiny model's random init alone is 75 programs), so a cold start costs 6 s and a warm
# one 2.6 s. It is JAX's own cache, keyed by program, backend and flags.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rospr-test-jax-cache-")
  os.environ.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
if "ROSPR_REMOTE_CACHE" not in os.environ:
  os.environ["ROSPR_REMOTE_CACHE"] = tempfile.mkdtemp(prefix="rospr-remote-copies-")
  atexit.register(shutil.rmtree, os.environ["ROSPR_REMOTE_CACHE"], ignore_errors=True)


import json  # noqa: E402
import logging  # noqa: E402
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


# ---- BIG-bench: a small checkout the tests write (tests/bigbench_checkout.py), and a store built from it ----


@pytest.fixture(scope="session")
def bigbench_checkout(tmp_path_factory) -> pathlib.Path:
  """A google/BIG-bench checkout (generated tasks under real names), written once per session."""
  import bigbench_checkout as checkout  # tests/ is on sys.path (this conftest's folder)  # pylint: disable=g-import-not-at-top
  return checkout.write_checkout(tmp_path_factory.mktemp("bigbench_checkout"))


@pytest.fixture(scope="session")
def bigbench_cache(tmp_path_factory, bigbench_checkout) -> pathlib.Path:
  """A cache folder holding the BIG-bench store built from `bigbench_checkout`; every other entry of the
  user's cache (promptsource, archives) is linked in, so only BIG-bench differs."""
  from rospr_jax import storage  # pylint: disable=g-import-not-at-top
  from rospr_jax.data import bigbench_sources  # pylint: disable=g-import-not-at-top
  cache = tmp_path_factory.mktemp("rospr_cache")
  real = pathlib.Path(storage.cache_root())
  if real.is_dir():
    for entry in real.iterdir():
      if entry.name != bigbench_sources.STORE_NAME and not entry.name.startswith("."):
        (cache / entry.name).symlink_to(entry)
  bigbench_sources.build_store(bigbench_checkout, cache)
  return cache


@pytest.fixture
def bigbench_env(monkeypatch, bigbench_checkout, bigbench_cache) -> pathlib.Path:
  """ROSPR_CACHE at `bigbench_cache` and ROSPR_BIGBENCH at the test checkout, for this test (and the
  commands it runs in subprocesses, which inherit os.environ): `BigBenchStore()` and
  `bigbench_configured()` then see the test store. Returns the store folder."""
  monkeypatch.setenv("ROSPR_CACHE", str(bigbench_cache))
  monkeypatch.setenv("ROSPR_BIGBENCH", str(bigbench_checkout))
  return bigbench_cache / "bigbench"


class TinyModel:
  """A tiny random T5 saved as a Hugging Face checkpoint with the offline vocabulary as its spiece.model.

  Attributes:
    checkpoint: the checkpoint folder (str); treat it as read-only, it is shared by the session.
    vocab: the offline SentencePiece model (str).
    config: its T5Config (embeddings padded to a multiple of 128, as T5's are); model: its backbone.
    params: its parameters (seed 0).
  """

  def __init__(self, root: pathlib.Path):
    import jax  # pylint: disable=g-import-not-at-top
    from rospr_jax import tokenization  # pylint: disable=g-import-not-at-top
    from rospr_jax.data import vocabulary  # pylint: disable=g-import-not-at-top
    from rospr_jax.model import get_config, init_params, save_hf  # pylint: disable=g-import-not-at-top
    self.vocab = vocabulary.offline_vocabulary_path()
    self.config = get_config("tiny", vocab_size=-(-tokenization.Tokenizer(self.vocab).vocab_size // 128) * 128)
    self.params = init_params(self.config, jax.random.PRNGKey(0))
    self.checkpoint = str(root / "t0")
    save_hf(self.checkpoint, self.config, self.params)
    shutil.copyfile(self.vocab, os.path.join(self.checkpoint, "spiece.model"))

  @property
  def model(self):
    """Its `PromptedBackbone` (what the steps take)."""
    from rospr_jax.model import model_for  # pylint: disable=g-import-not-at-top
    return model_for(self.config)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
  """The session's one tiny checkpoint (the recipe every test that needs a T0 stand-in shares)."""
  return TinyModel(tmp_path_factory.mktemp("tiny_model"))


BUCKETS = ("bucket", "data", "damaged", "convert-bucket", "queries-bucket", "examples-bucket", "data-bucket",
           "evaluate-bucket")


@pytest.fixture(scope="session")
def bucket_servers():
  """A GCS emulator (gcp-storage-emulator) and an S3 one (moto's server) on 127.0.0.1 for the session,
  and the drivers' endpoints pointed at them, here and in the commands the tests start: only the
  endpoints and credentials differ from a real bucket's. Yields {scheme: server}."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  from moto.server import ThreadedMotoServer  # pylint: disable=g-import-not-at-top
  from rospr_jax.storage import backend  # pylint: disable=g-import-not-at-top
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # a line per request, per 404
  gcs = create_server("127.0.0.1", 0, in_memory=True)
  s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
  gcs.start()
  s3.start()
  gcs_url = f"http://127.0.0.1:{gcs._api._httpd.server_address[1]}"  # pylint: disable=protected-access
  env = {"STORAGE_EMULATOR_HOST": gcs_url, "TENSORSTORE_GCS_HTTP_URL": gcs_url,  # gcsfs; orbax's arrays
         "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3._server.server_address[1]}",  # pylint: disable=protected-access
         "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
  with pytest.MonkeyPatch.context() as patch:
    for name, value in env.items():
      patch.setenv(name, value)
    backend.forget()
    yield {"gs": gcs, "s3": s3}
  backend.forget()
  gcs.stop()
  s3.stop()


def _empty_buckets(scheme: str, server) -> None:
  """Every bucket of `BUCKETS` at `scheme`'s emulator, empty."""
  import urllib.request  # pylint: disable=g-import-not-at-top
  from rospr_jax.storage import backend  # pylint: disable=g-import-not-at-top
  if scheme == "gs":
    server.wipe()
  else:
    urllib.request.urlopen(urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + "/moto-api/reset",
                                                  method="POST")).close()
  fs = backend.filesystem(f"{scheme}://")
  fs.invalidate_cache()
  for name in BUCKETS:
    fs.mkdir(name)


@pytest.fixture(params=["gs"])
def object_store(request, bucket_servers):
  """gs:// (or, parametrized indirectly, s3://) served by a local emulator through the production
  backend (rospr_jax.storage.backend: epath, fsspec, gcsfs or s3fs), with the buckets of `BUCKETS`
  empty. Yields the driver's filesystem (`.protocol[0]` is the scheme). Orbax's arrays go through
  tensorstore's own drivers: its GCS driver is pointed at the same emulator, its S3 driver at none."""
  from rospr_jax.storage import backend  # pylint: disable=g-import-not-at-top
  scheme = request.param
  _empty_buckets(scheme, bucket_servers[scheme])
  yield backend.filesystem(f"{scheme}://")

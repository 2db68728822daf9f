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


@pytest.fixture
def object_store(monkeypatch):
  """gs:// served from memory in this process, through the same etils.epath / fsspec path a real bucket
  takes (no network): the storage rule's object-store branch (no rename, manifest last) runs for real.
  Orbax's arrays go through tensorstore's own GCS driver, which this cannot serve."""
  import fsspec  # pylint: disable=g-import-not-at-top
  from etils.epath import backend, gpath  # pylint: disable=g-import-not-at-top
  from fsspec.implementations.memory import MemoryFileSystem  # pylint: disable=g-import-not-at-top

  class InMemoryBucket(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store, pseudo_dirs = {}, [""]

    def __init__(self, *args, **kwargs):  # gcsfs's options (finalize_on_close) mean nothing here
      del args, kwargs
      super().__init__()

  for name in ("gs", "gcs"):
    fsspec.register_implementation(name, InMemoryBucket, clobber=True)
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  yield InMemoryBucket()
  backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  from fsspec.registry import _registry  # pylint: disable=g-import-not-at-top
  for name in ("gs", "gcs"):
    _registry.pop(name, None)

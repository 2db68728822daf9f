"""The checkpoint fingerprint is a digest of the weights, not of the files: a Hugging Face checkpoint in
every layout, its `rospr convert` to T5X and the round trip back share it, whatever dtype a backbone is
loaded in; a changed weight value, shape, stored dtype or inference config field changes it. Its cache,
and the memory of hashing (one tensor at a time, inside the loading loop)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from checkpoint_fixtures import hf_dirs, hf_model  # noqa: F401  (fixtures)
from checkpoint_fixtures import RSS_FUNCTION
from checkpoint_fixtures import EXPECTED_CONFIG, KINDS, edit_config
from rospr_jax.backbone import load_backbone
from rospr_jax.model import checkpoints
from rospr_jax.model.checkpoints import (checkpoint_fingerprint, load_checkpoint, load_fingerprinted,
                                         params_fingerprint)
# The format writers alone: files with no recorded fingerprint, as the hub's (these tests edit them in
# place and count the hashing); `checkpoints.save_hf` / `save_t5x` record it (the last test).
from rospr_jax.model.hf_checkpoint import save_hf
from rospr_jax.model.t5x_checkpoint import save_t5x
from rospr_jax.model.param_tree import flatten, param_shapes, unflatten

BF16 = np.dtype(ml_dtypes.bfloat16)
ZARR = dict(inline_max_bytes=100)  # Kernels in zarr arrays, as T5X stores a real model's.
# A trusted cache entry needs files that had not changed for `_RACY_NS` when they were hashed; the
# tests shorten that to 0.1 s (still far above a kernel tick, the coarseness of file timestamps).
RACY_S = 0.1


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
  """Every test's fingerprints use a cache of their own, never the user's."""
  cache = tmp_path_factory.mktemp("rospr_cache")
  monkeypatch.setenv("ROSPR_CACHE", str(cache))
  return cache


@pytest.fixture
def short_racy_window(monkeypatch):
  monkeypatch.setattr(checkpoints, "_RACY_NS", int(RACY_S * 1e9))


@pytest.fixture
def hashed(monkeypatch):
  """The T5X names of the tensors hashed, in order (a checkpoint hashed whole adds all of them)."""
  names = []
  real = checkpoints._tensor_digest

  def counting(name, array):
    names.append(name)
    return real(name, array)

  monkeypatch.setattr(checkpoints, "_tensor_digest", counting)
  return names


def _times_hashed(names: list[str]) -> int:
  return names.count("token_embedder/embedding")


def _convert(source: Path, dest: Path, fmt: str, *flags: str) -> str:
  """`rospr convert` as the user runs it (a subprocess); returns what it printed."""
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "convert", "--from", str(source), "--to",
                         str(dest), "--format", fmt, *flags], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  return done.stdout


def _with(params: dict, **changes) -> dict:
  """`params` (nested) with the flat entries `changes` ("a/b/c"=array) replaced."""
  return unflatten({**flatten(params), **{k.replace("__", "/"): v for k, v in changes.items()}})


# --------------------------------------------------------------------------------------------------
# One model, one fingerprint.


def test_layouts_copies_conversions_and_round_trips_share_one_fingerprint(hf_dirs, tmp_path):
  fingerprint = checkpoint_fingerprint(hf_dirs["safetensors"])
  assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
  # One safetensors file, shards with their index, a PyTorch pickle with the tied aliases.
  assert {checkpoint_fingerprint(hf_dirs[kind]) for kind in KINDS} == {fingerprint}
  copy = Path(shutil.copytree(hf_dirs["bin"], tmp_path / "copy"))
  hf = json.loads((copy / "config.json").read_text())
  (copy / "config.json").write_text(json.dumps(dict(reversed(list(hf.items()))), indent=4))
  assert checkpoint_fingerprint(copy) == fingerprint  # Nor place, key order or layout of the JSON.

  # rospr convert HF -> T5X -> HF, each printing the fingerprint of what it wrote.
  assert f"fingerprint {fingerprint}" in _convert(hf_dirs["sharded"], tmp_path / "t5x", "t5x", "--step", "3")
  step_dir = tmp_path / "t5x" / "checkpoint_3"
  assert {checkpoint_fingerprint(p) for p in (tmp_path / "t5x", step_dir, step_dir / "checkpoint")} == {
      fingerprint}
  assert f"fingerprint {fingerprint}" in _convert(tmp_path / "t5x", tmp_path / "back", "hf")
  assert checkpoint_fingerprint(tmp_path / "back") == fingerprint

  # T5X's zarr arrays (the convert above kept the tiny kernels inline), and the tree in memory.
  config, params = load_checkpoint(hf_dirs["bin"], None)
  save_t5x(tmp_path / "zarr", config, params, **ZARR)
  assert checkpoint_fingerprint(tmp_path / "zarr") == params_fingerprint(config, params) == fingerprint


def test_a_changed_value_name_shape_or_stored_dtype_changes_it(hf_dirs, tmp_path):
  fingerprint = checkpoint_fingerprint(hf_dirs["safetensors"])
  config, params = load_checkpoint(hf_dirs["safetensors"], None)
  flat = flatten(params)

  def both(name: str, params: dict, config=config) -> str:
    """The fingerprint of `params` saved in both formats (they agree)."""
    save_hf(tmp_path / f"{name}_hf", config, params)
    save_t5x(tmp_path / f"{name}_t5x", config, params, **ZARR)
    found = {checkpoint_fingerprint(tmp_path / f"{name}_{fmt}") for fmt in ("hf", "t5x")}
    assert len(found) == 1, name
    return found.pop()

  kernel = flat["decoder/layers_2/mlp/wo/kernel"].copy()
  kernel[-1, -1] = np.nextafter(kernel[-1, -1], np.float32(np.inf))  # The smallest change of one value.
  seen = {fingerprint, both("value", _with(params, decoder__layers_2__mlp__wo__kernel=kernel))}
  query, key = flat["encoder/layers_0/attention/query/kernel"], flat["encoder/layers_0/attention/key/kernel"]
  seen.add(both("swapped", _with(params, encoder__layers_0__attention__query__kernel=key,
                                 encoder__layers_0__attention__key__kernel=query)))
  # The same values stored in bfloat16 (as `rospr convert --dtype bfloat16` writes), and those
  # bfloat16 values stored back in float32: the stored dtype counts.
  half = {k: v.astype(BF16) for k, v in flat.items()}
  seen.add(both("bfloat16", unflatten(half)))
  seen.add(both("widened", unflatten({k: v.astype(np.float32) for k, v in half.items()})))
  # A shape: one more row of embeddings and logits (the config's vocab_size with it).
  wider = config.replace(vocab_size=config.vocab_size + 1)
  grown = _with(params, token_embedder__embedding=np.pad(flat["token_embedder/embedding"], ((0, 1), (0, 0))),
                decoder__logits_dense__kernel=np.pad(flat["decoder/logits_dense/kernel"], ((0, 0), (0, 1))))
  seen.add(both("shape", grown, config=wider))
  assert len(seen) == 6

  # One bit of the weight file, in place.
  directory = Path(shutil.copytree(hf_dirs["safetensors"], tmp_path / "flip"))
  _flip_middle_byte(directory / "model.safetensors", keep_mtime=False)
  assert checkpoint_fingerprint(directory) not in seen


def test_inference_fields_of_the_config_count_and_training_ones_do_not(hf_dirs, tmp_path):
  fingerprint = checkpoint_fingerprint(hf_dirs["safetensors"])
  seen = {fingerprint}
  for i, change in enumerate([dict(relative_attention_max_distance=64), dict(layer_norm_epsilon=1e-5)]):
    directory = Path(shutil.copytree(hf_dirs["safetensors"], tmp_path / f"hf{i}"))
    edit_config(directory, **change)
    seen.add(checkpoint_fingerprint(directory))
  assert len(seen) == 3
  directory = Path(shutil.copytree(hf_dirs["safetensors"], tmp_path / "dropout"))
  edit_config(directory, dropout_rate=0.3, use_cache=False)  # Training only; bookkeeping.
  assert checkpoint_fingerprint(directory) == fingerprint
  # T5X keeps those numbers in its side file: the same rule.
  config, params = load_checkpoint(hf_dirs["safetensors"], None)
  step_dir = save_t5x(tmp_path / "t5x", config, params)
  side = json.loads((step_dir / "rospr_config.json").read_text())
  (step_dir / "rospr_config.json").write_text(json.dumps({**side, "dropout_rate": 0.3}))
  assert checkpoint_fingerprint(step_dir) == fingerprint
  (step_dir / "rospr_config.json").write_text(json.dumps({**side, "layer_norm_epsilon": 1e-5}))
  assert checkpoint_fingerprint(step_dir) in seen - {fingerprint}


def test_the_load_dtype_does_not_change_it(hf_dirs, tmp_path, monkeypatch, hashed):
  """Each load hashes (a fresh cache every time), before the cast: float32, bfloat16 and float16 loads
  of float32 files agree, as do float32 and bfloat16 loads of bfloat16 files."""
  config, params = load_checkpoint(hf_dirs["safetensors"], None)
  save_t5x(tmp_path / "t5x_bf16", config, unflatten({k: v.astype(BF16) for k, v in flatten(params).items()}))
  for checkpoint, dtypes in ((hf_dirs["safetensors"], ("float32", "bfloat16", "float16")),
                             (tmp_path / "t5x_bf16", ("float32", "bfloat16"))):
    found = set()
    for i, dtype in enumerate(dtypes):
      monkeypatch.setenv("ROSPR_CACHE", str(tmp_path / f"cache_{checkpoint.name}_{i}"))
      hashed.clear()
      backbone = load_backbone(str(checkpoint), dtype=dtype)
      assert _times_hashed(hashed) == 1 and backbone.dtype == dtype
      assert {a.dtype.name for a in flatten(backbone.params).values()} == {dtype}
      found.add(backbone.fingerprint)
      # Hashing inside the loading loop loads exactly what load_checkpoint loads.
      loaded = flatten(load_checkpoint(checkpoint, dtype)[1])
      for name, array in flatten(backbone.params).items():
        assert array.dtype == loaded[name].dtype and np.array_equal(array, loaded[name]), name
    assert found == {checkpoint_fingerprint(checkpoint)}, checkpoint
  assert checkpoint_fingerprint(tmp_path / "t5x_bf16") != checkpoint_fingerprint(hf_dirs["safetensors"])


def test_random_weights_keep_their_own_rule():
  a, b = load_backbone(size="tiny", seed=0), load_backbone(size="tiny", seed=1, dtype="bfloat16")
  assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 16
  assert load_backbone(size="tiny", seed=0, dtype="bfloat16").fingerprint == a.fingerprint
  assert params_fingerprint(a.config, a.params) != a.fingerprint  # "random-init tiny seed=0"


# --------------------------------------------------------------------------------------------------
# The cache.


def _big_hf_checkpoint(directory: Path) -> Path:
  """A Hugging Face checkpoint whose one safetensors file exceeds 2 MiB (vocab 30,000: 2.9 MB)."""
  config = EXPECTED_CONFIG.replace(vocab_size=30_000)
  rng = np.random.default_rng(0)
  params = unflatten({key: rng.standard_normal(shape).astype(np.float32)
                      for key, shape in param_shapes(config).items()})
  save_hf(directory, config, params)
  assert (directory / "model.safetensors").stat().st_size > 2 * 1024 * 1024
  return directory


def _flip_middle_byte(file: Path, keep_mtime: bool) -> None:
  """Flips one bit of the byte in the middle of `file`, in place: same size, same inode."""
  before = file.stat()
  with open(file, "r+b") as f:
    f.seek(before.st_size // 2)
    byte = f.read(1)[0]
    f.seek(before.st_size // 2)
    f.write(bytes([byte ^ 0x80]))  # The sign bit of a float32 in the middle of a tensor, say.
  if keep_mtime:
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
  after = file.stat()
  assert (after.st_size, after.st_ino) == (before.st_size, before.st_ino)
  assert not keep_mtime or after.st_mtime_ns == before.st_mtime_ns


def test_a_second_load_of_unchanged_files_hashes_nothing(tmp_path, _private_cache, short_racy_window, hashed):
  config, params = load_checkpoint(_big_hf_checkpoint(tmp_path / "big"), None)
  step_dir = save_t5x(tmp_path / "t5x", config, params, **ZARR)
  time.sleep(2 * RACY_S)  # Old enough for the fingerprints to be trusted from the cache.
  fingerprint = load_backbone(str(tmp_path / "big"), dtype="bfloat16").fingerprint
  assert checkpoint_fingerprint(tmp_path / "t5x") == fingerprint
  assert _times_hashed(hashed) == 2 and len(hashed) == 2 * len(param_shapes(config))
  cache = json.loads((_private_cache / "checkpoint_fingerprint.json").read_text())
  assert sorted(cache["checkpoints"]) == sorted([str((tmp_path / "big").resolve()), str(step_dir.resolve())])
  assert {entry["fingerprint"] for entry in cache["checkpoints"].values()} == {fingerprint}
  hashed.clear()
  assert load_backbone(str(tmp_path / "big"), dtype="float32").fingerprint == fingerprint
  assert load_fingerprinted(step_dir / "checkpoint", None)[2] == fingerprint
  assert checkpoint_fingerprint(tmp_path / "big") == checkpoint_fingerprint(step_dir) == fingerprint
  assert hashed == []


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edit", "edit_then_utime"])
def test_a_byte_changed_in_place_is_seen_through_the_cache(tmp_path, short_racy_window, hashed, keep_mtime):
  directory = _big_hf_checkpoint(tmp_path / "big")
  copy = Path(shutil.copytree(directory, tmp_path / "copy"))
  time.sleep(2 * RACY_S)
  fingerprint = checkpoint_fingerprint(directory)
  assert checkpoint_fingerprint(copy) == fingerprint
  assert checkpoint_fingerprint(directory) == fingerprint
  assert _times_hashed(hashed) == 2  # The third call hashed nothing: the cache answered.
  _flip_middle_byte(directory / "model.safetensors", keep_mtime)
  # Size, inode (and with utime the mtime) are unchanged; the ctime is not, so the cache misses.
  assert checkpoint_fingerprint(directory) != fingerprint
  assert _times_hashed(hashed) == 3
  assert checkpoint_fingerprint(copy) == fingerprint
  _flip_middle_byte(directory / "model.safetensors", keep_mtime)  # Back to the original bytes.
  assert checkpoint_fingerprint(directory) == fingerprint


def test_files_written_just_before_hashing_are_hashed_again(tmp_path, hashed):
  """Timestamps are coarser than the clock: a file changed just before it was hashed could be changed
  again with the same ctime, so its cached fingerprint is not trusted (the default window is 2 s)."""
  directory = _big_hf_checkpoint(tmp_path / "big")
  fingerprint = checkpoint_fingerprint(directory)
  _flip_middle_byte(directory / "model.safetensors", keep_mtime=True)
  assert checkpoint_fingerprint(directory) != fingerprint
  assert _times_hashed(hashed) == 2


def test_files_changed_while_they_were_hashed_are_not_cached(tmp_path, _private_cache, short_racy_window,
                                                             monkeypatch):
  directory = _big_hf_checkpoint(tmp_path / "big")
  time.sleep(2 * RACY_S)
  real = checkpoints._tensor_digest

  def touching(name, array):
    if name == "token_embedder/embedding":
      os.utime(directory / "config.json")  # A writer at work meanwhile.
    return real(name, array)

  monkeypatch.setattr(checkpoints, "_tensor_digest", touching)
  checkpoint_fingerprint(directory)
  assert not (_private_cache / "checkpoint_fingerprint.json").exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 1, "checkpoints": {"x": 3}}',
                                     '{"version": 1, "files": {}}', "\x00\xff"])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, _private_cache, short_racy_window, hashed,
                                                  content):
  directory = _big_hf_checkpoint(tmp_path / "big")
  time.sleep(2 * RACY_S)
  expected = checkpoint_fingerprint(directory)
  cache_file = _private_cache / "checkpoint_fingerprint.json"
  cache_file.write_text(content, encoding="latin-1")
  hashed.clear()
  assert checkpoint_fingerprint(directory) == expected
  assert _times_hashed(hashed) == 1
  cache = json.loads(cache_file.read_text())  # Rewritten whole...
  assert list(cache["checkpoints"]) == [str(directory.resolve())]
  assert checkpoint_fingerprint(directory) == expected
  assert _times_hashed(hashed) == 1  # ...and read again.


def test_without_a_writable_cache_it_just_hashes(tmp_path, monkeypatch, hashed):
  directory = _big_hf_checkpoint(tmp_path / "big")
  expected = checkpoint_fingerprint(directory)
  blocker = tmp_path / "not_a_folder"
  blocker.write_text("a file where the cache folder should be")
  monkeypatch.setenv("ROSPR_CACHE", str(blocker))
  assert checkpoint_fingerprint(directory) == expected
  assert load_fingerprinted(directory)[2] == expected
  assert _times_hashed(hashed) == 3


def test_hashing_a_large_checkpoint_is_logged(tmp_path, monkeypatch, caplog):
  directory = _big_hf_checkpoint(tmp_path / "big")
  monkeypatch.setattr(checkpoints, "_LOG_BYTES", 1_000_000)
  with caplog.at_level("INFO", logger="rospr_jax.model.checkpoints"):
    checkpoint_fingerprint(directory)
  assert f"hashing the tensors of {directory} (0.0 GB) for the checkpoint fingerprint" in caplog.text


# --------------------------------------------------------------------------------------------------
# Memory: one tensor at a time.


def test_hashing_holds_one_tensor_and_loading_one_copy(tmp_path):
  """A 304 MiB float32 checkpoint of 16-32 MiB tensors: fingerprinting it alone grows the resident
  memory by about one tensor, and loading it in bfloat16 while hashing by about the bfloat16 weights
  (152 MiB) and one stored tensor, never by the float32 checkpoint."""
  config = EXPECTED_CONFIG.replace(vocab_size=8192, emb_dim=1024, num_heads=8, head_dim=64, mlp_dim=4096,
                                   num_encoder_layers=2, num_decoder_layers=2)
  rng = np.random.default_rng(0)
  save_hf(tmp_path / "big", config, unflatten({k: rng.standard_normal(s, np.float32)
                                               for k, s in param_shapes(config).items()}))
  size = (tmp_path / "big" / "model.safetensors").stat().st_size
  assert size > 300 * 2**20
  script = textwrap.dedent(f"""
      from rospr_jax.model.checkpoints import checkpoint_fingerprint, load_fingerprinted
      from rospr_jax.model.param_tree import flatten
      before = rss("VmRSS:")
      fingerprint = checkpoint_fingerprint({str(tmp_path / 'big')!r})
      hashing = rss("VmHWM:")
      config, params, again = load_fingerprinted({str(tmp_path / 'big')!r}, "bfloat16")
      assert again == fingerprint
      print(before, hashing, rss("VmHWM:"), sum(a.nbytes for a in flatten(params).values()))
      """)
  # No cache: the load hashes too.
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "ROSPR_CACHE": str(tmp_path / "big" / "config.json")}
  out = subprocess.run([sys.executable, "-c", RSS_FUNCTION + script], capture_output=True, text=True, check=True, env=env)
  before, hashing, loading, loaded = (int(x) for x in out.stdout.split()[-4:])
  assert abs(loaded - size // 2) < 2**20
  # The largest tensor (32 MiB), a 16 MiB block of a transposed one, slack.
  assert hashing - before < (32 + 16 + 32) * 2**20, (hashing - before) / 2**20
  assert loading - before < loaded + (32 + 16 + 32) * 2**20, ((loading - before) / 2**20, loaded / 2**20)


@pytest.mark.parametrize("kind", ["hf", "t5x"])
def test_a_checkpoint_changed_after_it_was_written_is_refused_by_its_manifest(tmp_path, kind):
  """`checkpoints.save_hf` / `save_t5x` record the weights' fingerprint in the manifest.json they commit;
  a fingerprinted load checks it, so a weight file edited in place is refused, naming the manifest."""
  from rospr_jax.model import get_config, init_params
  import jax
  config = get_config("tiny")
  params = jax.tree.map(np.asarray, init_params(config, jax.random.PRNGKey(0)))
  if kind == "hf":
    folder = checkpoints.save_hf(tmp_path / "ckpt", config, params)
    weights = folder / "model.safetensors"
  else:
    folder = checkpoints.save_t5x(tmp_path / "ckpt", config, params, inline_max_bytes=10**9)  # msgpack only
    weights = folder / "checkpoint"
  recorded = json.loads((folder / "manifest.json").read_text())["weights_fingerprint"]
  assert recorded == params_fingerprint(config, params) == load_fingerprinted(folder)[2]
  data = bytearray(weights.read_bytes())
  embedding = np.ascontiguousarray(params["token_embedder"]["embedding"]).tobytes()
  data[data.index(embedding[:64]) + 5] ^= 0x10  # one bit of the embedding's values, in place
  weights.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=r"^Checkpoint .*: its weights have fingerprint [0-9a-f]{16}, not the "
                                       rf"{recorded} that {folder / 'manifest.json'} recorded when they were "
                                       r"written: a weight file was changed or damaged since\."):
    load_fingerprinted(folder)
  with pytest.raises(ValueError, match="a weight file was changed or damaged since"):
    checkpoint_fingerprint(folder)


"""Checkpoint import and export against Hugging Face's own files and T5X's layout, and every refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization

from checkpoint_fixtures import hf_copy, hf_dirs, hf_model  # noqa: F401  (fixtures)
from checkpoint_fixtures import RSS_FUNCTION
from checkpoint_fixtures import (EXPECTED_CONFIG, KINDS, edit_config, expected_tree, hf_state, make_hf_model,
                                 save_hf_model)
from rospr_jax.model.checkpoints import detect_format, load_checkpoint, save_hf, save_t5x
from rospr_jax.model.safetensors_file import SafetensorsFile
from rospr_jax.model.t5x_checkpoint import flatten, param_shapes, unflatten

BF16 = np.dtype(ml_dtypes.bfloat16)
# The tiny model's kernels are under the default inline limit: these put all but the [H] scales (48 B)
# and [heads, buckets] tables (96 B) in zarr arrays, as T5X does for a real model.
ZARR = dict(inline_max_bytes=100)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
  """Every test's fingerprints use a cache of their own, never the user's."""
  cache = tmp_path_factory.mktemp("rospr_cache")
  monkeypatch.setenv("ROSPR_CACHE", str(cache))
  return cache


def _assert_trees_identical(actual: dict, expected: dict) -> None:
  actual, expected = flatten(actual), flatten(expected)
  assert sorted(actual) == sorted(expected)
  for key in expected:
    assert actual[key].dtype == expected[key].dtype, key
    assert actual[key].shape == expected[key].shape, key
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def _read_safetensors_with_library(directory: Path) -> dict[str, np.ndarray]:
  """Every tensor of a HF directory's safetensors files, read by the safetensors library (via torch)."""
  from safetensors import safe_open
  tensors = {}
  for file in sorted(directory.glob("*.safetensors")):
    with safe_open(file, framework="pt") as f:
      for key in f.keys():
        tensors[key] = f.get_tensor(key)
  return tensors


# --------------------------------------------------------------------------------------------------
# Hugging Face import: values equal the state dict, in every layout.


@pytest.mark.parametrize("kind", KINDS)
def test_hf_load_equals_state_dict(kind, hf_model, hf_dirs):
  config, params = load_checkpoint(hf_dirs[kind])
  assert config == EXPECTED_CONFIG
  flat = flatten(params)
  expected = expected_tree(hf_state(hf_model))
  assert sorted(flat) == sorted(expected)
  for key, value in expected.items():
    assert flat[key].dtype == np.float32 and flat[key].flags["C_CONTIGUOUS"], key
    np.testing.assert_array_equal(flat[key], value, err_msg=key)
  # Spot checks written out: Linear weights [out, in] are transposed, the bias table too.
  state = hf_state(hf_model)
  q = state["encoder.block.1.layer.0.SelfAttention.q.weight"]  # [heads * d_kv, H] = [15, 12]
  assert q.shape == (15, 12)
  np.testing.assert_array_equal(params["encoder"]["layers_1"]["attention"]["query"]["kernel"], q.T)
  assert params["decoder"]["relpos_bias"]["rel_embedding"].shape == (3, 8)  # [heads, buckets]
  assert params["decoder"]["logits_dense"]["kernel"].shape == (12, 50)     # [H, V]
  assert not np.array_equal(params["decoder"]["logits_dense"]["kernel"],
                            params["token_embedder"]["embedding"].T)      # Untied, as T0.


def test_hf_load_holds_every_hf_parameter(hf_model, hf_dirs):
  _, params = load_checkpoint(hf_dirs["safetensors"])
  ours = sum(a.size for a in flatten(params).values())
  theirs = sum(p.numel() for p in hf_model.parameters())  # Unique parameters (aliases counted once).
  # HF's unused decoder cross-attention has no relative bias either way, so the counts agree exactly.
  assert ours == theirs == EXPECTED_CONFIG.num_parameters()


def test_param_shapes_equal_the_model_tree():
  t5 = pytest.importorskip("rospr_jax.model.t5")
  import jax
  params = jax.eval_shape(lambda: t5.init_params(EXPECTED_CONFIG, jax.random.PRNGKey(0)))
  actual = {k: tuple(v.shape) for k, v in flatten(params).items()}
  assert actual == param_shapes(EXPECTED_CONFIG)


def test_logits_equal_hugging_face(hf_model, hf_dirs):
  """The loaded checkpoint run through this project's model gives PyTorch's logits (float32, 1e-4)."""
  t5 = pytest.importorskip("rospr_jax.model.t5")
  import torch
  config, params = load_checkpoint(hf_dirs["safetensors"])
  rng = np.random.default_rng(0)
  enc = rng.integers(3, 50, (2, 30)).astype(np.int32)  # Longer than max distance 20.
  enc[1, 22:] = 0
  dec = rng.integers(3, 50, (2, 7)).astype(np.int32)
  dec[:, 0] = 0
  ours = np.asarray(t5.T5(config).apply({"params": params}, enc, dec))
  with torch.no_grad():
    theirs = hf_model(input_ids=torch.tensor(enc, dtype=torch.long),
                      attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                      decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_hf_tied_lm_head_of_transformers_5(hf_model, tmp_path):
  """transformers >= 5 saves T5 v1.1 with tie_word_embeddings=true, scale_decoder_outputs=false and no
  lm_head when lm_head is shared: the logits kernel is then the embedding."""
  from safetensors.torch import save_file
  state = {k: v.contiguous() for k, v in hf_model.state_dict().items()
           if k not in ("lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
  save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
  hf_model.config.save_pretrained(tmp_path)
  edit_config(tmp_path, tie_word_embeddings=True, scale_decoder_outputs=False)
  _, params = load_checkpoint(tmp_path)
  np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                state["shared.weight"].numpy().T)


def test_hf_bfloat16_checkpoint_casts_on_the_way(hf_model, tmp_path):
  import torch
  model = make_hf_model(seed=3).to(torch.bfloat16)
  save_hf_model(model, tmp_path / "bf16", "safetensors")
  state16 = {k: v.detach() for k, v in model.state_dict().items()}
  # float32 requested: exact widening.
  _, params = load_checkpoint(tmp_path / "bf16", np.float32)
  expected = expected_tree({k: v.float().numpy() for k, v in state16.items()})
  for key, value in flatten(params).items():
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, expected[key], err_msg=key)
  # bfloat16 requested or kept: the stored bits.
  for dtype in ("bfloat16", None):
    _, params = load_checkpoint(tmp_path / "bf16", dtype)
    for key, value in flatten(params).items():
      assert value.dtype == BF16, key
      np.testing.assert_array_equal(value.astype(np.float32), expected[key], err_msg=key)


def test_hf_float32_checkpoint_cast_to_bfloat16_rounds_like_torch(hf_model, hf_dirs):
  import torch
  config, params = load_checkpoint(hf_dirs["safetensors"], "bfloat16")
  assert config.param_dtype == BF16
  rounded = {k: v.detach().to(torch.bfloat16).float().numpy() for k, v in hf_model.state_dict().items()}
  expected = expected_tree(rounded)
  for key, value in flatten(params).items():
    assert value.dtype == BF16
    np.testing.assert_array_equal(value.astype(np.float32), expected[key], err_msg=key)


def test_bin_written_by_old_torch_format_loads(hf_model, tmp_path):
  """Files in torch's legacy (pre-1.6) format cannot be memory-mapped and are read without mmap."""
  import torch
  hf_model.config.save_pretrained(tmp_path)
  torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
  _, params = load_checkpoint(tmp_path)
  expected = expected_tree(hf_state(hf_model))
  for key, value in flatten(params).items():
    np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_sharded_bin_loads(hf_model, tmp_path):
  import torch
  state = hf_model.state_dict()
  keys = sorted(state)
  halves = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
  for name, part in halves.items():
    torch.save({k: state[k].clone() for k in part}, tmp_path / name)
  (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: n for n, part in halves.items() for k in part}}))
  hf_model.config.save_pretrained(tmp_path)
  _, params = load_checkpoint(tmp_path)
  expected = expected_tree(hf_state(hf_model))
  for key, value in flatten(params).items():
    np.testing.assert_array_equal(value, expected[key], err_msg=key)


# --------------------------------------------------------------------------------------------------
# Hugging Face refusals: weights (config.json: hf_config_test.py; damaged safetensors files:
# safetensors_file_test.py).


def _rewrite_safetensors(directory: Path, drop=(), add=None) -> None:
  from safetensors.torch import save_file
  tensors = {k: v for k, v in _read_safetensors_with_library(directory).items() if k not in drop}
  tensors.update(add or {})
  save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_refuses_missing_key(hf_copy):
  directory = hf_copy()
  _rewrite_safetensors(directory, drop=["decoder.block.2.layer.2.DenseReluDense.wo.weight"])
  with pytest.raises(ValueError) as error:
    load_checkpoint(directory)
  assert str(directory) in str(error.value)
  assert ("missing key decoder.block.2.layer.2.DenseReluDense.wo.weight (expected shape (12, 20))"
          in str(error.value))


def test_refuses_unexpected_key(hf_copy):
  import torch
  directory = hf_copy()
  _rewrite_safetensors(directory, add={"encoder.block.2.layer.0.layer_norm.weight": torch.ones(12)})
  with pytest.raises(ValueError) as error:
    load_checkpoint(directory)
  assert ("unexpected key encoder.block.2.layer.0.layer_norm.weight (shape (12,)) in model.safetensors"
          in str(error.value))


def test_refuses_shape_mismatch_naming_both_shapes(hf_copy):
  directory = hf_copy()
  edit_config(directory, d_ff=24)
  with pytest.raises(ValueError) as error:
    load_checkpoint(directory)
  message = str(error.value)
  assert ("shape mismatch at encoder.block.0.layer.1.DenseReluDense.wi_0.weight: expected (24, 12), "
          "found (20, 12) in model.safetensors") in message
  assert message.count("shape mismatch at") == 15  # 5 layers x (wi_0, wi_1, wo).


def test_refuses_alias_with_wrong_shape(hf_dirs, tmp_path):
  directory = Path(shutil.copytree(hf_dirs["bin"], tmp_path / "bin"))
  import torch
  state = torch.load(directory / "pytorch_model.bin", weights_only=True)
  state["encoder.embed_tokens.weight"] = torch.zeros(49, 12)
  torch.save(state, directory / "pytorch_model.bin")
  with pytest.raises(ValueError, match=r"shape mismatch at encoder.embed_tokens.weight: expected \(50, 12\), "
                                       r"found \(49, 12\) in pytorch_model.bin"):
    load_checkpoint(directory)


def test_refuses_missing_shard(hf_copy):
  directory = hf_copy("sharded")
  shard = sorted(directory.glob("model-*.safetensors"))[2]
  shard.unlink()
  with pytest.raises(FileNotFoundError, match=f"{shard}: shard named by .*index.json is missing"):
    load_checkpoint(directory)


@pytest.mark.parametrize("max_shard_bytes", [None, 2000])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_hf_files_are_read_by_the_safetensors_library(hf_dirs, tmp_path, dtype, max_shard_bytes):
  """Independent of this project's reader: safetensors' own numpy reader finds every tensor of the
  original Hugging Face file in what save_hf wrote, in the saved dtype and with equal values."""
  from safetensors import safe_open

  def library_read(directory: Path) -> dict[str, np.ndarray]:
    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
      with safe_open(file, framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        for key in f.keys():
          assert key not in tensors, key
          tensors[key] = f.get_tensor(key)
    return tensors

  config, params = load_checkpoint(hf_dirs["safetensors"], dtype)
  save_hf(tmp_path / "out", config, params, max_shard_bytes)
  files = len(list((tmp_path / "out").glob("*.safetensors")))
  assert files == 1 if max_shard_bytes is None else files > 3
  ours = library_read(tmp_path / "out")
  original = library_read(hf_dirs["safetensors"])
  assert sorted(ours) == sorted(original)
  expected_dtype = BF16 if dtype == "bfloat16" else np.dtype(np.float32)
  for key, value in original.items():
    assert ours[key].dtype == expected_dtype, key
    assert ours[key].shape == value.shape, key
    np.testing.assert_array_equal(ours[key].view(np.uint8), value.astype(expected_dtype).view(np.uint8),
                                  err_msg=key)


def test_bin_without_torch_says_pip_install_torch(hf_dirs, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError.
  with pytest.raises(ImportError) as error:
    load_checkpoint(hf_dirs["bin"])
  assert "pip install torch" in str(error.value)
  assert str(hf_dirs["bin"] / "pytorch_model.bin") in str(error.value)


def test_refuses_corrupted_bin_naming_the_file(hf_dirs, tmp_path):
  directory = Path(shutil.copytree(hf_dirs["bin"], tmp_path / "bin"))
  file = directory / "pytorch_model.bin"
  file.write_bytes(file.read_bytes()[:2000])
  with pytest.raises(ValueError, match=f"{file}: corrupted or truncated PyTorch checkpoint"):
    load_checkpoint(directory)


def test_refuses_directory_without_weights_or_format(tmp_path, hf_model):
  hf_model.config.save_pretrained(tmp_path / "no_weights")
  with pytest.raises(FileNotFoundError, match="no weights: expected one of model.safetensors.index.json"):
    load_checkpoint(tmp_path / "no_weights")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="not a T5X checkpoint: no `checkpoint` file"):
    load_checkpoint(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no such checkpoint"):
    load_checkpoint(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------------
# Hugging Face export.


def test_save_hf_is_read_by_transformers(hf_model, hf_dirs, tmp_path):
  import torch
  import transformers
  config, params = load_checkpoint(hf_dirs["safetensors"])
  save_hf(tmp_path / "out", config, params)
  assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "manifest.json", "model.safetensors"]
  # The safetensors library reads our file and finds the original tensors, bit for bit.
  ours = _read_safetensors_with_library(tmp_path / "out")
  original = _read_safetensors_with_library(hf_dirs["safetensors"])
  assert sorted(ours) == sorted(original)
  for key in original:
    assert torch.equal(ours[key], original[key]), key
  # transformers loads it as the same model.
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
  ids = torch.tensor([[5, 6, 7, 8, 1]])
  with torch.no_grad():
    a = hf_model(input_ids=ids, decoder_input_ids=ids).logits
    b = reloaded(input_ids=ids, decoder_input_ids=ids).logits
  assert torch.equal(a, b)


def test_save_hf_sharded_round_trip(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["bin"])
  save_hf(tmp_path / "out", config, params, max_shard_bytes=2000)
  index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
  assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == shards
  sizes = [SafetensorsFile(tmp_path / "out" / s) for s in shards]
  assert index["metadata"]["total_size"] == sum(sum(
      np.prod(shape) * 4 for shape in r.shapes().values()) for r in sizes)
  _, again = load_checkpoint(tmp_path / "out")
  _assert_trees_identical(again, params)


def test_save_hf_keeps_bfloat16(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["safetensors"], "bfloat16")
  save_hf(tmp_path / "out", config, params)
  header_size = int.from_bytes((tmp_path / "out" / "model.safetensors").read_bytes()[:8], "little")
  header = json.loads((tmp_path / "out" / "model.safetensors").read_bytes()[8:8 + header_size])
  assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
  _, again = load_checkpoint(tmp_path / "out", None)
  _assert_trees_identical(again, params)


def test_save_refuses_non_empty_destination_and_wrong_tree(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["safetensors"])
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "file").write_text("x")
  with pytest.raises(FileExistsError, match="taken holds files that are not a rospr_hf_checkpoint"):
    save_hf(tmp_path / "taken", config, params)
  flat = flatten(params)
  flat["encoder/layers_0/mlp/wo/kernel"] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError,
                     match=r"shape mismatch at encoder/layers_0/mlp/wo/kernel: expected \(20, 12\)"):
    save_hf(tmp_path / "new", config, unflatten(flat))
  assert not (tmp_path / "new").exists()
  assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # No temporary directory left behind.


# --------------------------------------------------------------------------------------------------
# T5X.


def test_t5x_layout_is_t5x_s(hf_dirs, tmp_path):
  """The files are what T5X writes and reads: msgpack {version: 3, optimizer: {target, state}} with
  tensorstore specs relative to checkpoint_<step>, zarr arrays named target.a.b.c, small arrays inline."""
  config, params = load_checkpoint(hf_dirs["safetensors"])
  step_dir = save_t5x(tmp_path / "model", config, params, step=7, **ZARR)
  assert step_dir == tmp_path / "model" / "checkpoint_7"
  contents = serialization.msgpack_restore((step_dir / "checkpoint").read_bytes())
  assert contents["version"] == 3
  assert int(contents["optimizer"]["state"]["step"]) == 7
  target = contents["optimizer"]["target"]
  spec = target["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert spec["driver"] == "zarr" and spec["kvstore"]["driver"] == "file"
  assert spec["kvstore"]["path"].rstrip("/") == "target.encoder.layers_0.attention.query.kernel"
  assert spec["metadata"]["compressor"]["id"] == "gzip" and spec["metadata"]["shape"] == [12, 15]
  zarray = json.loads((step_dir / "target.encoder.layers_0.attention.query.kernel" / ".zarray").read_text())
  assert zarray["dtype"] == "<f4" and zarray["shape"] == [12, 15]
  # Read every stored spec the way T5X's `_read_ts` does: drop chunks and compressor, join the path.
  for name, value in flatten(params).items():
    stored = target
    for part in name.split("/"):
      stored = stored[part]
    if not isinstance(stored, np.ndarray):
      spec = ts.Spec(stored).to_json()
      del spec["metadata"]["chunks"], spec["metadata"]["compressor"]
      spec["kvstore"]["path"] = os.path.join(step_dir, spec["kvstore"]["path"])
      stored = ts.open(spec, open=True).result().read().result()
    np.testing.assert_array_equal(stored, value, err_msg=name)
  # [H] norm scales (48 bytes) and [heads, buckets] tables (96 bytes) are inline.
  assert isinstance(target["encoder"]["encoder_norm"]["scale"], np.ndarray)
  np.testing.assert_array_equal(target["decoder"]["relpos_bias"]["rel_embedding"],
                                params["decoder"]["relpos_bias"]["rel_embedding"])


@pytest.mark.parametrize("inline_max_bytes", [0, 100, 10**9])
def test_hf_to_t5x_to_load_is_identical(hf_dirs, tmp_path, inline_max_bytes):
  config, params = load_checkpoint(hf_dirs["safetensors"])
  step_dir = save_t5x(tmp_path / "model", config, params, inline_max_bytes=inline_max_bytes)
  for path in (tmp_path / "model", step_dir, step_dir / "checkpoint"):
    assert detect_format(path) == "t5x"
    loaded_config, loaded = load_checkpoint(path)
    assert loaded_config == config
    _assert_trees_identical(loaded, params)


def test_t5x_parent_takes_latest_step(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["safetensors"])
  save_t5x(tmp_path / "model", config, params, step=12)
  later = unflatten({k: v + 1 for k, v in flatten(params).items()})
  save_t5x(tmp_path / "model", config, later, step=100)
  (tmp_path / "model" / "checkpoint_200.tmp-123").mkdir()  # An interrupted save is ignored.
  _, loaded = load_checkpoint(tmp_path / "model")
  _assert_trees_identical(loaded, later)
  with pytest.raises(FileExistsError, match="checkpoint_12 already holds a rospr_t5x_checkpoint; give a new or empty folder"):
    save_t5x(tmp_path / "model", config, params, step=12)


def test_t5x_bfloat16_storage(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["safetensors"], "bfloat16")
  step_dir = save_t5x(tmp_path / "model", config, params, **ZARR)
  zarray = json.loads((step_dir / "target.token_embedder.embedding" / ".zarray").read_text())
  assert zarray["dtype"] == "bfloat16"
  _, kept = load_checkpoint(tmp_path / "model", None)
  _assert_trees_identical(kept, params)
  _, widened = load_checkpoint(tmp_path / "model", np.float32)
  _assert_trees_identical(widened, unflatten({k: v.astype(np.float32) for k, v in flatten(params).items()}))


def _write_t5x_by_hand(step_dir: Path, params: dict, old_spec_style: bool = False,
                       extra_target: dict | None = None, drop: tuple[str, ...] = ()) -> None:
  """A checkpoint as T5X itself writes it, built without save_t5x: every parameter in tensorstore
  (chunked), Adafactor-like optimizer state, `step` inline."""
  step_dir.mkdir(parents=True)
  flat = {k: v for k, v in flatten(params).items() if k not in drop}
  flat.update(extra_target or {})
  target = {}
  for name, array in flat.items():
    relative = "target." + name.replace("/", ".")
    chunks = [max(1, s // 2) for s in array.shape]
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(step_dir / relative)},
             "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape), "chunks": chunks,
                          "dtype": "<f4"}}, create=True).result().write(array).result()
    if old_spec_style:  # tensorstore < 0.1.14 / GCS with T5X's dummy bucket.
      spec = {"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": "t5x-dummy-bucket"}, "path": relative,
              "metadata": {"shape": list(array.shape), "chunks": chunks, "compressor": {"id": "gzip"}}}
    else:
      spec = {"driver": "zarr", "dtype": "float32", "kvstore": {"driver": "file", "path": relative},
              "metadata": {"shape": list(array.shape), "chunks": chunks, "compressor": {"id": "gzip"}}}
    target[name] = spec
  state = {"step": np.asarray(1000, np.int32),
           "param_states": {"encoder": {"encoder_norm": {"scale": {"v": np.zeros(12, np.float32)}}}}}
  (step_dir / "checkpoint").write_bytes(serialization.msgpack_serialize(
      {"version": 3, "optimizer": {"target": unflatten(target), "state": state}}))


@pytest.mark.parametrize("old_spec_style", [False, True])
def test_reads_checkpoint_written_as_t5x_does(hf_dirs, tmp_path, old_spec_style):
  config, params = load_checkpoint(hf_dirs["safetensors"])
  _write_t5x_by_hand(tmp_path / "model" / "checkpoint_1000", params, old_spec_style)
  loaded_config, loaded = load_checkpoint(tmp_path / "model")
  # No side config: T5 v1.1 defaults for what shapes cannot tell.
  assert loaded_config == config.replace(relative_attention_max_distance=128)
  _assert_trees_identical(loaded, params)


def _t5x_error(tmp_path, params, **kwargs) -> str:
  _write_t5x_by_hand(tmp_path / "m" / "checkpoint_1", params, **kwargs)
  with pytest.raises(ValueError) as error:
    load_checkpoint(tmp_path / "m")
  assert str(tmp_path / "m" / "checkpoint_1") in str(error.value)
  return str(error.value)


def test_t5x_refuses_non_gated_mlp(hf_dirs, tmp_path):
  _, params = load_checkpoint(hf_dirs["safetensors"])
  flat = flatten(params)
  wi = {k.replace("wi_0", "wi"): v for k, v in flat.items() if "wi_0" in k}
  message = _t5x_error(tmp_path, params, extra_target=wi,
                       drop=tuple(k for k in flat if "/wi_0/" in k or "/wi_1/" in k))
  assert "encoder/layers_0/mlp/wi/kernel (shape (12, 20)): a non-gated feed-forward" in message


def test_t5x_refuses_tied_logits(hf_dirs, tmp_path):
  _, params = load_checkpoint(hf_dirs["safetensors"])
  message = _t5x_error(tmp_path, params, drop=("decoder/logits_dense/kernel",))
  assert "no decoder/logits_dense/kernel" in message and "logits_via_embedding" in message


def test_t5x_refuses_missing_unexpected_and_mismatched_keys(hf_dirs, tmp_path):
  _, params = load_checkpoint(hf_dirs["safetensors"])
  message = _t5x_error(tmp_path, params, drop=("decoder/layers_1/mlp/wo/kernel",),
                       extra_target={"encoder/prompt/prompt": np.zeros((4, 12), np.float32),
                                     "decoder/decoder_norm/scale": np.ones(13, np.float32)})
  assert "missing key decoder/layers_1/mlp/wo/kernel (expected shape (20, 12))" in message
  assert "unexpected key encoder/prompt/prompt (shape (4, 12))" in message
  assert "shape mismatch at decoder/decoder_norm/scale: expected (12,), found (13,)" in message


def test_t5x_refuses_corrupted_zarr_chunk_naming_the_array(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["safetensors"])
  step_dir = save_t5x(tmp_path / "model", config, params, **ZARR)
  array_dir = step_dir / "target.decoder.layers_2.mlp.wo.kernel"
  chunk = array_dir / "0.0"
  chunk.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
  with pytest.raises(ValueError) as error:
    load_checkpoint(tmp_path / "model")
  assert (f"{array_dir}: cannot read the zarr array of parameter target/decoder/layers_2/mlp/wo/kernel"
          in str(error.value))
  chunk.unlink()
  with pytest.raises(ValueError, match=f"{chunk}: missing chunk file of parameter "
                                       "target/decoder/layers_2/mlp/wo/kernel"):
    load_checkpoint(tmp_path / "model")
  shutil.rmtree(array_dir)
  with pytest.raises(FileNotFoundError, match="zarray: missing zarr metadata of parameter "
                                              "target/decoder/layers_2/mlp/wo/kernel"):
    load_checkpoint(tmp_path / "model")


def test_t5x_refuses_bad_msgpack_naming_the_file(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["safetensors"])
  step_dir = save_t5x(tmp_path / "model", config, params)
  file = step_dir / "checkpoint"
  data = file.read_bytes()
  file.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=f"{file}: corrupted or truncated T5X msgpack checkpoint"):
    load_checkpoint(tmp_path / "model")
  file.write_bytes(serialization.msgpack_serialize({"version": 3, "optimizer": {"state": {}}}))
  with pytest.raises(ValueError, match=f"{file}: not a T5X checkpoint: no `target` parameter tree"):
    load_checkpoint(tmp_path / "model")


def test_t5x_refuses_paths_outside_the_checkpoint(hf_dirs, tmp_path):
  config, params = load_checkpoint(hf_dirs["safetensors"])
  step_dir = save_t5x(tmp_path / "model", config, params, **ZARR)
  contents = serialization.msgpack_restore((step_dir / "checkpoint").read_bytes())
  contents["optimizer"]["target"]["token_embedder"]["embedding"]["kvstore"]["path"] = "../../elsewhere"
  (step_dir / "checkpoint").write_bytes(serialization.msgpack_serialize(contents))
  with pytest.raises(ValueError, match="target/token_embedder/embedding points outside the checkpoint"):
    load_checkpoint(step_dir)


def test_t5x_refuses_orbax_layout(tmp_path):
  (tmp_path / "checkpoint_5" / "state").mkdir(parents=True)
  with pytest.raises(ValueError, match="Orbax layout"):
    load_checkpoint(tmp_path / "checkpoint_5")


# --------------------------------------------------------------------------------------------------
# Round trips (their fingerprints: fingerprint_test.py).


def test_hf_to_t5x_to_hf_is_identical(hf_dirs, tmp_path):
  import torch
  config, params = load_checkpoint(hf_dirs["bin"], None)
  save_t5x(tmp_path / "t5x", config, params, **ZARR)
  config2, params2 = load_checkpoint(tmp_path / "t5x", None)
  save_hf(tmp_path / "hf", config2, params2)
  original = _read_safetensors_with_library(hf_dirs["safetensors"])
  back = _read_safetensors_with_library(tmp_path / "hf")
  assert sorted(back) == sorted(original)
  for key in original:
    assert torch.equal(back[key], original[key]), key
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["relative_attention_max_distance"] == 20


# --------------------------------------------------------------------------------------------------
# Memory: streaming, not twice the checkpoint.


def test_loading_needs_about_one_copy_of_the_weights(tmp_path):
  """Peak resident memory while loading a 192 MiB float32 safetensors checkpoint stays well under
  twice its size: tensors are read one at a time into their final arrays."""
  config = EXPECTED_CONFIG.replace(vocab_size=24576, emb_dim=1024, num_heads=2, head_dim=8, mlp_dim=8,
                                   num_encoder_layers=1, num_decoder_layers=1)
  shapes = param_shapes(config)
  rng = np.random.default_rng(0)
  params = unflatten({k: rng.standard_normal(s, np.float32) for k, s in shapes.items()})
  save_hf(tmp_path / "big", config, params)
  size = (tmp_path / "big" / "model.safetensors").stat().st_size
  assert size > 192 * 2**20
  del params
  script = textwrap.dedent(f"""
      from rospr_jax.model.checkpoints import load_checkpoint
      from rospr_jax.model.t5x_checkpoint import flatten
      before = rss("VmRSS:")
      config, params = load_checkpoint({str(tmp_path / 'big')!r})
      loaded = sum(a.nbytes for a in flatten(params).values())
      print(before, rss("VmHWM:"), loaded)
      """)
  out = subprocess.run([sys.executable, "-c", RSS_FUNCTION + script], capture_output=True, text=True, check=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  before, peak, loaded = (int(x) for x in out.stdout.split()[-3:])
  assert abs(loaded - size) < 2**20
  growth = peak - before
  # One copy plus the largest tensor (96 MiB here, transposed once) and slack; twice would be 384 MiB.
  assert growth < loaded + 96 * 2**20 + 32 * 2**20, (growth / 2**20, loaded / 2**20)

"""The safetensors reader: agrees with the library, and names the file (and tensor) of every damaged
file it refuses."""

from __future__ import annotations

import numpy as np
import pytest

import checkpoint_fixtures
from rospr_jax.model.checkpoints import load_checkpoint, save_hf
from rospr_jax.model.safetensors_file import SafetensorsFile

# The fixtures of checkpoint_fixtures.py, bound here where pytest finds them.
hf_model, hf_dirs, hf_copy = (checkpoint_fixtures.hf_model, checkpoint_fixtures.hf_dirs,
                              checkpoint_fixtures.hf_copy)


def test_reader_agrees_with_safetensors_library(hf_dirs):
  from safetensors import safe_open
  for file in sorted(hf_dirs["sharded"].glob("*.safetensors")):
    reader = SafetensorsFile(file)
    reference = {}
    with safe_open(file, framework="pt") as f:
      for key in f.keys():
        reference[key] = f.get_tensor(key).numpy()
    assert sorted(reader.shapes()) == sorted(reference)
    for key, value in reference.items():
      np.testing.assert_array_equal(reader.read(key), value)


def test_refuses_truncated_safetensors_naming_the_file(hf_copy):
  directory = hf_copy()
  file = directory / "model.safetensors"
  data = file.read_bytes()
  file.write_bytes(data[:-100])
  with pytest.raises(ValueError) as error:
    load_checkpoint(directory)
  assert f"{file}: truncated safetensors file" in str(error.value)
  file.write_bytes(data[:5])
  with pytest.raises(ValueError, match="truncated safetensors file .5 bytes"):
    load_checkpoint(directory)


def test_refuses_broken_safetensors_header_naming_the_file(hf_copy):
  directory = hf_copy("sharded")
  shard = sorted(directory.glob("model-*.safetensors"))[1]
  data = bytearray(shard.read_bytes())
  data[8:12] = b"\xff\xfe{["
  shard.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=f"{shard}: corrupted safetensors header"):
    load_checkpoint(directory)
  data = bytearray(shard.read_bytes())
  data[:8] = (10**9).to_bytes(8, "little")
  shard.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=f"{shard}: truncated or corrupted safetensors file: its header "
                                       "claims 1000000000 bytes"):
    load_checkpoint(directory)


def test_refuses_truncated_file_written_by_save_hf_naming_the_file(hf_dirs, tmp_path):
  from safetensors import SafetensorError
  config, params = load_checkpoint(hf_dirs["safetensors"])
  save_hf(tmp_path / "out", config, params)
  file = tmp_path / "out" / "model.safetensors"
  data = file.read_bytes()
  header_end = 8 + int.from_bytes(data[:8], "little")
  for cut in (0, 3, 8, header_end - 10, header_end, header_end + 1, len(data) // 2, len(data) - 1):
    file.write_bytes(data[:cut])
    with pytest.raises(ValueError) as error:
      load_checkpoint(tmp_path / "out")
    message = str(error.value)
    assert message.startswith(f"{file}: truncated"), (cut, message)
    assert isinstance(error.value.__cause__, SafetensorError), cut  # The library's refusal, wrapped.
  # Truncated after the header was accepted: the read names the file and the tensor.
  file.write_bytes(data)
  reader = SafetensorsFile(file)
  key = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
  assert reader.read(key).shape == (12, 20)
  file.write_bytes(data[:-1])
  with pytest.raises(ValueError) as error:
    reader.read(key)
  assert str(error.value).startswith(f"{file}: truncated safetensors file")
  assert key in str(error.value)

"""A checkpoint format is one registered `formats.CheckpointFormat`: a throwaway one (a folder holding
`npz_config.json` and `params.npz`), defined in this module alone, is recognized, read, fingerprinted,
written by `rospr convert` and loaded as a backbone, without a change to `model/checkpoints.py` or
`commands/convert.py`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rospr_jax import storage
from rospr_jax.backbone import load_backbone
from rospr_jax.commands import convert
from rospr_jax.model import checkpoints, formats
from rospr_jax.model.hf_config import config_from_hf, config_to_hf
from rospr_jax.model.param_tree import flatten, unflatten

CONFIG, WEIGHTS, KIND = "npz_config.json", "params.npz", "rospr_npz_checkpoint"


def _open(path: Path):
  config, _ = config_from_hf(json.loads((path / CONFIG).read_text()), str(path / CONFIG))
  with np.load(path / WEIGHTS) as arrays:
    tensors = {name: arrays[name] for name in arrays.files}
  return config, iter(sorted(tensors.items()))


def _write(path: Path, config, params, options: formats.WriteOptions) -> Path:
  with storage.output_folder(path, "npz checkpoint", kind=KIND, overwrite_flag=None,
                             facts=dict(options.manifest_facts)) as tmp:
    (Path(tmp) / CONFIG).write_text(json.dumps(config_to_hf(config)))
    np.savez(Path(tmp) / WEIGHTS, **{name: np.asarray(a) for name, a in flatten(params).items()})
    if options.vocabulary:
      (Path(tmp) / options.vocabulary.name).write_bytes(options.vocabulary.read_bytes())
  return path


NPZ = formats.CheckpointFormat(
    name="npz", kind=KIND, layout="npz: params.npz", destination="the directory to create",
    recognizes=lambda path: (path / WEIGHTS).is_file(), missing=f"not an npz checkpoint: no `{WEIGHTS}`",
    open=_open, folder=Path, files=lambda path: [path / CONFIG, path / WEIGHTS], write=_write)


@pytest.fixture
def npz_format():
  formats.register(NPZ)
  yield NPZ
  del formats.FORMATS[NPZ.name]


def test_a_registered_format_converts_both_ways_and_loads_as_a_backbone(npz_format, tiny_model, tmp_path,
                                                                        capsys):
  source = tiny_model.checkpoint
  assert convert.main(["--from", source, "--to", str(tmp_path / "npz"), "--format", "npz"]) == 0
  fingerprint = checkpoints.checkpoint_fingerprint(source)
  assert f"({checkpoints.detect_format(source)}) -> {tmp_path / 'npz'} (npz)" in capsys.readouterr().out
  assert checkpoints.detect_format(tmp_path / "npz") == "npz"
  assert storage.read_json(tmp_path / "npz" / storage.MANIFEST, "manifest")["kind"] == KIND
  # The same weights, hence the same fingerprint; the SentencePiece model went along.
  assert checkpoints.checkpoint_fingerprint(tmp_path / "npz") == fingerprint
  _, expected = checkpoints.load_checkpoint(source, None)
  _, got = checkpoints.load_checkpoint(tmp_path / "npz", None)
  assert sorted(flatten(got)) == sorted(flatten(expected))
  for name, array in flatten(expected).items():
    np.testing.assert_array_equal(flatten(got)[name], array)
  backbone = load_backbone(str(tmp_path / "npz"))  # what every command loads, the vocabulary found inside
  assert backbone.fingerprint == fingerprint and backbone.vocabulary.endswith("spiece.model")
  # And back out to T5X through the same command.
  assert convert.main(["--from", str(tmp_path / "npz"), "--to", str(tmp_path / "t5x"), "--format", "t5x"]) == 0
  assert checkpoints.checkpoint_fingerprint(tmp_path / "t5x") == fingerprint


def test_a_changed_weight_of_a_registered_format_is_refused_naming_its_manifest(npz_format, tiny_model,
                                                                                tmp_path):
  config, params = checkpoints.load_checkpoint(tiny_model.checkpoint, None)
  options = formats.WriteOptions(Path(tiny_model.checkpoint))
  checkpoints.write_checkpoint("npz", tmp_path / "npz", config, params, options)
  flat = flatten(params)
  flat["decoder/decoder_norm/scale"] = flat["decoder/decoder_norm/scale"] + 1
  np.savez(tmp_path / "npz" / WEIGHTS, **flatten(unflatten(flat)))
  with pytest.raises(ValueError, match=f"not the .* that {tmp_path / 'npz' / storage.MANIFEST} recorded"):
    checkpoints.load_fingerprinted(tmp_path / "npz")


def test_an_unknown_format_or_a_folder_no_format_claims_is_refused(npz_format, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    convert.main(["--from", str(tmp_path), "--to", str(tmp_path / "o"), "--format", "onnx"])
  assert exit_.value.code == 2
  assert "argument --format: invalid choice: 'onnx' (choose from 'hf', 't5x', 'npz')" in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match="no `config.json`; .*no `checkpoint` file.*; not an npz checkpoint"):
    checkpoints.detect_format(tmp_path)
  with pytest.raises(ValueError, match="exists"):
    formats.register(NPZ)

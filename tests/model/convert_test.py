"""`rospr convert`: Hugging Face <-> T5X through the command line, round trips bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from checkpoint_fixtures import EXPECTED_CONFIG, hf_dirs, hf_model  # noqa: F401
from rospr_jax import cli, storage
from rospr_jax.commands import convert
from rospr_jax.model.checkpoints import checkpoint_fingerprint, load_checkpoint
from rospr_jax.model.t5x_checkpoint import flatten


def _safetensors(directory: Path) -> dict:
  from safetensors import safe_open
  tensors = {}
  for file in sorted(directory.glob("*.safetensors")):
    with safe_open(file, framework="pt") as f:
      tensors.update({key: f.get_tensor(key) for key in f.keys()})
  return tensors


def test_round_trip_through_the_cli_is_identical(hf_dirs, tmp_path, capsys):
  import torch
  source = Path(shutil.copytree(hf_dirs["safetensors"], tmp_path / "source"))
  (source / "spiece.model").write_bytes(b"not really a sentencepiece model")
  assert cli.main(["convert", "--from", str(source), "--to", str(tmp_path / "t5x"), "--format", "t5x",
                   "--step", "42"]) == 0
  out = capsys.readouterr().out
  step_dir = tmp_path / "t5x" / "checkpoint_42"
  assert f"-> {step_dir} (t5x)" in out and f"fingerprint {checkpoint_fingerprint(step_dir)}" in out
  assert f"{EXPECTED_CONFIG.num_parameters():,} parameters" in out
  assert convert.main(["--from", str(tmp_path / "t5x"), "--to", str(tmp_path / "hf"), "--format", "hf"]) == 0
  original, back = _safetensors(source), _safetensors(tmp_path / "hf")
  assert sorted(back) == sorted(original)
  for key in original:
    assert back[key].dtype == original[key].dtype and torch.equal(back[key], original[key]), key
  # HF -> HF keeps the tokenizer files; the SentencePiece model also travels HF -> T5X -> HF.
  assert (step_dir / "spiece.model").read_bytes() == b"not really a sentencepiece model"
  assert (tmp_path / "hf" / "spiece.model").read_bytes() == b"not really a sentencepiece model"
  assert convert.main(["--from", str(source), "--to", str(tmp_path / "hf2"), "--format", "hf",
                       "--max-shard-size", "3KB"]) == 0
  assert (tmp_path / "hf2" / "spiece.model").read_bytes() == b"not really a sentencepiece model"
  index = json.loads((tmp_path / "hf2" / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 3
  back = _safetensors(tmp_path / "hf2")
  for key in original:
    assert torch.equal(back[key], original[key]), key


def test_bin_to_t5x_with_dtype(hf_dirs, hf_model, tmp_path):
  import torch
  assert convert.main(["--from", str(hf_dirs["bin"]), "--to", str(tmp_path / "t5x"), "--format", "t5x",
                       "--dtype", "bfloat16"]) == 0
  _, params = load_checkpoint(tmp_path / "t5x", None)
  assert {str(a.dtype) for a in flatten(params).values()} == {"bfloat16"}
  expected = hf_model.shared.weight.detach().to(torch.bfloat16).float().numpy()
  np.testing.assert_array_equal(params["token_embedder"]["embedding"].astype(np.float32), expected)


def test_t5x_conversion_carries_the_sentencepiece_model_so_score_needs_no_vocab(hf_dirs, tmp_path, capsys,
                                                                               object_store):
  sentencepiece = pytest.importorskip("sentencepiece")
  corpus = tmp_path / "corpus.txt"
  words = "the cat sat on a mat while dogs ran far away and birds sang yes no maybe true false".split()
  rng = np.random.default_rng(0)
  corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(300)))
  sentencepiece.SentencePieceTrainer.Train(  # 40 pieces: within the fixture's 50 embeddings
      input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=40, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  source = Path(shutil.copytree(hf_dirs["safetensors"], tmp_path / "source"))
  shutil.copy(tmp_path / "spiece.model", source / "spiece.model")
  assert cli.main(["convert", "--from", str(source), "--to", str(tmp_path / "t5x"), "--format", "t5x",
                   "--step", "7"]) == 0
  assert (tmp_path / "t5x" / "checkpoint_7" / "spiece.model").is_file()
  capsys.readouterr()
  # The model folder, its checkpoint_<step> and the msgpack file all find the vocabulary.
  for given in ("t5x", "t5x/checkpoint_7", "t5x/checkpoint_7/checkpoint"):
    assert cli.main(["score", "--checkpoint", str(tmp_path / given), "--input", "the cat sat",
                     "--choice", "a", "--choice", "b"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["choices"] == ["a", "b"]
  # T5X -> HF takes it along too.
  assert cli.main(["convert", "--from", str(tmp_path / "t5x"), "--to", str(tmp_path / "hf"),
                   "--format", "hf"]) == 0
  assert (tmp_path / "hf" / "spiece.model").read_bytes() == (source / "spiece.model").read_bytes()
  # At URLs: a source folder copied there by another tool (gsutil: no manifest), converted to a folder
  # committed at a URL; score reads both the model folder and its step, and scores as locally.
  object_store.put(str(source), "gs://convert-bucket/source", recursive=True)
  capsys.readouterr()
  assert cli.main(["score", "--checkpoint", str(tmp_path / "t5x"), "--input", "the cat sat", "--choice", "a",
                   "--choice", "b"]) == 0
  local = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert cli.main(["convert", "--from", "gs://convert-bucket/source", "--to", "gs://convert-bucket/t5x",
                   "--format", "t5x", "--step", "7"]) == 0
  assert "converted gs://convert-bucket/source (hf) -> gs://convert-bucket/t5x/checkpoint_7" in (
      capsys.readouterr().out)
  for given in ("gs://convert-bucket/t5x", "gs://convert-bucket/t5x/checkpoint_7"):
    assert cli.main(["score", "--checkpoint", given, "--input", "the cat sat", "--choice", "a",
                     "--choice", "b"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == local
  assert cli.main(["score", "--checkpoint", "gs://convert-bucket/nothing", "--input", "x", "--choice", "a"]) == 2
  assert "checkpoint gs://convert-bucket/nothing does not exist (no such object or folder)" in capsys.readouterr().err


def test_messages_name_the_flags_the_user_typed(tmp_path):
  import subprocess
  import sys
  def run(*argv):
    return subprocess.run([sys.executable, "-m", "rospr_jax.cli", "convert", *argv], capture_output=True,
                          text=True, timeout=120)
  for argv, flag in [(("--from", "nosuch://a/b", "--to", str(tmp_path / "o"), "--format", "t5x"), "--from nosuch://a/b"),
                     (("--from", str(tmp_path), "--to", "nosuch://a/b", "--format", "t5x"), "--to nosuch://a/b")]:
    done = run(*argv)
    assert done.returncode == 2 and f"rospr convert: {flag}: nosuch:// is not served here" in done.stderr, (
        done.stderr)
    assert "--dest" not in done.stderr and "--source" not in done.stderr and "Traceback" not in done.stderr
  done = run("--help")
  assert done.returncode == 0 and "--to DIR" in done.stdout and "--from DIR" in done.stdout
  assert "DEST" not in done.stdout and "SOURCE" not in done.stdout
  done = run("--from", "x")
  assert done.returncode == 2 and "required: --to, --format" in done.stderr and "dest" not in done.stderr


def test_a_file_url_is_the_local_folder_and_an_existing_one_is_refused(hf_dirs, tmp_path):
  """`--to file://X` writes the folder X (committed by its manifest), what `--to X` writes; a second
  conversion there is refused by name, without a traceback."""
  import subprocess
  import sys
  def run(*argv):
    return subprocess.run([sys.executable, "-m", "rospr_jax.cli", "convert", "--from", str(hf_dirs["safetensors"]),
                           "--format", "t5x", "--step", "7", *argv], capture_output=True, text=True, timeout=300)
  local = run("--to", str(tmp_path / "local"))
  assert local.returncode == 0, local.stderr
  url = f"file://{tmp_path / 'bucket' / 't5x'}"
  done = run("--to", url)
  assert done.returncode == 0, done.stderr
  fingerprint = checkpoint_fingerprint(tmp_path / "local" / "checkpoint_7")
  assert f"-> {tmp_path / 'bucket' / 't5x'}/checkpoint_7 (t5x)" in done.stdout and f"fingerprint {fingerprint}" in done.stdout
  files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
  assert files(tmp_path / "bucket" / "t5x") == files(tmp_path / "local")
  assert storage.ManifestKind("checkpoint").read(tmp_path / "local").files
  again = run("--to", url)
  assert again.returncode == 2 and "Traceback" not in again.stderr
  assert f"rospr convert: --to {url} already holds a rospr_t5x_checkpoint; give a new or empty folder" in again.stderr


def test_weights_changed_since_their_manifest_are_refused_not_converted(hf_dirs, tmp_path, capsys):
  """A checkpoint this project wrote records its weights' fingerprint: one whose weights changed since
  (a damaged file) is refused in one line naming its manifest, as every reader refuses it, and nothing
  is written (its damage would otherwise live on in a new checkpoint with a fresh manifest)."""
  from safetensors.numpy import load_file, save_file
  assert convert.main(["--from", str(hf_dirs["safetensors"]), "--to", str(tmp_path / "hf"), "--format", "hf"]) == 0
  weights = next((tmp_path / "hf").glob("*.safetensors"))
  tensors = load_file(weights)
  name = sorted(tensors)[0]
  save_file({**tensors, name: tensors[name] + 1}, weights, metadata={"format": "pt"})
  capsys.readouterr()
  assert convert.main(["--from", str(tmp_path / "hf"), "--to", str(tmp_path / "t5x"), "--format", "t5x"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"rospr convert: Checkpoint {tmp_path / 'hf'}: its weights have fingerprint ")
  assert f"{tmp_path / 'hf' / storage.MANIFEST} recorded when they were written" in err and err.count("\n") == 1
  assert not (tmp_path / "t5x").exists()


def test_errors_are_reported_not_raised(hf_dirs, tmp_path, capsys):
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "x").write_text("x")
  assert convert.main(["--from", str(hf_dirs["safetensors"]), "--to", str(tmp_path / "taken"),
                       "--format", "hf"]) == 2
  assert f"rospr convert: --to {tmp_path / 'taken'} holds files that are not a" in capsys.readouterr().err
  assert convert.main(["--from", str(tmp_path / "missing"), "--to", str(tmp_path / "out"),
                       "--format", "t5x"]) == 2
  assert f"{tmp_path / 'missing'}: no such checkpoint" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()
  source = Path(shutil.copytree(hf_dirs["safetensors"], tmp_path / "source"))
  before = sorted(p.name for p in source.iterdir())
  assert convert.main(["--from", str(source), "--to", str(source / "t5x"), "--format", "t5x"]) == 2
  assert f"rospr convert: --to {source / 't5x'} lies inside the input {source}" in capsys.readouterr().err
  assert sorted(p.name for p in source.iterdir()) == before  # nothing written into the source
  with pytest.raises(SystemExit):
    convert.main(["--from", "a", "--to", "b", "--format", "onnx"])


@pytest.mark.parametrize("text,size", [("4096", 4096), ("500MB", 500 * 10**6), ("2GB", 2 * 10**9),
                                       ("1GiB", 2**30), ("1.5kb", 1500)])
def test_parse_size(text, size):
  assert convert.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "2 parsecs", "0", "-1MB"])
def test_parse_size_refuses(text):
  import argparse
  with pytest.raises(argparse.ArgumentTypeError):
    convert.parse_size(text)

"""URLs are refused where commands start, before any work (see rospr_jax/paths.py)."""

from __future__ import annotations

import argparse
import os

import pytest

from rospr_jax import paths


@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://b/x", "hf://bigscience/T0_3B", "GS://B/c"])
def test_urls_are_refused_with_the_mounted_path_to_use(url):
  with pytest.raises(ValueError, match=r"model_dir '.*' is a URL; .*gcsfuse") as raised:
    paths.require_local(url, "model_dir")
  assert "/gcs/" + url.split("://", 1)[1] in str(raised.value)


@pytest.mark.parametrize("path", ["/gcs/bucket/run", "runs/a", "./gs:/odd", "C:/x", None])
def test_local_paths_pass_unchanged(path):
  assert paths.require_local(path, "model_dir") == path


def test_command_arguments_are_checked_including_name_equals_file_values():
  ok = argparse.Namespace(out="/gcs/b/lib", source=["copa=/data/copa.jsonl"], n=100, target="rte:GPT-3 style")
  paths.require_local_args(ok)
  with pytest.raises(ValueError, match="--source 'gs://b/copa.jsonl' is a URL"):
    paths.require_local_args(argparse.Namespace(out="/x", source=["copa=gs://b/copa.jsonl"]))
  with pytest.raises(ValueError, match="--shard-dir 'gs://b' is a URL"):
    paths.require_local_args(argparse.Namespace(shard_dir="gs://b"))


def test_commands_refuse_urls_before_any_work(tmp_path, capsys):
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  from rospr_jax.prompt import trainer
  assert build.main(["--out", "gs://b/lib", "--prompts", str(tmp_path / "missing"), "--instances",
                     str(tmp_path / "missing.jsonl"), "--random-retriever", "tiny", "--vocab", "v.model"]) == 2
  assert "--out 'gs://b/lib' is a URL" in capsys.readouterr().err
  assert select_cli.main(["--library", "gs://b/lib", "--queries", "q.jsonl", "--out", str(tmp_path),
                          "--random-retriever", "tiny", "--vocab", "v.model"]) == 2
  assert "--library 'gs://b/lib' is a URL" in capsys.readouterr().err
  with pytest.raises(ValueError, match="model_dir 'gs://b/run' is a URL"):
    trainer.train(model_dir="gs://b/run", examples=None, backbone=None, num_steps=1)
  from rospr_jax.model import checkpoints
  with pytest.raises(ValueError, match="checkpoint 'gs://b/T0_3B' is a URL"):
    checkpoints.load_checkpoint("gs://b/T0_3B")
  from rospr_jax.commands import evaluate
  with pytest.raises(ValueError, match="output_dir 'gs://b/eval' is a URL"):
    evaluate.run(backbone=None, output_dir="gs://b/eval", targets=[])
  from rospr_jax.commands import demo as pipeline
  with pytest.raises(ValueError, match="output_dir 'gs://b/demo' is a URL"):
    pipeline.run("gs://b/demo")
  assert not (tmp_path / "gs:").exists() and not os.path.exists("gs:")


def test_on_other_hosts_library_and_retrieval_commands_compute_but_write_nothing(tmp_path, monkeypatch,
                                                                                  capsys):
  """Every process of a multi-process run embeds its share (tests/multiprocess run them for real);
  process 0 alone writes."""
  import json
  import jax
  import numpy as np
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  from rospr_jax.data import vocabulary
  vocab = vocabulary.offline_vocabulary_path()
  (tmp_path / "all.jsonl").write_text("".join(json.dumps({"source": s, "text": f"{s} text {i}"}) + "\n"
                                              for s in ("a", "b") for i in range(3)))
  (tmp_path / "names.txt").write_text("a\nb\n")
  np.save(tmp_path / "prompts.npy", np.zeros((2, 3, 64), np.float32))
  (tmp_path / "q.jsonl").write_text(json.dumps({"text": "a text"}) + "\n")
  flags = ["--random-retriever", "tiny", "--vocab", vocab, "--max-length", "16"]
  library = ["--prompts", str(tmp_path / "prompts.npy"), "--instances", str(tmp_path / "all.jsonl"),
             "--source-names", str(tmp_path / "names.txt"), "--n", "3", "--index", "exact", *flags]
  assert build.main(["--out", str(tmp_path / "lib"), *library]) == 0  # process 0 writes
  before = sorted(tmp_path.iterdir())
  assert paths.writes_outputs()
  monkeypatch.setattr(jax, "process_index", lambda: 2)
  assert not paths.writes_outputs()
  capsys.readouterr()
  assert build.main(["--out", str(tmp_path / "lib2"), *library]) == 0
  assert select_cli.main(["--library", str(tmp_path / "lib"), "--queries", str(tmp_path / "q.jsonl"),
                          "--out", str(tmp_path / "sel"), "--num-neighbors", "3", *flags]) == 0
  out = capsys.readouterr().out
  assert "did its share; process 0 wrote the library" in out and "process 0 wrote the selection" in out
  assert sorted(tmp_path.iterdir()) == before

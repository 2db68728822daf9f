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


def test_on_other_hosts_library_and_retrieval_commands_leave_the_work_to_process_zero(tmp_path, monkeypatch,
                                                                                      capsys):
  import jax
  from rospr_jax.commands import build_library as build
  from rospr_jax.commands import retrieve as select_cli
  assert paths.writes_outputs()
  monkeypatch.setattr(jax, "process_index", lambda: 2)
  assert not paths.writes_outputs()
  missing = str(tmp_path / "missing")
  assert build.main(["--out", str(tmp_path / "lib"), "--prompts", missing, "--instances", missing,
                     "--random-retriever", "tiny", "--vocab", missing]) == 0
  assert select_cli.main(["--library", missing, "--queries", missing, "--out", str(tmp_path / "sel"),
                          "--random-retriever", "tiny", "--vocab", missing]) == 0
  assert "process 0 builds the library" in capsys.readouterr().out
  assert list(tmp_path.iterdir()) == []

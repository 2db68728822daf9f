"""One loader, one fingerprint: a library built the way the demo builds it (the retriever made from the
loaded backbone) is accepted by `rospr retrieve` and `rospr evaluate`; a library built in bfloat16 is
evaluated in bfloat16, and `rospr retrieve` in another dtype is refused naming the dtype."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from rospr_jax import cli
from rospr_jax.backbone import load_backbone
from rospr_jax.library import build, embed, sources as sources_lib
from rospr_jax.model import model_for

TARGET = "generated_animal_truefalse_f0"


@pytest.fixture(scope="module")
def checkpoint(tiny_model):
  """A tiny random T5 with the offline vocabulary as its spiece.model (as the demo's backbone/)."""
  return tiny_model.checkpoint


def _sources():
  rng = np.random.default_rng(0)
  return [sources_lib.SourceTexts(name, [" ".join(rng.permutation(text.split())) for _ in range(6)])
          for name, text in [("code", "def return print for while loop list if else python"),
                             ("talk", "hello how are you today fine thanks and you friend")]]


def _evaluate_rospr(checkpoint, library, output_dir) -> int:
  return cli.main(["evaluate", "--gin_file=models/checkpoint.gin", "--gin_file=eval/generated_targets.gin",
                   f"--gin.CHECKPOINT='{checkpoint}'", f"--gin.OUTPUT_DIR='{output_dir}'",
                   f"--gin.LIBRARY_DIR='{library}'", f"--gin.RETRIEVER_CHECKPOINT='{checkpoint}'",
                   f"--gin.TARGETS=['{TARGET}']", "--gin.METHODS=['RoSPr']", "--gin.MAX_EXAMPLES=4",
                   "--gin.NUM_QUERIES=2", "--gin.NUM_NEIGHBORS=3", "--gin.BATCH_SIZE=4"])


def test_the_same_model_gives_the_same_retriever_fingerprint_however_its_dtype_is_spelt(checkpoint):
  backbone = load_backbone(checkpoint)
  spellings = [jnp.float32, "float32", np.dtype("float32"), jnp.dtype("float32")]
  fingerprints = {embed.Embedder(model_for(backbone.config.replace(dtype=d)), backbone.params).fingerprint
                  for d in spellings}
  assert fingerprints == {embed.load_embedder(checkpoint).fingerprint}
  assert backbone.config.replace(dtype=jnp.bfloat16).inference_fields()["dtype"] == "bfloat16"


def test_a_library_built_like_the_demo_is_accepted_by_retrieve_and_evaluate(checkpoint, tmp_path, capsys):
  backbone = load_backbone(checkpoint, dtype="float32")  # the demo's frozen backbone
  tokenizer = backbone.tokenizer()
  prompts = np.random.default_rng(1).normal(size=(2, 3, backbone.config.emb_dim)).astype(np.float32)
  library = tmp_path / "library"
  build.build_library(str(library), _sources(), prompts, embed.Embedder(backbone.model, backbone.params),
                      tokenizer.encode_input, draw=build.DrawConfig(6), index=build.IndexConfig("exact"))
  queries = tmp_path / "q.jsonl"
  queries.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["print the list", "how are you"]))
  assert cli.main(["retrieve", "--library", str(library), "--queries", str(queries), "--out",
                   str(tmp_path / "sel"), "--retriever", checkpoint, "--vocab", backbone.vocabulary]) == 0
  assert json.loads(capsys.readouterr().out.splitlines()[-1])["rule"] == "rospr"
  assert _evaluate_rospr(checkpoint, library, tmp_path / 'eval') == 0
  assert "RoSPr: average accuracy" in capsys.readouterr().out


def test_a_bfloat16_library_is_evaluated_in_bfloat16_and_another_dtype_is_refused_by_name(
    checkpoint, tmp_path, capsys):
  vocab = load_backbone(checkpoint).vocabulary
  instances = tmp_path / "all.jsonl"
  instances.write_text("".join(json.dumps({"source": s.name, "text": t}) + "\n"
                               for s in _sources() for t in s.texts))
  (tmp_path / "names.txt").write_text("code\ntalk\n")
  np.save(tmp_path / "prompts.npy", np.zeros((2, 3, 64), np.float32))
  library = tmp_path / "library"
  assert cli.main(["build-library", "--out", str(library), "--prompts", str(tmp_path / "prompts.npy"),
                   "--instances", str(instances), "--source-names", str(tmp_path / "names.txt"),
                   "--retriever", checkpoint, "--vocab", vocab, "--dtype", "bfloat16", "--n", "6",
                   "--index", "exact"]) == 0
  capsys.readouterr()
  assert _evaluate_rospr(checkpoint, library, tmp_path / 'eval') == 0
  assert "RoSPr: average accuracy" in capsys.readouterr().out
  queries = tmp_path / "q.jsonl"
  queries.write_text(json.dumps({"text": "print the list"}) + "\n")
  assert cli.main(["retrieve", "--library", str(library), "--queries", str(queries), "--out",
                   str(tmp_path / "sel"), "--retriever", checkpoint, "--vocab", vocab]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"rospr retrieve: Library {library} was built with retriever")
  assert "in the dtype it was built in (bfloat16)" in err

"""Tiny random Hugging Face T5 v1.1 models saved in each published layout, for the checkpoint tests.

Imported by checkpoints_test.py and convert_test.py (tests/model/conftest.py belongs to the model
tests). The shapes are chosen so that a swapped or untransposed tensor cannot go unnoticed:
H=12 != heads * d_kv = 3 * 5 = 15, mlp 20, vocab 50, 2 encoder and 3 decoder layers, 8 buckets.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rospr_jax.model.config import T5Config

HF_KWARGS = dict(vocab_size=50, d_model=12, d_kv=5, d_ff=20, num_heads=3, num_layers=2,
                 num_decoder_layers=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                 dropout_rate=0.0, layer_norm_epsilon=1e-6)
# The same model in this project's terms (written out by hand, not derived by the code under test).
EXPECTED_CONFIG = T5Config(vocab_size=50, emb_dim=12, num_heads=3, head_dim=5, mlp_dim=20,
                           num_encoder_layers=2, num_decoder_layers=3, relative_attention_num_buckets=8,
                           relative_attention_max_distance=20, dropout_rate=0.0, layer_norm_epsilon=1e-6)
KINDS = ("safetensors", "sharded", "bin")


def make_hf_model(seed: int = 0, **overrides):
  """A T5ForConditionalGeneration (T5 v1.1: gated GELU, untied lm_head) with every weight random."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                 **{**HF_KWARGS, **overrides})
  model = transformers.T5ForConditionalGeneration(config)
  # transformers >= 5 ties lm_head to shared whatever the config says (T0 checkpoints carry both and
  # load untied): give lm_head its own weight, as T0's is.
  model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
  model.config.tie_word_embeddings = False
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator)
      if name.endswith("layer_norm.weight"):
        param.copy_(1.0 + 0.2 * noise)
      elif name in ("shared.weight", "lm_head.weight") or "relative_attention_bias" in name:
        param.copy_(noise)
      else:
        param.copy_(noise / np.sqrt(param.shape[-1]))
  model.eval()
  return model


def save_hf_model(model, directory: Path, kind: str) -> Path:
  """Saves `model` as `kind`: "safetensors", "sharded" (several safetensors + index) or "bin"."""
  import torch  # pylint: disable=g-import-not-at-top
  directory.mkdir(parents=True, exist_ok=True)
  if kind == "safetensors":
    model.save_pretrained(directory)
  elif kind == "sharded":
    model.save_pretrained(directory, max_shard_size="4KB")
    assert (directory / "model.safetensors.index.json").is_file()
  elif kind == "bin":
    # What transformers 4 wrote (and T0 is published as): torch.save of the whole state dict,
    # tied aliases (encoder/decoder.embed_tokens) included.
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
  else:
    raise ValueError(kind)
  return directory


def hf_state(model) -> dict[str, np.ndarray]:
  """The model's state dict as float32 numpy arrays."""
  return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}


def expected_tree(state: dict[str, np.ndarray], encoder_layers: int = 2,
                  decoder_layers: int = 3) -> dict[str, np.ndarray]:
  """The flat T5X tree that the HF state dict must load to: PyTorch Linear weights [out, in] transposed."""
  t = lambda key: state[key].T  # noqa: E731
  bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
  tree = {
      "token_embedder/embedding": state["shared.weight"],
      "encoder/relpos_bias/rel_embedding": t(f"encoder.{bias}"),  # [buckets, heads] -> [heads, buckets]
      "decoder/relpos_bias/rel_embedding": t(f"decoder.{bias}"),
      "encoder/encoder_norm/scale": state["encoder.final_layer_norm.weight"],
      "decoder/decoder_norm/scale": state["decoder.final_layer_norm.weight"],
      "decoder/logits_dense/kernel": t("lm_head.weight"),
  }
  for i in range(encoder_layers):
    block = f"encoder.block.{i}"
    ours = f"encoder/layers_{i}"
    tree[f"{ours}/pre_attention_layer_norm/scale"] = state[f"{block}.layer.0.layer_norm.weight"]
    tree[f"{ours}/attention/query/kernel"] = t(f"{block}.layer.0.SelfAttention.q.weight")
    tree[f"{ours}/attention/key/kernel"] = t(f"{block}.layer.0.SelfAttention.k.weight")
    tree[f"{ours}/attention/value/kernel"] = t(f"{block}.layer.0.SelfAttention.v.weight")
    tree[f"{ours}/attention/out/kernel"] = t(f"{block}.layer.0.SelfAttention.o.weight")
    tree[f"{ours}/pre_mlp_layer_norm/scale"] = state[f"{block}.layer.1.layer_norm.weight"]
    tree[f"{ours}/mlp/wi_0/kernel"] = t(f"{block}.layer.1.DenseReluDense.wi_0.weight")
    tree[f"{ours}/mlp/wi_1/kernel"] = t(f"{block}.layer.1.DenseReluDense.wi_1.weight")
    tree[f"{ours}/mlp/wo/kernel"] = t(f"{block}.layer.1.DenseReluDense.wo.weight")
  for i in range(decoder_layers):
    block = f"decoder.block.{i}"
    ours = f"decoder/layers_{i}"
    tree[f"{ours}/pre_self_attention_layer_norm/scale"] = state[f"{block}.layer.0.layer_norm.weight"]
    tree[f"{ours}/pre_cross_attention_layer_norm/scale"] = state[f"{block}.layer.1.layer_norm.weight"]
    tree[f"{ours}/pre_mlp_layer_norm/scale"] = state[f"{block}.layer.2.layer_norm.weight"]
    for hf, t5x in (("0.SelfAttention", "self_attention"),
                    ("1.EncDecAttention", "encoder_decoder_attention")):
      for a, b in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
        tree[f"{ours}/{t5x}/{b}/kernel"] = t(f"{block}.layer.{hf}.{a}.weight")
    for name in ("wi_0", "wi_1", "wo"):
      tree[f"{ours}/mlp/{name}/kernel"] = t(f"{block}.layer.2.DenseReluDense.{name}.weight")
  return tree


@pytest.fixture(scope="session")
def hf_model():
  return make_hf_model(seed=0)


@pytest.fixture(scope="session")
def hf_dirs(hf_model, tmp_path_factory) -> dict[str, Path]:
  """{kind: directory} of the same model saved in each layout (read-only: copy before damaging)."""
  root = tmp_path_factory.mktemp("hf")
  return {kind: save_hf_model(hf_model, root / kind, kind) for kind in KINDS}


@pytest.fixture
def hf_copy(hf_dirs, tmp_path):
  """A writable copy of one saved layout: `hf_copy("safetensors")`."""
  def copy(kind: str = "safetensors") -> Path:
    return Path(shutil.copytree(hf_dirs[kind], tmp_path / f"copy_{kind}"))
  return copy


def edit_config(directory: Path, **changes) -> None:
  """Rewrites config.json with `changes` (a value of ... deletes the key)."""
  file = directory / "config.json"
  config = json.loads(file.read_text())
  for key, value in changes.items():
    if value is ...:
      config.pop(key, None)
    else:
      config[key] = value
  file.write_text(json.dumps(config))


# Source of `rss(field)`, for the memory tests' child scripts: a /proc/self/status field in bytes
# ("VmRSS:" now, "VmHWM:" the peak).
RSS_FUNCTION = '''
def rss(field):
  for line in open("/proc/self/status"):
    if line.startswith(field):
      return int(line.split()[1]) * 1024
'''

"""Hugging Face config.json: every setting the model does not implement refused in one error naming the
file, harmless and default keys accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

import checkpoint_fixtures
from checkpoint_fixtures import EXPECTED_CONFIG, edit_config
from rospr_jax.model.checkpoints import load_checkpoint
from rospr_jax.model.config import get_config
from rospr_jax.model.hf_config import config_from_hf

# The fixtures of checkpoint_fixtures.py, bound here where pytest finds them.
hf_model, hf_dirs, hf_copy = (checkpoint_fixtures.hf_model, checkpoint_fixtures.hf_dirs,
                              checkpoint_fixtures.hf_copy)


def _config_error(directory: Path, **changes) -> str:
  edit_config(directory, **changes)
  with pytest.raises(ValueError) as error:
    load_checkpoint(directory)
  message = str(error.value)
  assert str(directory / "config.json") in message
  return message


def test_refuses_t5_v1_0_tied_embeddings(hf_copy):
  # As transformers 4 writes it (no scale_decoder_outputs key: tying implies the scaling).
  message = _config_error(hf_copy(), tie_word_embeddings=True, scale_decoder_outputs=...)
  assert "tie_word_embeddings=True" in message and "T5 v1.0" in message
  # transformers 4 wrote nothing for the default (tied): absent also means T5 v1.0.
  message = _config_error(hf_copy("sharded"), tie_word_embeddings=..., scale_decoder_outputs=...)
  assert "tie_word_embeddings=True" in message


def test_refuses_scaled_decoder_outputs(hf_copy):
  message = _config_error(hf_copy(), tie_word_embeddings=True, scale_decoder_outputs=True)
  assert "scale_decoder_outputs=True" in message and "d_model**-0.5" in message


def test_refuses_relu_feed_forward(hf_copy):
  message = _config_error(hf_copy(), feed_forward_proj="relu", dense_act_fn="relu", is_gated_act=False)
  assert "feed_forward_proj='relu'" in message
  assert "dense_act_fn='relu'" in message
  assert "is_gated_act=False" in message


def test_refuses_exact_gelu(hf_copy):
  message = _config_error(hf_copy(), dense_act_fn="gelu")
  assert "dense_act_fn='gelu'" in message and "gelu_new" in message


def test_refuses_unknown_attribute_but_not_unset_ones(hf_copy):
  directory = hf_copy()
  edit_config(directory, some_future_option=None, another_flag=False)
  load_checkpoint(directory)  # Unset unknown attributes change nothing.
  message = _config_error(directory, some_future_option=3)
  assert "unknown attribute some_future_option=3" in message


def test_refuses_every_problem_in_one_error(hf_copy):
  message = _config_error(hf_copy(), feed_forward_proj="relu", is_encoder_decoder=False,
                          is_decoder=True, rotary_dim=64, num_heads=0)
  for part in ("feed_forward_proj='relu'", "is_encoder_decoder=False", "is_decoder=True",
               "unknown attribute rotary_dim=64", "num_heads=0"):
    assert part in message, part


def test_accepts_other_bucket_counts_and_harmless_keys():
  hf = {"d_model": 8, "d_kv": 4, "d_ff": 16, "num_heads": 2, "num_layers": 1, "vocab_size": 10,
        "relative_attention_num_buckets": 64, "relative_attention_max_distance": 256,
        "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "architectures": ["x"],
        "task_specific_params": {"summarization": {}}, "output_past": True, "n_positions": 512,
        "gradient_checkpointing": False, "torch_dtype": "float32", "decoder_start_token_id": 0}
  config, tied = config_from_hf(hf)
  assert not tied
  # Absent keys take Hugging Face's defaults (num_decoder_layers = num_layers, dropout_rate 0.1).
  assert config == EXPECTED_CONFIG.replace(
      emb_dim=8, head_dim=4, mlp_dim=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
      vocab_size=10, relative_attention_num_buckets=64, relative_attention_max_distance=256,
      dropout_rate=0.1)


def test_accepts_a_transformers_4_t5_v1_1_xl_config():
  """config.json as transformers 4 wrote it for T5 v1.1 XL / T0_3B-shaped checkpoints."""
  hf = {"architectures": ["T5ForConditionalGeneration"], "d_ff": 5120, "d_kv": 64, "d_model": 2048,
        "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
        "gradient_checkpointing": False, "initializer_factor": 1.0, "is_encoder_decoder": True,
        "layer_norm_epsilon": 1e-06, "model_type": "t5", "num_decoder_layers": 24, "num_heads": 32,
        "num_layers": 24, "output_past": True, "pad_token_id": 0, "relative_attention_num_buckets": 32,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.12.0.dev0",
        "use_cache": True, "vocab_size": 32128}
  config, tied = config_from_hf(hf)
  assert not tied
  assert config == get_config("xl", dropout_rate=0.1)


def test_refuses_corrupted_config_json(hf_copy):
  directory = hf_copy()
  (directory / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="config.json: corrupted JSON"):
    load_checkpoint(directory)

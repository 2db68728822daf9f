"""Hugging Face T5 config.json: read into a `T5Config`, refusing what the model does not implement, and
written back.

Only T5 v1.1 / T0 is accepted: gated tanh-GELU feed-forward, untied logits without decoder output
scaling, an encoder-decoder. Every other setting is refused in one error that lists them all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from rospr_jax.model.config import T5Config
from rospr_jax.model.param_tree import raise_problems

CONFIG_FILE = "config.json"

# config.json keys that become T5Config fields, with Hugging Face's defaults for absent keys.
_MAPPED = {
    "vocab_size": ("vocab_size", 32128),
    "d_model": ("emb_dim", 512),
    "d_kv": ("head_dim", 64),
    "d_ff": ("mlp_dim", 2048),
    "num_heads": ("num_heads", 8),
    "num_layers": ("num_encoder_layers", 6),
    "num_decoder_layers": ("num_decoder_layers", None),  # None: same as num_layers.
    "relative_attention_num_buckets": ("relative_attention_num_buckets", 32),
    "relative_attention_max_distance": ("relative_attention_max_distance", 128),
    "layer_norm_epsilon": ("layer_norm_epsilon", 1e-6),
    "dropout_rate": ("dropout_rate", 0.1),
}
# Keys checked below by their own rules.
_CHECKED = {"feed_forward_proj", "dense_act_fn", "is_gated_act", "tie_word_embeddings",
            "scale_decoder_outputs", "is_encoder_decoder", "model_type"}
# Keys whose value must be their default (a different value changes the model).
_MUST_BE_DEFAULT = {
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_encoder_decoder": False,
    "pruned_heads": {},
    "cross_attention_hidden_size": None,
    "quantization_config": None,
}
# Keys that do not change the forward computation (bookkeeping, generation and training settings).
_HARMLESS = {
    "architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "name_or_path",
    "_commit_hash", "decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id",
    "sep_token_id", "unk_token_id", "task_specific_params", "use_cache", "initializer_factor",
    "output_past", "gradient_checkpointing", "n_positions", "classifier_dropout", "id2label",
    "label2id", "num_labels", "problem_type", "finetuning_task", "tokenizer_class", "prefix",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "chunk_size_feed_forward", "tf_legacy_loss", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k",
    "top_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "decoder_start_token_ids", "output_router_logits",
}
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
_GATED_PROJ = ("gated-gelu",) + tuple(f"gated-{a}" for a in _TANH_GELU)


def _is_default_like(value: Any) -> bool:
  """An unknown key is harmless only when it is unset: None, false or empty."""
  return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


def config_from_hf(hf: Mapping[str, Any], source: str = CONFIG_FILE) -> tuple[T5Config, bool]:
  """T5Config from a Hugging Face T5 config.json, refusing what the model does not implement.

  Args:
    hf: the parsed config.json.
    source: file name used in the error message.

  Returns:
    (config, tied): `tied` is True when the config lets `lm_head.weight` be absent and equal to
    `shared.weight` (transformers >= 5 writes `tie_word_embeddings: true` with
    `scale_decoder_outputs: false` for T5 v1.1).

  Raises:
    ValueError listing every unsupported setting.
  """
  problems = _architecture_problems(hf) + _unexpected_keys(hf)
  fields, field_problems = _mapped_fields(hf)
  raise_problems(f"{source}: this Hugging Face config describes a model this project does not "
                 "implement:", problems + field_problems)
  return T5Config(**fields), hf.get("tie_word_embeddings", True) is not False


def _architecture_problems(hf: Mapping[str, Any]) -> list[str]:
  """What makes the config describe another model than a T5 v1.1 encoder-decoder (model type,
  feed-forward, tied or scaled logits)."""
  problems = []
  model_type = hf.get("model_type", "t5")
  if model_type not in ("t5", "mt5"):
    problems.append(f"model_type={model_type!r}: only T5 v1.1 style models ('t5', 'mt5') are implemented")
  if hf.get("is_encoder_decoder", True) is not True:
    problems.append(f"is_encoder_decoder={hf.get('is_encoder_decoder')!r}: only encoder-decoders are "
                    "implemented")
  proj = hf.get("feed_forward_proj", "relu")  # Hugging Face's default.
  if proj not in _GATED_PROJ:
    problems.append(f"feed_forward_proj={proj!r}: only a gated tanh-GELU feed-forward "
                    f"('gated-gelu') is implemented")
  act = hf.get("dense_act_fn")
  if act is not None and act not in _TANH_GELU:
    problems.append(f"dense_act_fn={act!r}: only tanh-approximated GELU ({', '.join(_TANH_GELU)}) is "
                    "implemented")
  if "is_gated_act" in hf and hf["is_gated_act"] is not True:
    problems.append(f"is_gated_act={hf['is_gated_act']!r}: only a gated feed-forward is implemented")
  # transformers < 5: tie_word_embeddings (default true) ties lm_head to shared AND scales the decoder
  # output by d_model**-0.5 (T5 v1.0). transformers >= 5 splits the scaling into scale_decoder_outputs.
  tie = hf.get("tie_word_embeddings", True)
  scale = hf.get("scale_decoder_outputs", tie is not False)
  if scale is not False:
    if "scale_decoder_outputs" in hf:
      problems.append(f"scale_decoder_outputs={scale!r}: scaling the decoder output by d_model**-0.5 "
                      "(T5 v1.0) is not implemented; T5 v1.1 / T0 has untied, unscaled logits")
    else:
      problems.append(f"tie_word_embeddings={tie!r}: tied input and output embeddings with the decoder "
                      "output scaled by d_model**-0.5 (T5 v1.0 style) are not implemented; T5 v1.1 / T0 "
                      "has untied logits (tie_word_embeddings=false)")
  return problems


def _unexpected_keys(hf: Mapping[str, Any]) -> list[str]:
  """Keys set to a value that changes the model: off their required default, or unknown here and set."""
  problems = []
  for key, default in _MUST_BE_DEFAULT.items():
    if key in hf and hf[key] != default and not (default == {} and not hf[key]):
      problems.append(f"{key}={hf[key]!r}: not implemented (only {default!r} is)")
  known = set(_MAPPED) | _CHECKED | set(_MUST_BE_DEFAULT) | _HARMLESS
  for key in sorted(set(hf) - known):
    if not _is_default_like(hf[key]):
      problems.append(f"unknown attribute {key}={hf[key]!r}: the model may not implement it")
  return problems


def _mapped_fields(hf: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
  """The `T5Config` fields of `_MAPPED` (Hugging Face's defaults for absent keys), and a problem for
  each value that is not valid."""
  fields, problems = {}, []
  for key, (field, default) in _MAPPED.items():
    value = hf.get(key, default)
    if key == "num_decoder_layers" and value is None:
      value = fields["num_encoder_layers"]
    if field in ("layer_norm_epsilon", "dropout_rate"):
      ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
      if ok and (field == "dropout_rate" and value >= 1 or field == "layer_norm_epsilon" and value == 0):
        ok = False
      fields[field] = float(value) if ok else value
    else:
      ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
      fields[field] = value
    if not ok:
      problems.append(f"{key}={value!r}: not a valid value")
  return fields, problems


def config_to_hf(config: T5Config) -> dict[str, Any]:
  """config.json content of a T5 v1.1 model (read the same by transformers 4 and 5)."""
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "d_model": config.emb_dim,
      "d_kv": config.head_dim,
      "d_ff": config.mlp_dim,
      "num_heads": config.num_heads,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "vocab_size": config.vocab_size,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "dropout_rate": config.dropout_rate,
      "feed_forward_proj": "gated-gelu",
      "dense_act_fn": "gelu_new",
      "is_gated_act": True,
      "tie_word_embeddings": False,
      "is_encoder_decoder": True,
      "decoder_start_token_id": 0,
      "pad_token_id": 0,
      "eos_token_id": 1,
  }


def read_hf_config(directory: Path) -> dict[str, Any]:
  """The parsed config.json of a Hugging Face directory (a JSON object), refusals naming the file."""
  file = directory / CONFIG_FILE
  try:
    hf = json.loads(file.read_text())
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{file}: missing; a Hugging Face T5 directory needs its config.json.") from e
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{file}: corrupted JSON ({e}).") from e
  if not isinstance(hf, dict):
    raise ValueError(f"{file}: expected a JSON object, got a {type(hf).__name__}.")
  return hf

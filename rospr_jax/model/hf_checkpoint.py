"""Hugging Face T5 checkpoints: config checks, the name map to the T5X tree, streaming read and write.

A Hugging Face T5 directory holds `config.json` and its weights as `model.safetensors`, sharded
safetensors (`model.safetensors.index.json` naming `model-0000i-of-0000n.safetensors`), or PyTorch
pickles (`pytorch_model.bin`, possibly sharded with `pytorch_model.bin.index.json`), as
`bigscience/T0_3B` and `T0pp` are published.

Only T5 v1.1 / T0 is accepted: gated tanh-GELU feed-forward, untied logits without decoder output
scaling, an encoder-decoder. Every other setting is refused in one error that lists them all.

Names (H model dim, N heads, D head dim, F feed-forward dim, V vocabulary, K buckets); Linear weights
are stored [out, in] by PyTorch and transposed to T5X's [in, out] kernels:

  shared.weight [V, H]                                  -> token_embedder/embedding [V, H]
  {enc,dec}oder.block.0.layer.0.SelfAttention
      .relative_attention_bias.weight [K, N]            -> {enc,dec}oder/relpos_bias/rel_embedding [N, K]
  encoder.block.i.layer.0.SelfAttention.{q,k,v}.weight [N*D, H]
                                                        -> encoder/layers_i/attention/{query,key,value}/kernel
  ....o.weight [H, N*D]                                 -> .../out/kernel [N*D, H]
  encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1}.weight [F, H] -> encoder/layers_i/mlp/{wi_0,wi_1}/kernel
  ....wo.weight [H, F]                                  -> .../mlp/wo/kernel [F, H]
  decoder.block.i.layer.{0,1,2}                         -> self_attention, encoder_decoder_attention, mlp
  *.layer_norm.weight, {enc,dec}oder.final_layer_norm.weight -> .../*_layer_norm/scale, *_norm/scale
  lm_head.weight [V, H]                                 -> decoder/logits_dense/kernel [H, V]

`encoder.embed_tokens.weight` and `decoder.embed_tokens.weight` are aliases of `shared.weight` and
are skipped; so is `decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight`, which some
checkpoints carry and T5 never uses.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import safetensors
import safetensors.numpy

from rospr_jax import storage
from rospr_jax.model.config import T5Config
from rospr_jax.model.param_tree import (as_numpy_dtype, collect, flatten, key_problems, param_shapes,
                                        raise_problems)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_INDEX, SAFETENSORS_FILE, TORCH_INDEX, TORCH_FILE)
# Files beside the weights that a Hugging Face directory may carry (copied by `rospr convert`).
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")

# ---------------------------------------------------------------------------------------------------
# config.json


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
  for key, default in _MUST_BE_DEFAULT.items():
    if key in hf and hf[key] != default and not (default == {} and not hf[key]):
      problems.append(f"{key}={hf[key]!r}: not implemented (only {default!r} is)")

  known = set(_MAPPED) | _CHECKED | set(_MUST_BE_DEFAULT) | _HARMLESS
  for key in sorted(set(hf) - known):
    if not _is_default_like(hf[key]):
      problems.append(f"unknown attribute {key}={hf[key]!r}: the model may not implement it")

  fields = {}
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
  raise_problems(f"{source}: this Hugging Face config describes a model this project does not "
                 "implement:", problems)
  return T5Config(**fields), tie is not False


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


# ---------------------------------------------------------------------------------------------------
# Names.


def hf_names(config: T5Config) -> dict[str, tuple[str, bool]]:
  """`{t5x_path: (hf_key, transpose)}` for every parameter of `config`'s model."""
  names: dict[str, tuple[str, bool]] = {"token_embedder/embedding": ("shared.weight", False)}

  def attention(t5x: str, hf: str) -> None:
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
      names[f"{t5x}/{ours}/kernel"] = (f"{hf}.{theirs}.weight", True)

  def mlp(t5x: str, hf: str) -> None:
    for name in ("wi_0", "wi_1", "wo"):
      names[f"{t5x}/{name}/kernel"] = (f"{hf}.{name}.weight", True)

  for stack in ("encoder", "decoder"):
    names[f"{stack}/relpos_bias/rel_embedding"] = (
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True)
  for i in range(config.num_encoder_layers):
    t5x, hf = f"encoder/layers_{i}", f"encoder.block.{i}.layer"
    names[f"{t5x}/pre_attention_layer_norm/scale"] = (f"{hf}.0.layer_norm.weight", False)
    attention(f"{t5x}/attention", f"{hf}.0.SelfAttention")
    names[f"{t5x}/pre_mlp_layer_norm/scale"] = (f"{hf}.1.layer_norm.weight", False)
    mlp(f"{t5x}/mlp", f"{hf}.1.DenseReluDense")
  names["encoder/encoder_norm/scale"] = ("encoder.final_layer_norm.weight", False)
  for i in range(config.num_decoder_layers):
    t5x, hf = f"decoder/layers_{i}", f"decoder.block.{i}.layer"
    names[f"{t5x}/pre_self_attention_layer_norm/scale"] = (f"{hf}.0.layer_norm.weight", False)
    attention(f"{t5x}/self_attention", f"{hf}.0.SelfAttention")
    names[f"{t5x}/pre_cross_attention_layer_norm/scale"] = (f"{hf}.1.layer_norm.weight", False)
    attention(f"{t5x}/encoder_decoder_attention", f"{hf}.1.EncDecAttention")
    names[f"{t5x}/pre_mlp_layer_norm/scale"] = (f"{hf}.2.layer_norm.weight", False)
    mlp(f"{t5x}/mlp", f"{hf}.2.DenseReluDense")
  names["decoder/decoder_norm/scale"] = ("decoder.final_layer_norm.weight", False)
  names["decoder/logits_dense/kernel"] = ("lm_head.weight", True)
  return names


def _alias_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """Keys some checkpoints carry that duplicate or are unused by the model (accepted, not loaded)."""
  return {
      "encoder.embed_tokens.weight": (config.vocab_size, config.emb_dim),
      "decoder.embed_tokens.weight": (config.vocab_size, config.emb_dim),
      "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight":
          (config.relative_attention_num_buckets, config.num_heads),
  }


# ---------------------------------------------------------------------------------------------------
# Weight files.


# The safetensors dtypes this reader accepts, with their numpy names (bfloat16 through ml_dtypes).
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "BOOL": "bool"}
# Bytes per element of every safetensors dtype, for explaining a header the library refused.
_SAFETENSORS_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
                         "BF16": 2, "I16": 2, "U16": 2, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
                         "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "I8": 1, "U8": 1, "BOOL": 1}
_LIBRARY_PREFIX = "Error while deserializing header: "
_MAX_HEADER_BYTES = 100_000_000  # The library refuses larger headers; never read more to explain.


def _open_safetensors(path: Path):
  """`safetensors.safe_open(path, framework="numpy")`: parses and validates the header, reads nothing else.

  Where the library offers it (safetensors >= 0.8) tensors are read with pread(2), each into one fresh
  buffer, so no page of the file stays mapped; older versions memory-map the file, which `read`
  unmaps after every tensor by closing the handle.
  """
  try:
    return safetensors.safe_open(path, framework="numpy", backend="pread")
  except TypeError:  # safetensors < 0.8: no `backend` argument.
    return safetensors.safe_open(path, framework="numpy")


def _explain_refusal(path: Path, error: Exception) -> str:
  """A message naming `path` (and the tensor, where one is at fault) for a file safetensors refused.

  The library decides that the file is bad; this only looks at the file again to say why in terms a
  reader can act on: truncated, header length beyond the file, which tensor's byte range is wrong.
  """
  reason = str(error)
  reason = reason[len(_LIBRARY_PREFIX):] if reason.startswith(_LIBRARY_PREFIX) else reason
  generic = f"{path}: corrupted or truncated safetensors file ({reason})."
  try:
    size = path.stat().st_size
    with open(path, "rb") as f:
      head = f.read(8)
      if len(head) < 8:
        return (f"{path}: truncated safetensors file ({size} bytes, shorter than its 8-byte header "
                "length).")
      header_size = int.from_bytes(head, "little")
      if 8 + header_size > size:
        return (f"{path}: truncated or corrupted safetensors file: its header claims {header_size} "
                f"bytes but the file has {size}.")
      if header_size > _MAX_HEADER_BYTES:
        return f"{path}: corrupted safetensors header: it claims {header_size} bytes ({reason})."
      raw = f.read(header_size)
    try:
      header = json.loads(raw.decode("utf-8"))
      if not isinstance(header, dict):
        raise ValueError(f"the header is a {type(header).__name__}, not an object")
    except (UnicodeDecodeError, ValueError) as e:
      return f"{path}: corrupted safetensors header ({e}; {reason})."
    data_size = size - 8 - header_size
    end_max, last = 0, None
    for key, info in header.items():
      if key == "__metadata__":
        continue
      try:
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        nbytes = math.prod(shape) * _SAFETENSORS_ITEMSIZE[info["dtype"]]
      except (KeyError, TypeError, ValueError):
        return f"{path}: corrupted safetensors header entry for {key}: {info!r} ({reason})."
      if begin < 0 or end - begin != nbytes:
        return (f"{path}: corrupted safetensors header: {key} of shape {shape} and dtype "
                f"{info['dtype']} needs {nbytes} bytes but spans bytes [{begin}, {end}).")
      if end > end_max:
        end_max, last = end, key
    if end_max > data_size:
      return (f"{path}: truncated safetensors file: {last} needs data bytes up to {end_max} but the "
              f"file holds {data_size} bytes of data.")
    if end_max < data_size:
      return (f"{path}: corrupted safetensors file: {data_size - end_max} bytes follow the last "
              f"tensor ({reason}).")
    return f"{path}: corrupted safetensors header ({reason})."
  except Exception:  # pylint: disable=broad-except  (the explanation must never hide the refusal)
    return generic


class SafetensorsFile:
  """Reads one tensor at a time from a .safetensors file through the `safetensors` library.

  Opening validates the header (the library's checks: JSON, dtypes, shapes against byte ranges, ranges
  tiling the file exactly); every refusal is a ValueError naming the file. `read` returns a fresh array
  in the stored dtype (BF16 as `ml_dtypes.bfloat16`).
  """

  def __init__(self, path: Path):
    self.path = path
    self.entries: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    try:
      with _open_safetensors(path) as f:
        for key in f.keys():
          view = f.get_slice(key)
          name, shape = view.get_dtype(), tuple(int(d) for d in view.get_shape())
          if name not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: {key} is stored as {name}, which is not supported (only "
                             f"{', '.join(_SAFETENSORS_DTYPES)}).")
          self.entries[key] = (as_numpy_dtype(_SAFETENSORS_DTYPES[name]), shape)
    except safetensors.SafetensorError as e:
      raise ValueError(_explain_refusal(path, e)) from e

  def shapes(self) -> dict[str, tuple[int, ...]]:
    return {key: entry[1] for key, entry in self.entries.items()}

  def read(self, key: str) -> np.ndarray:
    """A fresh array holding tensor `key`, in its stored dtype."""
    dtype, shape = self.entries[key]
    try:
      with _open_safetensors(self.path) as f:
        array = f.get_tensor(key)
    except safetensors.SafetensorError as e:
      raise ValueError(f"{_explain_refusal(self.path, e)} (Reading {key}, after the header had been "
                       "accepted: the file changed or is damaged.)") from e
    except TypeError as e:  # numpy does not know the dtype the library asked for.
      raise ValueError(f"{self.path}: the installed safetensors {safetensors.__version__} cannot read "
                       f"{key} ({dtype}) as a numpy array ({e}); upgrade safetensors.") from e
    if array.dtype != dtype:
      # BF16 is ml_dtypes.bfloat16 in this project; a library that hands BF16 over as its raw 16-bit
      # patterns gets them reinterpreted, never converted.
      if dtype == as_numpy_dtype("bfloat16") and array.dtype in (np.dtype(np.uint16), np.dtype(np.int16)):
        array = array.view(dtype)
      else:
        raise ValueError(f"{self.path}: the safetensors library read {key} as {array.dtype}; its header "
                         f"says {dtype}.")
    if tuple(array.shape) != shape:
      raise ValueError(f"{self.path}: the safetensors library read {key} with shape {tuple(array.shape)}; "
                       f"its header says {shape}.")
    return array


class TorchFile:
  """Reads tensors from a PyTorch pickle (`torch.load(mmap=True, weights_only=True)`)."""

  def __init__(self, path: Path):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"{path}: reading a PyTorch checkpoint (.bin) needs PyTorch, which is not installed: "
          "`pip install torch` (the CPU build is enough), or use a safetensors checkpoint.") from e
    self.path = path
    self._torch = torch
    try:
      try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
      except RuntimeError as e:
        if "mmap" not in str(e):
          raise
        # Files written before torch 1.6 (legacy format) cannot be memory-mapped.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files.
      raise ValueError(f"{path}: corrupted or truncated PyTorch checkpoint "
                       f"({type(e).__name__}: {e}).") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
      raise ValueError(f"{path}: not a PyTorch state dict of tensors.")
    self.state = state

  def shapes(self) -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in self.state.items()}

  def read(self, key: str) -> np.ndarray:
    """A copy of tensor `key` in memory the caller owns (the file stays memory-mapped, not copied)."""
    tensor = self.state[key].detach().contiguous()
    if tensor.dtype == self._torch.bfloat16:
      return tensor.view(self._torch.int16).numpy().view(as_numpy_dtype("bfloat16")).copy()
    return tensor.numpy().copy()


def _weight_files(directory: Path) -> tuple[list[Path], str, Path | None]:
  """The weight files of a Hugging Face directory, their kind ("safetensors" or "torch"), the index."""
  for index, kind in ((SAFETENSORS_INDEX, "safetensors"), (TORCH_INDEX, "torch")):
    index_file = directory / index
    if index_file.is_file():
      try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
      except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{index_file}: corrupted index (expected a JSON object with a "
                         f"`weight_map`): {e}.") from e
      for name in files:
        if not isinstance(name, str) or os.path.basename(name) != name:
          raise ValueError(f"{index_file}: the weight map names {name!r}, not a file beside it.")
        if not (directory / name).is_file():
          raise FileNotFoundError(f"{directory / name}: shard named by {index_file} is missing.")
      return [directory / name for name in files], kind, index_file
    single = directory / (SAFETENSORS_FILE if kind == "safetensors" else TORCH_FILE)
    if single.is_file():
      return [single], kind, None
  raise FileNotFoundError(f"{directory}: no weights: expected one of {', '.join(WEIGHT_FILES)}.")


def read_hf_config(directory: Path) -> dict[str, Any]:
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


def hf_weight_files(directory: str | os.PathLike) -> list[Path]:
  """The weight files (and index) of a Hugging Face directory, for fingerprints."""
  files, _, index = _weight_files(Path(directory))
  return ([index] if index else []) + files


def open_hf(path: str | os.PathLike) -> tuple[T5Config, Iterator[tuple[str, np.ndarray]]]:
  """Checks a Hugging Face T5 directory (config.json, every weight's key and shape), reading no tensor.

  Returns:
    (config, iterator of (T5X name, tensor as stored, in T5X's layout: a transposed view of a Linear
    weight), each read when its turn comes).
  """
  directory = Path(path)
  config, tied = config_from_hf(read_hf_config(directory), str(directory / CONFIG_FILE))
  files, kind, _ = _weight_files(directory)
  readers = [SafetensorsFile(f) if kind == "safetensors" else TorchFile(f) for f in files]
  owner: dict[str, Any] = {}
  found: dict[str, tuple[int, ...]] = {}
  where: dict[str, str] = {}
  for reader in readers:
    for key, shape in reader.shapes().items():
      if key in owner:
        raise ValueError(f"{reader.path}: key {key} is also in {owner[key].path}.")
      owner[key], found[key], where[key] = reader, shape, reader.path.name

  names = hf_names(config)
  if tied and "lm_head.weight" not in found:
    names["decoder/logits_dense/kernel"] = ("shared.weight", True)  # transformers >= 5 tied lm_head.
  expected = {}
  for t5x, shape in param_shapes(config).items():
    hf_key, transpose = names[t5x]
    expected[hf_key] = shape[::-1] if transpose else shape
  for key, shape in _alias_shapes(config).items():
    if key in found:
      expected[key] = shape
  raise_problems(f"{directory}: the weights do not match {CONFIG_FILE} "
                 f"({config.num_encoder_layers}+{config.num_decoder_layers} layers, H={config.emb_dim}, "
                 f"{config.num_heads} heads x {config.head_dim}, mlp {config.mlp_dim}, vocab "
                 f"{config.vocab_size}):", key_problems(found, expected, where))

  return config, ((t5x, owner[key].read(key).T if transpose else owner[key].read(key))
                  for t5x, (key, transpose) in names.items())


def load_hf(path: str | os.PathLike, dtype: Any = np.float32) -> tuple[T5Config, dict[str, Any]]:
  """Loads a Hugging Face T5 directory (`open_hf`) into the T5X tree, one tensor at a time, cast to
  `dtype` on the way (None keeps the stored dtype)."""
  config, tensors = open_hf(path)
  return config, collect(tensors, dtype)


# ---------------------------------------------------------------------------------------------------
# Writing.


def _check_storable(file: Path, key: str, dtype: np.dtype) -> None:
  if not any(dtype == as_numpy_dtype(name) for name in _SAFETENSORS_DTYPES.values()):
    raise ValueError(f"{file}: {key} has dtype {dtype}, which cannot be stored in safetensors (only "
                     f"{', '.join(_SAFETENSORS_DTYPES.values())}).")


def _write_safetensors(file: Path, tensors: list[tuple[str, np.ndarray, bool]]) -> int:
  """Writes [(key, array, transpose)] as one safetensors file with the library; returns data bytes.

  `safetensors.numpy.save_file` writes from the arrays' buffers, so they must be C-contiguous: the
  transposed kernels of this file are materialized for the call (one file's worth of copies).
  """
  arrays = {}
  for key, array, transpose in tensors:
    _check_storable(file, key, array.dtype)
    arrays[key] = np.ascontiguousarray(array.T if transpose else array)
  try:
    safetensors.numpy.save_file(arrays, file, metadata={"format": "pt"})
  except safetensors.SafetensorError as e:
    raise ValueError(f"{file}: the safetensors library refused to write it ({e}).") from e
  return sum(array.nbytes for array in arrays.values())


DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' default; also bounds the memory of a save


def save_hf(path: str | os.PathLike, config: T5Config, params: Mapping[str, Any],
            max_shard_bytes: int | None = DEFAULT_MAX_SHARD_BYTES, *, extra_files: Iterable[str | os.PathLike] = ()) -> Path:
  """Writes a Hugging Face T5 directory (config.json + safetensors), atomically.

  Args:
    path: the directory to create (must not exist, or be empty).
    config: the model's config.
    params: nested dict with T5X names (numpy or jax arrays); their dtype is kept.
    max_shard_bytes: split the weights into `model-0000i-of-0000n.safetensors` shards of at most this
      many bytes (a tensor larger than that gets a shard of its own) with `model.safetensors.index.json`;
      a model that fits one shard, or None, writes one `model.safetensors`. A shard's [out, in] weights
      are held in memory while its file is written (safetensors writes a file in one call), so the
      bound is also the extra memory of a save.
    extra_files: files copied into the directory (a tokenizer, for instance).

  Returns:
    The directory.
  """
  flat = {name: np.asarray(value) for name, value in flatten(params).items()}
  raise_problems("save_hf: the parameters do not match the config:",
                 key_problems({k: v.shape for k, v in flat.items()}, param_shapes(config)))
  names = hf_names(config)
  tensors = [(names[t5x][0], flat[t5x], names[t5x][1]) for t5x in param_shapes(config)]
  shards: list[list[tuple[str, np.ndarray, bool]]] = [[]]
  size = 0
  for item in tensors:
    if max_shard_bytes is not None and shards[-1] and size + item[1].nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(item)
    size += item[1].nbytes

  with storage.output_folder(path, "Hugging Face checkpoint", overwrite_flag=None) as tmp_dir:
    tmp = Path(tmp_dir)
    (tmp / CONFIG_FILE).write_text(json.dumps(config_to_hf(config), indent=2) + "\n")
    if len(shards) == 1:
      _write_safetensors(tmp / SAFETENSORS_FILE, shards[0])
    else:
      weight_map, total = {}, 0
      for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += _write_safetensors(tmp / name, shard)
        weight_map.update({key: name for key, _, _ in shard})
      (tmp / SAFETENSORS_INDEX).write_text(json.dumps(
          {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    for extra in extra_files:
      extra = Path(extra)
      (tmp / extra.name).write_bytes(extra.read_bytes())
  return Path(path)

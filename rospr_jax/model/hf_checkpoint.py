"""Hugging Face T5 checkpoint directories: find the weight files, stream them onto the T5X tree, write
them.

A Hugging Face T5 directory holds `config.json` and its weights as `model.safetensors`, sharded
safetensors (`model.safetensors.index.json` naming `model-0000i-of-0000n.safetensors`), or PyTorch
pickles (`pytorch_model.bin`, possibly sharded with `pytorch_model.bin.index.json`), as
`bigscience/T0_3B` and `T0pp` are published. The config is checked by `hf_config.py`, tensor names map
by `hf_names.py`, and the files are read by `safetensors_file.py` and `torch_file.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from rospr_jax import storage
from rospr_jax.model import formats
from rospr_jax.model.config import T5Config
from rospr_jax.model.hf_config import CONFIG_FILE, config_from_hf, config_to_hf, read_hf_config
from rospr_jax.model.hf_names import alias_shapes, hf_names
from rospr_jax.model.param_tree import collect, flatten, key_problems, param_shapes, raise_problems
from rospr_jax.model.safetensors_file import SafetensorsFile, write_safetensors
from rospr_jax.model.torch_file import TorchFile

KIND = "rospr_hf_checkpoint"  # the manifest's "kind" of a checkpoint this project writes
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_INDEX, SAFETENSORS_FILE, TORCH_INDEX, TORCH_FILE)
# Files beside the weights that a Hugging Face directory may carry (copied by `rospr convert`).
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")


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
  for key, shape in alias_shapes(config).items():
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


DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' default; also bounds the memory of a save


def save_hf(path: str | os.PathLike, config: T5Config, params: Mapping[str, Any],
            max_shard_bytes: int | None = DEFAULT_MAX_SHARD_BYTES, *,
            extra_files: Iterable[str | os.PathLike] = (), manifest_facts: dict | None = None) -> Path:
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
    manifest_facts: more facts for its manifest.json (`checkpoints.save_hf`: the weights' fingerprint).

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

  with storage.output_folder(path, "Hugging Face checkpoint", kind=KIND, overwrite_flag=None,
                             facts=manifest_facts) as tmp_dir:
    tmp = Path(tmp_dir)
    (tmp / CONFIG_FILE).write_text(json.dumps(config_to_hf(config), indent=2) + "\n")
    if len(shards) == 1:
      write_safetensors(tmp / SAFETENSORS_FILE, shards[0])
    else:
      weight_map, total = {}, 0
      for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_safetensors(tmp / name, shard)
        weight_map.update({key: name for key, _, _ in shard})
      (tmp / SAFETENSORS_INDEX).write_text(json.dumps(
          {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    for extra in extra_files:
      extra = Path(extra)
      (tmp / extra.name).write_bytes(extra.read_bytes())
  return Path(path)


# ---------------------------------------------------------------------------------------------------
# The format, registered (`formats.py`).


def _recognizes(path: Path) -> bool:
  return path.is_dir() and (path / CONFIG_FILE).is_file()


def _weights_of(path: Path) -> list[Path]:
  """The files its weights are read from: config.json, the weight files and their index."""
  return [path / CONFIG_FILE, *hf_weight_files(path)]


def _write(path: Path, config: T5Config, params: Mapping[str, Any], options: formats.WriteOptions) -> Path:
  """`rospr convert --format hf`: a Hugging Face source's tokenizer files and the SentencePiece model
  go along."""
  source = Path(options.source)
  extra = [source / name for name in TOKENIZER_FILES if (source / name).is_file()] if _recognizes(source) else []
  if options.vocabulary and Path(options.vocabulary).name not in {f.name for f in extra}:
    extra.append(Path(options.vocabulary))
  return save_hf(path, config, params, options.max_shard_bytes or DEFAULT_MAX_SHARD_BYTES, extra_files=extra,
                 manifest_facts=dict(options.manifest_facts))


FORMAT = formats.register(formats.CheckpointFormat(
    name="hf", kind=KIND, layout="Hugging Face: config.json + weights", destination="the directory to create",
    recognizes=_recognizes, missing=f"not a Hugging Face checkpoint: no `{CONFIG_FILE}`", open=open_hf,
    folder=Path, files=_weights_of, write=_write))

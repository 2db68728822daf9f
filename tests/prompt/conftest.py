"""Fixtures of the prompt tests: a small random backbone and examples of a few sources."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rospr_jax.model import T5Config, init_params
from rospr_jax.prompt.input_pipeline import Example, SourceExamples

CONFIG = T5Config(vocab_size=64, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_encoder_layers=2,
                  num_decoder_layers=2, relative_attention_max_distance=16)


@pytest.fixture(scope="session")
def config() -> T5Config:
  return CONFIG


@pytest.fixture(scope="session")
def params():
  """Random frozen parameters of CONFIG (host numpy arrays, so tests can compare them bitwise)."""
  return jax.tree.map(np.asarray, init_params(CONFIG, jax.random.PRNGKey(0)))


def random_examples(num_sources: int, count: int, seed: int = 0, vocab: int = 64) -> SourceExamples:
  """`count` random examples spread over `num_sources` sources named s0, s1, ..."""
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(count):
    source = int(rng.integers(0, num_sources))
    inputs = rng.integers(3, vocab, int(rng.integers(3, 14))).tolist()
    targets = rng.integers(3, vocab, int(rng.integers(1, 4))).tolist() + [1]
    examples.append(Example(source, inputs, targets))
  return SourceExamples([f"s{i}" for i in range(num_sources)], examples)


@pytest.fixture
def examples():
  """The generator `random_examples(num_sources, count, seed=0)`."""
  return random_examples


@pytest.fixture(autouse=True)
def clean_gin():
  """`trainer.train` is gin-configurable: no test may see another's bindings."""
  import gin
  gin.clear_config()
  yield
  gin.clear_config()


def _run_configs(**flat) -> dict:
  """`trainer.train`'s config objects from flat settings, each the field of one config class
  (`num_steps=2, batch_size=8, dropout_rate=0.0` -> loop=, shapes=, step=, checkpointing=)."""
  import dataclasses
  from rospr_jax.prompt import configs
  groups = {"loop": configs.LoopConfig, "shapes": configs.ShapeConfig, "step": configs.StepConfig,
            "checkpointing": configs.CheckpointConfig}
  fields = {key: {f.name for f in dataclasses.fields(kind)} for key, kind in groups.items()}
  unknown = set(flat) - set().union(*fields.values())
  assert not unknown, f"no config has the fields {unknown}"
  return {key: kind(**{k: v for k, v in flat.items() if k in fields[key]}) for key, kind in groups.items()}


@pytest.fixture
def run_configs():
  """The function `run_configs(**flat settings)` -> `trainer.train`'s loop, shapes, step, checkpointing."""
  return _run_configs

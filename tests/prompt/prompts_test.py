"""Prompt initializers and the Prompt module, against hand-computed values."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import linen as nn

from rospr_jax.prompt import prompts

KEY = jax.random.PRNGKey(0)


def _embeddings(vocab=50, dim=6):
  """Row i is i + [0, .01, .02, ...]: every row is distinct and its id can be read off column 0."""
  return (np.arange(vocab)[:, None] + 0.01 * np.arange(dim)[None, :]).astype(np.float32)


def test_random_uniform_range_and_determinism():
  init = prompts.random_uniform(0.5)
  x = np.asarray(init(KEY, (100, 16)))
  assert x.shape == (100, 16) and x.min() >= -0.5 and x.max() < 0.5
  assert x.min() < -0.45 and x.max() > 0.45  # both signs, the whole range
  np.testing.assert_array_equal(x, np.asarray(init(KEY, (100, 16))))
  with pytest.raises(ValueError, match=r"shape \[P, H\]; asked for shape \(2, 3, 4\)"):
    init(KEY, (2, 3, 4))


def test_sample_of_embeddings_draws_distinct_frequent_rows():
  table = _embeddings()
  x = np.asarray(prompts.from_sample_of_embeddings(table, population_size=20)(KEY, (10, 6)))
  ids = x[:, 0].round().astype(int)
  np.testing.assert_allclose(x, table[ids])
  assert len(set(ids.tolist())) == 10 and ids.max() < 20
  # More prompt rows than the population: with replacement, still within the population.
  y = np.asarray(prompts.from_sample_of_embeddings(table, population_size=4)(KEY, (9, 6)))
  assert set(y[:, 0].round().astype(int).tolist()) <= {0, 1, 2, 3}


def test_sample_of_embeddings_refuses_another_width():
  init = prompts.from_sample_of_embeddings(_embeddings(dim=6))
  with pytest.raises(ValueError,
                     match=r"Prompt shape \(5, 8\) does not match the embedding table of shape \(50, 6\)"):
    init(KEY, (5, 8))


def test_class_labels_are_mean_sub_token_embeddings():
  table = _embeddings()
  init = prompts.from_class_labels(table, [[7], [3, 11], [40, 41, 45]],
                                   fallback=prompts.from_sample_of_embeddings(table, 5))
  x = np.asarray(init(KEY, (6, 6)))
  np.testing.assert_allclose(x[0], table[7])
  np.testing.assert_allclose(x[1], (table[3] + table[11]) / 2)
  np.testing.assert_allclose(x[2], (table[40] + table[41] + table[45]) / 3, rtol=1e-6)
  assert set(x[3:, 0].round().astype(int).tolist()) <= set(range(5))  # the rest: sampled vocabulary
  short = np.asarray(init(KEY, (2, 6)))  # more labels than rows: the first P labels
  np.testing.assert_allclose(short[1], (table[3] + table[11]) / 2)


def test_class_labels_refuse_unknown_tokens():
  with pytest.raises(ValueError, match=r"label 1 has token ids \[99\] outside the vocabulary of 50"):
    prompts.from_class_labels(_embeddings(), [[1], [99]])
  with pytest.raises(ValueError, match="label 0 has no tokens"):
    prompts.from_class_labels(_embeddings(), [[]])


def test_from_file_and_array(tmp_path):
  value = np.arange(12, dtype=np.float32).reshape(3, 4)
  path = tmp_path / "prompt.npy"
  np.save(path, value)
  np.testing.assert_array_equal(np.asarray(prompts.from_file(path)(KEY, (3, 4))), value)
  with pytest.raises(ValueError, match=r"prompt.npy: The given prompt has shape \(3, 4\) while the prompt to "
                                       r"initialize has shape \(5, 4\)"):
    prompts.from_file(path)(KEY, (5, 4))
  with pytest.raises(FileNotFoundError, match="missing.npy"):
    prompts.from_file(tmp_path / "missing.npy")


def test_prompt_module_is_a_replicated_parameter():
  module = prompts.Prompt(length=7, embed_dim=12, prompt_init=prompts.random_uniform(0.5))
  variables = module.init(KEY)
  assert tuple(nn.get_partition_spec(variables)["params"]["prompt"]) == ("prompt", "prompt_embed")
  value = module.apply(variables)
  assert value.shape == (7, 12)
  np.testing.assert_array_equal(np.asarray(value), np.asarray(nn.unbox(variables["params"]["prompt"])))


def test_initial_table_row_depends_on_its_source_only():
  uniform = lambda s: prompts.random_uniform(0.5)
  both, seeds = prompts.initial_table(["a", "b"], 4, 8, seed=3, initializer_for=uniform)
  alone, _ = prompts.initial_table(["b"], 4, 8, seed=3, initializer_for=uniform)
  np.testing.assert_array_equal(both[1], alone[0])
  assert not np.allclose(both[0], both[1])
  assert seeds == [prompts.source_seed("a"), prompts.source_seed("b")]
  other_seed, _ = prompts.initial_table(["b"], 4, 8, seed=4, initializer_for=uniform)
  assert not np.allclose(other_seed[0], alone[0])
  with pytest.raises(ValueError, match=r"Duplicate source names \['a'\]"):
    prompts.initial_table(["a", "b", "a"], 4, 8, seed=0, initializer_for=uniform)

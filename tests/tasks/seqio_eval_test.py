"""The SeqIO-evaluator path equals the direct path (prompted examples, SentencePiece, score_examples,
rank_classification.accuracy) on a BIG-bench target and on held-out templates; sharded equals single.

Needs the cache `rospr fetch` fills (promptsource templates); BIG-bench is the tests' own checkout.
"""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf

from rospr_jax.eval import metrics
from rospr_jax.data import vocabulary as vocabulary_lib
from rospr_tasks import seqio_eval
from rospr_jax.eval.batching import RankExample, score_examples
from rospr_jax.model import init_params
from rospr_jax.model import partitioning
from rospr_jax.tokenization import Tokenizer

RTE_TASKS = ("super_glue_rte_GPT_3_style_score_eval", "super_glue_rte_does_it_follow_that_score_eval")
RTE_MIXTURE = "rospr_test_seqio_eval_rte"
# The test checkout's logical_deduction: five_objects (10 examples, 5 choices), then three_objects (12, 3).
BIGBENCH_TASK = "bigbench_logical_deduction_score_eval"

# label 0 = entailment, 1 = not entailment (SuperGLUE RTE).
RTE_RECORDS = [
    ("The cat sat on the warm mat all afternoon.", "A cat was on the mat.", 0),
    ("Paris is the capital and largest city of France.", "Paris is in Germany.", 1),
    ("The company reported record profits this quarter.", "The company lost money.", 1),
    ("She bought three apples and two pears at the market.", "She bought fruit.", 0),
    ("The bridge was closed for repairs during the storm.", "The bridge was open.", 1),
    ("Heavy rain flooded the streets of the old town.", "The streets were flooded.", 0),
    ("The museum opened a new wing for modern art.", "The museum has modern art.", 0),
    ("He forgot his keys and could not enter the house.", "He entered the house easily.", 1),
    ("Scientists discovered water ice on the distant moon.", "Ice was found on a moon.", 0),
    ("The orchestra played Beethoven's ninth symphony.", "The orchestra played jazz.", 1),
]


def _vocab() -> str:
  return vocabulary_lib.offline_vocabulary_path()  # the tasks' vocabulary here (no ROSPR_VOCAB)


@pytest.fixture(scope="module")
def registry(registry):  # the package's registry fixture (tests/tasks/conftest.py), plus an RTE mixture
  registry_lib = registry
  if RTE_MIXTURE not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(RTE_MIXTURE, [(name, 1.0) for name in RTE_TASKS])
  return registry_lib


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
  return Tokenizer(vocabulary_lib.offline_vocabulary_path())


@pytest.fixture(scope="module")
def config(tiny_model):
  return tiny_model.config


@pytest.fixture(scope="module")
def model(tiny_model):
  return tiny_model.model


@pytest.fixture(scope="module")
def params(tiny_model):
  return tiny_model.params


@pytest.fixture(scope="module")
def prompt(config):
  return 0.5 * jax.random.normal(jax.random.PRNGKey(1), (3, config.emb_dim))  # [P, H]


@pytest.fixture(scope="module")
def rte_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("rospr_seqio_eval_data")
  folder = root / "super_glue" / "rte"
  folder.mkdir(parents=True)
  with open(folder / "validation.jsonl", "w", encoding="utf-8") as f:
    for i, (premise, hypothesis, label) in enumerate(RTE_RECORDS):
      f.write(json.dumps({"premise": premise, "hypothesis": hypothesis, "idx": i, "label": label}) + "\n")
  return root


@pytest.fixture()
def with_rte(rte_dir, monkeypatch):
  monkeypatch.setenv("ROSPR_DATA_DIR", str(rte_dir))
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  return rte_dir


@pytest.fixture(scope="module")
def rte_seqio(registry, rte_dir, params, model, prompt):
  """The mixture of two RTE templates through SeqIO, single device, with a soft prompt."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("ROSPR_DATA_DIR", str(rte_dir))
    mp.delenv("ROSPR_HF_HUB", raising=False)
    return seqio_eval.evaluate_task_with_seqio(RTE_MIXTURE, params, model, vocabulary=_vocab(), prompt=prompt,
                                               batch_size=4,
                                               return_scores=True)


def _direct(task_name, registry, tokenizer, params, model, prompt=None, max_examples=None, **lengths):
  """The direct path, without TensorFlow: rows [N] scores, [N, 2] idx, accuracy in percent, choices [E]."""
  task = registry.TARGETS[task_name.removesuffix("_score_eval")]
  examples = list(itertools.islice(task.examples(task.eval_split), max_examples))
  scored = score_examples(params, model, [
      RankExample(tokenizer.encode_input(e.inputs), [tokenizer.encode_target(c) for c in e.answer_choices])
      for e in examples], prompts=prompt, batch_size=4, **lengths)
  scores = np.concatenate(scored)
  idx = np.asarray([(e.idx, c) for e in examples for c in range(len(e.answer_choices))])
  is_correct = np.concatenate([e.is_correct for e in examples])
  return scores, idx, 100.0 * metrics.accuracy(idx, scores, is_correct), [len(e.answer_choices) for e in examples]


def test_bigbench_target_agrees_with_direct_path(registry, tokenizer, params, model):
  got = seqio_eval.evaluate_task_with_seqio(BIGBENCH_TASK, params, model, vocabulary=_vocab(), batch_size=4,
                                            max_examples=16,
                                            return_scores=True)
  scores, idx, accuracy, choices = _direct(BIGBENCH_TASK, registry, tokenizer, params, model, max_examples=16)
  assert choices == [5] * 10 + [3] * 6  # grouping of unequal examples is exercised
  (entry,) = got.values()
  assert entry["split"] == "all" and entry["rows"] == len(scores) == sum(choices)
  np.testing.assert_array_equal(entry["idx"], idx)
  np.testing.assert_allclose(entry["scores"], scores, rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(scores))
  assert entry["accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_held_out_mixture_with_prompt_agrees_with_direct_path(registry, with_rte, rte_seqio, tokenizer, params,
                                                             model, prompt):
  assert sorted(rte_seqio) == sorted(RTE_TASKS)
  accuracies = []
  for name in RTE_TASKS:
    scores, idx, accuracy, choices = _direct(name, registry, tokenizer, params, model, prompt=prompt)
    entry = rte_seqio[name]
    assert entry["split"] == "validation" and choices == [2] * len(RTE_RECORDS)
    np.testing.assert_array_equal(entry["idx"], idx)
    np.testing.assert_allclose(entry["scores"], scores, rtol=1e-5, atol=1e-5)
    assert entry["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    accuracies.append(accuracy)
  # The prompt reaches the scorer: without it the scores differ.
  plain, _, _, _ = _direct(RTE_TASKS[0], registry, tokenizer, params, model)
  assert np.abs(plain - rte_seqio[RTE_TASKS[0]]["scores"]).max() > 1e-3


@pytest.mark.parametrize("num_partitions", [2])
def test_sharded_equals_single_device(registry, with_rte, rte_seqio, params, config, model, prompt,
                                      num_partitions):
  partitioner = partitioning.Partitioner(num_partitions)  # 8 simulated devices: data 4 x model 2
  boxed = init_params(config, jax.random.PRNGKey(0), boxed=True)
  sharded = partitioner.shard_params(params, boxed)
  got = seqio_eval.evaluate_task_with_seqio(RTE_MIXTURE, sharded, model, vocabulary=_vocab(), prompt=prompt,
                                            batch_size=8,
                                            partitioner=partitioner, return_scores=True)
  for name in RTE_TASKS:
    np.testing.assert_allclose(got[name]["scores"], rte_seqio[name]["scores"], rtol=1e-5, atol=1e-5)
    assert got[name]["accuracy"] == rte_seqio[name]["accuracy"]


def test_feature_converter_keeps_idx_and_tokens_hand_checked():
  ds = tf.data.Dataset.from_tensors({"inputs": tf.constant([5, 6], tf.int32), "targets": tf.constant([7, 1], tf.int32),
                                     "idx": tf.constant([3, 1], tf.int64), "is_correct": tf.constant(True)})
  (row,) = list(seqio_eval.RankFeatureConverter()(ds, {"inputs": 4, "targets": 3}).as_numpy_iterator())
  assert {k: v.tolist() for k, v in row.items()} == {
      "encoder_input_tokens": [5, 6, 0, 0], "decoder_target_tokens": [7, 1, 0],
      "decoder_input_tokens": [0, 7, 1], "decoder_loss_weights": [1, 1, 0], "idx": [3, 1]}
  with pytest.raises(ValueError, match=r"RankFeatureConverter needs rank-classification rows with `idx` \[2\]"):
    seqio_eval.RankFeatureConverter()(ds.map(lambda x: {"inputs": x["inputs"], "targets": x["targets"]}),
                                      {"inputs": 4, "targets": 3})


def test_rows_to_examples_groups_and_orders_choices():
  idx = np.array([[7, 1], [2, 0], [7, 0], [2, 1], [2, 2]])
  inputs = np.array([[9, 8, 0], [4, 0, 0], [9, 8, 0], [4, 0, 0], [4, 0, 0]])
  targets = np.array([[11, 1, 0], [12, 1, 0], [13, 14, 1], [15, 1, 0], [1, 0, 0]])
  examples, slots = seqio_eval.rows_to_examples(idx, inputs, targets)
  assert examples == [RankExample([9, 8], [[13, 14, 1], [11, 1]]), RankExample([4], [[12, 1], [15, 1], [1]])]
  assert slots == [(0, 1), (1, 0), (0, 0), (1, 1), (1, 2)]
  with pytest.raises(ValueError, match="the rows of example 7 have different inputs"):
    seqio_eval.rows_to_examples(idx, np.where(np.arange(5)[:, None] == 2, 5, inputs), targets)
  with pytest.raises(ValueError, match=r"example 2 has repeated choice rows \[0, 1, 1\]"):
    seqio_eval.rows_to_examples(np.array([[2, 0], [2, 1], [2, 1]]), inputs[1:4], targets[1:4])


def test_score_fn_refuses_rows_without_idx(params, model):
  ds = tf.data.Dataset.from_tensors({"encoder_input_tokens": tf.constant([5, 6]),
                                     "decoder_target_tokens": tf.constant([7, 1])}).enumerate()
  with pytest.raises(ValueError, match=r"an `idx` feature.*RankFeatureConverter\(\)"):
    seqio_eval.make_score_fn(params, model)(ds)
  with pytest.raises(ValueError, match=r"prompt must be \[P, H\], got shape \(2, 3, 64\)"):
    seqio_eval.make_score_fn(params, model, np.zeros((2, 3, 64)))


def test_empty_split_is_refused(registry, params, model, tmp_path, monkeypatch):
  (tmp_path / "super_glue" / "rte").mkdir(parents=True)
  (tmp_path / "super_glue" / "rte" / "validation.jsonl").write_text("", encoding="utf-8")
  monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path))
  with pytest.raises(ValueError, match=f"task '{RTE_TASKS[0]}' has no rank-classification rows on split 'validation'"):
    seqio_eval.evaluate_task_with_seqio(RTE_TASKS[0], params, model, vocabulary=_vocab())


def test_errors_name_the_task(registry, params, model):
  with pytest.raises(ValueError, match="no rospr task or mixture named 'nope'"):
    seqio_eval.evaluate_task_with_seqio("nope", params, model, vocabulary=_vocab())
  with pytest.raises(ValueError, match="max_examples must be at least 1, got 0"):
    seqio_eval.evaluate_task_with_seqio(BIGBENCH_TASK, params, model, vocabulary=_vocab(), max_examples=0)
  with pytest.raises(ValueError, match=r"task 'bigbench_hindu_knowledge' cannot be rank-classified on split 'all'"):
    seqio_eval.evaluate_task_with_seqio("bigbench_hindu_knowledge", params, model, vocabulary=_vocab())
  with pytest.raises(ValueError, match=r"cannot be rank-classified on split 'test'"):
    seqio_eval.evaluate_task_with_seqio(BIGBENCH_TASK, params, model, vocabulary=_vocab(), split="test")


def test_truncation_is_t0s_and_agrees_with_the_direct_path(registry, tokenizer, params, model):
  """Inputs keep their first T tokens, choices their first L - 1 and EOS, on both paths (T0's rule;
  `evaluate_task_with_seqio` defaults to T0's 1024 / 256)."""
  assert seqio_eval.T0_SEQUENCE_LENGTH == {"inputs": 1024, "targets": 256}
  task = registry.TARGETS[BIGBENCH_TASK.removesuffix("_score_eval")]
  examples = list(itertools.islice(task.examples(task.eval_split), 8))
  assert any(len(tokenizer.encode_input(e.inputs)) > 24 for e in examples)
  assert any(len(tokenizer.encode_target(c)) > 3 for e in examples for c in e.answer_choices)
  got = seqio_eval.evaluate_task_with_seqio(BIGBENCH_TASK, params, model, vocabulary=_vocab(), batch_size=4,
                                            max_examples=8, sequence_length={"inputs": 24, "targets": 3},
                                            return_scores=True)
  scores, _, accuracy, _ = _direct(BIGBENCH_TASK, registry, tokenizer, params, model, max_examples=8,
                                   max_input_length=24, max_target_length=3)
  (entry,) = got.values()
  np.testing.assert_allclose(entry["scores"], scores, rtol=1e-5, atol=1e-5)
  assert entry["accuracy"] == pytest.approx(accuracy, abs=1e-9)

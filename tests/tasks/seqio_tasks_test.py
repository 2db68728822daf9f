"""The SeqIO tasks: every dataset loads from local files, rank-classification rows, metric, errors."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pytest
import seqio

from rospr_jax.data import catalog
from rospr_jax.data import records
from rospr_tasks import preprocessors
from rospr_tasks import vocab

COPA_EXERCISE_INPUT = ("Exercise: choose the most plausible alternative.\n\n"
                       "My body cast a shadow over the grass.  because... \n"
                       "- The sun was rising.\n- The grass was cut.")


def _rows(name, split, **kwargs):
  task = seqio.get_mixture_or_task(name)
  return list(task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False,
                               **kwargs).as_numpy_iterator())


def test_registered_tasks_and_mixtures(registry):
  # BIG-bench sources: the test checkout's multiple-choice tasks besides the 14 targets (anachronisms,
  # arithmetic; simple_arithmetic_json is generative, boolean_expressions programmatic). Generated: 28
  # source templates, 12 held-out targets.
  assert sorted(n for n in registry.SOURCES if n.startswith("bigbench_")) == \
      ["bigbench_anachronisms", "bigbench_arithmetic"]
  assert len(registry.SOURCES) == 313 + 2 + 28 and len(registry.TARGETS) == 116 + 14 + 12
  assert {k: len(v) for k, v in registry.MIXTURES.items()} == {
      "rospr_t0_train": 313, "rospr_held_out_score_eval": 116, "rospr_bigbench_targets_score_eval": 14,
      "rospr_bigbench_sources": 2, "rospr_targets_score_eval": 130, "rospr_generated_sources": 28,
      "rospr_generated_targets_score_eval": 12}
  names = set(seqio.TaskRegistry.names())
  assert {"super_glue_rte_GPT_3_style_score_eval", "anli_GPT_3_style_r3_score_eval",
          "bigbench_strategyqa_score_eval", "bigbench_anachronisms", "wiki_bio_who",
          "generated_sentiment_truefalse_f0_score_eval"} <= names
  t0 = seqio.get_mixture_or_task("rospr_t0_train")
  by_name = {t.name: t for t in t0.tasks}
  amazon = [n for n in by_name if n.startswith("amazon_polarity_")]
  assert len(amazon) == 9 and {t0.get_rate(by_name[n]) for n in amazon} == {500_000 // 9}
  assert t0.get_rate(by_name["glue_mrpc_equivalent"]) == 3668
  # A BIG-bench source's rate is its train split: anachronisms 40 examples - 16 validation, arithmetic
  # 20 distinct (24 with duplicates) - 16.
  bb = seqio.get_mixture_or_task("rospr_bigbench_sources")
  assert {t.name: bb.get_rate(t) for t in bb.tasks} == {"bigbench_anachronisms": 24, "bigbench_arithmetic": 4}


def _first_rendering(registry, spec):
  """The first registered task of a dataset whose template renders the example records."""
  for task in list(registry.SOURCES.values()) + list(registry.TARGETS.values()):
    if getattr(task, "spec", None) == spec:
      split = spec.splits[0][0]
      if list(task.examples(split)):
        return task, split
  raise AssertionError(f"no template of {spec.label} renders the example records")


@pytest.mark.slow
def test_every_dataset_loads_through_its_seqio_task(registry, with_data):
  """Sources through their plain task, held-out datasets through their rank-classification task."""
  vocabulary = vocab.get_vocabulary()
  loaded = []
  for spec in catalog.T0_TRAIN_DATASETS + catalog.HELD_OUT_DATASETS:
    task, split = _first_rendering(registry, spec)
    expected = list(task.examples(split))
    if spec in catalog.HELD_OUT_DATASETS:
      rows = _rows(task.name + catalog.SCORE_EVAL_SUFFIX, "validation")
      assert [(r["inputs_pretokenized"].decode(), r["targets_pretokenized"].decode(), r["idx"].tolist(),
               bool(r["is_correct"])) for r in rows] == [
                   (e.inputs, choice, [e.idx, c], ok) for e in expected
                   for c, (choice, ok) in enumerate(zip(e.answer_choices, e.is_correct))], task.name
    else:
      rows = _rows(task.name, split)
      assert [(r["inputs_pretokenized"].decode(), r["targets_pretokenized"].decode(), int(r["idx"]))
              for r in rows] == [(e.inputs, e.targets, e.idx) for e in expected], task.name
    for r in rows:
      assert r["targets"][-1] == 1 and r["inputs"][-1] != 1  # T0: EOS on targets only
      assert r["targets"].tolist() == vocabulary.encode(r["targets_pretokenized"].decode()) + [1]
    loaded.append(spec.label)
  assert len(loaded) == 38 + 11

def test_score_eval_rows_hand_checked(registry, with_data):
  rows = _rows("super_glue_copa_exercise_score_eval", "validation")
  got = [(r["inputs_pretokenized"].decode(), r["targets_pretokenized"].decode(), r["idx"].tolist(),
          bool(r["is_correct"]), float(r["weight"])) for r in rows[:2]]
  assert got == [(COPA_EXERCISE_INPUT, "The sun was rising.", [0, 0], True, 1.0),
                 (COPA_EXERCISE_INPUT, "The grass was cut.", [0, 1], False, 1.0)]
  assert [r["idx"].tolist() for r in rows] == [[0, 0], [0, 1], [1, 0], [1, 1]]
  vocabulary = vocab.get_vocabulary()
  assert rows[0]["targets"].tolist() == vocabulary.encode("The sun was rising.") + [1]
  assert rows[0]["inputs"].tolist() == vocabulary.encode(COPA_EXERCISE_INPUT)


def test_bigbench_score_eval_rows_hand_checked(registry):
  """The test checkout's misconceptions (append_choices_to_input false: no choices in the query)."""
  rows = _rows("bigbench_misconceptions_score_eval", "all")
  got = [(r["inputs_pretokenized"].decode(), r["targets_pretokenized"].decode(), r["idx"].tolist(),
          bool(r["is_correct"]), float(r["weight"])) for r in rows[:4]]
  first = "Q: misconceptions #0: which goes with harbor 0?\nA:"
  second = "Q: misconceptions #1: which goes with orbit 1?\nA:"
  assert got == [(first, "falcon", [0, 0], True, 1.0), (first, "violet", [0, 1], False, 1.0),
                 (second, "harbor", [1, 0], False, 1.0), (second, "quartz", [1, 1], True, 1.0)]
  assert len(rows) == 2 * 12 and sum(bool(r["is_correct"]) for r in rows) == 12
  vocabulary = vocab.get_vocabulary()
  assert rows[0]["targets"].tolist() == vocabulary.encode("falcon") + [1]
  assert rows[0]["inputs"].tolist() == vocabulary.encode(first)


def test_metric_through_postprocessor(registry, with_data):
  task = seqio.get_mixture_or_task("super_glue_copa_exercise_score_eval")
  rows = _rows(task.name, "validation")
  targets = [task.postprocess_fn(None, example=r, is_target=True) for r in rows]
  assert targets == [(0, 0, True, 1.0), (0, 1, False, 1.0), (1, 0, True, 1.0), (1, 1, False, 1.0)]
  scores = [-1.0, -3.0, -2.0, -0.5]  # example 0 picks choice 0 (right), example 1 picks choice 1 (wrong)
  assert [task.postprocess_fn(s, example=r, is_target=False) for s, r in zip(scores, rows)] == scores
  (metric,) = task.score_metric_fns
  assert metric(targets, scores) == {"accuracy": 50.0}


def test_sharded_hosts_see_disjoint_examples(registry, with_data):
  name = registry.SOURCES["trec_trec1"].name
  per_host = [[int(r["idx"]) for r in _rows(name, "train", shard_info=seqio.ShardInfo(i, 2))] for i in range(2)]
  assert sorted(per_host[0] + per_host[1]) == list(range(6)) and not set(per_host[0]) & set(per_host[1])


def test_missing_dataset_is_fast_and_named(registry, tmp_path, monkeypatch):
  monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path))
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  task = seqio.get_mixture_or_task("hellaswag_complete_first_then_score_eval")
  start = time.time()
  with pytest.raises(records.DatasetNotFoundError, match=r"no data for hellaswag split 'validation'.*ROSPR_DATA_DIR"):
    task.get_dataset(sequence_length=None, split="validation", shuffle=False, use_cached=False)
  assert time.time() - start < 2.0
  with pytest.raises(ValueError, match=r"no rospr task or mixture named 'nope'"):
    registry.get_task("nope")


def test_hugging_face_arrow_files_load(registry, tmp_path, monkeypatch, example_records):
  folder = tmp_path / "super_glue" / "wic" / "validation"
  folder.mkdir(parents=True)
  table = pa.Table.from_pylist(example_records["super_glue/wic"])
  with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
      pa.ipc.new_stream(sink, table.schema) as writer:
    writer.write_table(table)
  monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path))
  rows = _rows("super_glue_wic_GPT_3_prompt_score_eval", "validation")
  assert [r["idx"].tolist() for r in rows] == [[0, 0], [0, 1], [1, 0], [1, 1]]
  assert [bool(r["is_correct"]) for r in rows] == [True, False, False, True]


def test_bigbench_targets_load_through_seqio(registry, bigbench_checkout):
  """Each of the 14 tasks through its SeqIO source: the first examples equal the loader's, and every
  task is counted in full, against the distinct examples of the checkout's task.json files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  base = bigbench_checkout / "bigbench" / "benchmark_tasks"
  expected_counts, counted = {}, {}
  for name in catalog.BIGBENCH_TARGETS:
    files = sorted(base.glob(f"{name}/*/task.json")) or [base / name / "task.json"]  # subtasks, or the task
    expected_counts[name] = sum(len({json.dumps(e) for e in json.loads(f.read_text())["examples"]})
                                for f in files)
    prompted_task = registry.TARGETS[catalog.bigbench_task_name(name)]
    ds = seqio.get_mixture_or_task(prompted_task.name).source.get_dataset(split="all", shuffle=False)
    head = list(ds.take(5).as_numpy_iterator())
    expected = [e for _, e in zip(range(5), prompted_task.examples("all"))]
    assert [(r["inputs"].decode(), [c.decode() for c in r["answer_choices"]], r["is_correct"].tolist())
            for r in head] == [(e.inputs, list(e.answer_choices), list(e.is_correct)) for e in expected]
    counted[name] = int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
  assert counted == expected_counts
  assert counted["logical_deduction"] == 10 + 12 and counted["novel_concepts"] == 32


def test_rank_classification_preprocessor_on_tf_data():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ds = tf.data.Dataset.from_generator(
      lambda: iter([{"inputs": "q0", "targets": "b", "idx": 5, "answer_choices": ["a", "b", "c"],
                     "is_correct": [False, True, False]},
                    {"inputs": "q1", "targets": "x", "idx": 9, "answer_choices": [], "is_correct": []}]),
      output_signature={"inputs": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([], tf.string),
                        "idx": tf.TensorSpec([], tf.int64), "answer_choices": tf.TensorSpec([None], tf.string),
                        "is_correct": tf.TensorSpec([None], tf.bool)})
  rows = list(preprocessors.rank_classification(ds).as_numpy_iterator())
  assert [(r["inputs"], r["targets"], r["idx"].tolist(), bool(r["is_correct"]), float(r["weight"])) for r in rows] == [
      (b"q0", b"a", [5, 0], False, 1.0), (b"q0", b"b", [5, 1], True, 1.0), (b"q0", b"c", [5, 2], False, 1.0)]


def test_metric_rejects_mismatched_lengths():
  with pytest.raises(ValueError, match="2 targets but 1 scores"):
    preprocessors.rank_classification_metric([(0, 0, True, 1.0), (0, 1, False, 1.0)], [0.0])


def test_vocabulary_is_resolved_on_first_use(tmp_path, monkeypatch):
  from rospr_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top
  corpus = [f"line {i} of a tiny corpus about premises" for i in range(200)]
  model = vocabulary_lib.train_sentencepiece(corpus, tmp_path / "tiny.model", vocab_size=40)
  lazy = vocab.LazySentencePieceVocabulary()
  monkeypatch.setenv("ROSPR_VOCAB", str(model))
  assert lazy.sentencepiece_model_file == str(model) and lazy.vocab_size == 40
  assert lazy == vocab.LazySentencePieceVocabulary()  # equal features across tasks of a mixture
  explicit = vocab.LazySentencePieceVocabulary(str(model))
  monkeypatch.setenv("ROSPR_VOCAB", str(tmp_path / "other.model"))
  assert explicit.sentencepiece_model_file == str(model)


def test_vocabulary_path_from_gin(tmp_path, monkeypatch):
  import gin  # pylint: disable=g-import-not-at-top
  from rospr_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top
  model = vocabulary_lib.train_sentencepiece([f"gin line {i} about a premise" for i in range(100)], tmp_path / "g.model", 30)
  monkeypatch.delenv("ROSPR_VOCAB", raising=False)
  gin.parse_config(f"rospr_tasks.vocab.vocabulary_path.path = '{model}'")
  try:
    assert vocab.LazySentencePieceVocabulary().sentencepiece_model_file == str(model)
  finally:
    gin.clear_config()

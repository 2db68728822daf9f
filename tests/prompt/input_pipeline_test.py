"""Batches: fixed shapes, truncation, epochs, seeded order, resuming at a position, JSONL reading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rospr_jax.prompt.input_pipeline import BatchIterator, Example, SourceExamples, read_jsonl


def _data(n=10):
  return SourceExamples(["x", "y"], [Example(i % 2, [10 + i] * (1 + i % 5), [20 + i, 1]) for i in range(n)])


def test_shapes_padding_and_truncation():
  data = SourceExamples(["x"], [Example(0, [5, 6, 7, 8, 9], [11, 12, 13, 14, 1]), Example(0, [5], [11, 1])])
  it = BatchIterator(data, batch_size=2, input_length=3, target_length=3, shuffle=False)
  batch = next(it)
  assert batch["inputs"].dtype == batch["targets"].dtype == batch["source_ids"].dtype == np.int32
  np.testing.assert_array_equal(batch["inputs"], [[5, 6, 7], [5, 0, 0]])
  np.testing.assert_array_equal(batch["targets"], [[11, 12, 1], [11, 1, 0]])  # cut targets keep EOS
  assert it.truncated == {"inputs": 1, "targets": 1}


def test_each_epoch_is_a_permutation_and_order_depends_on_seed():
  data = _data(10)
  it = BatchIterator(data, batch_size=5, input_length=6, target_length=2, seed=1)
  epochs = [np.concatenate([next(it)["targets"][:, 0] for _ in range(2)]) for _ in range(3)]
  for epoch in epochs:
    assert sorted(epoch.tolist()) == list(range(20, 30))
  assert not np.array_equal(epochs[0], epochs[1])
  other = BatchIterator(data, batch_size=5, input_length=6, target_length=2, seed=2)
  assert not np.array_equal(np.concatenate([next(other)["targets"][:, 0] for _ in range(2)]), epochs[0])


def test_resuming_at_a_position_continues_the_same_stream():
  data = _data(7)  # batches straddle epochs: 7 examples, batch 3
  full = BatchIterator(data, batch_size=3, input_length=6, target_length=2, seed=5)
  expected = [next(full) for _ in range(9)]
  head = BatchIterator(data, batch_size=3, input_length=6, target_length=2, seed=5)
  for _ in range(4):
    next(head)
  resumed = BatchIterator(data, batch_size=3, input_length=6, target_length=2, seed=5, position=head.position)
  for want in expected[4:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  assert resumed.position == 9


def test_bad_examples_are_named():
  with pytest.raises(ValueError, match=r"Example 1 has source id 2; there are 2 sources"):
    SourceExamples(["a", "b"], [Example(0, [3], [4, 1]), Example(2, [3], [4, 1])])
  with pytest.raises(ValueError, match=r"Example 0 \(source 'a'\) has no target tokens"):
    SourceExamples(["a"], [Example(0, [3], [0, 0])])
  with pytest.raises(ValueError, match=r"Sources without training examples: \['b'\]"):
    SourceExamples(["a", "b"], [Example(0, [3], [4, 1])]).check_every_source_has_examples()


def test_read_jsonl(tmp_path, object_store):
  path = tmp_path / "ex.jsonl"
  lines = [{"source": "b", "inputs": [5, 6], "targets": [7, 1]},
           {"source": "a", "inputs": [8], "targets": [9, 1]},
           {"source": "b", "inputs": [10], "targets": [11, 1]}]
  path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
  data = read_jsonl(str(path))
  assert data.names == ["b", "a"]
  assert [(e.source_id, list(e.inputs), list(e.targets)) for e in data.examples] == [
      (0, [5, 6], [7, 1]), (1, [8], [9, 1]), (0, [10], [11, 1])]
  assert read_jsonl(str(path), sources=["a", "b"]).examples[0].source_id == 1
  with pytest.raises(ValueError, match=r"ex.jsonl:1: source 'b' is not among the configured sources"):
    read_jsonl(str(path), sources=["a"])
  # The same file at a URL (EXAMPLES_FILE='gs://...'): read from a local copy, errors naming the URL.
  object_store.pipe_file("gs://examples-bucket/ex.jsonl", path.read_bytes())
  at_url = read_jsonl("gs://examples-bucket/ex.jsonl")
  assert at_url.names == data.names and at_url.digest() == data.digest()
  with pytest.raises(ValueError, match=r"gs://examples-bucket/ex.jsonl:1: source 'b' is not among"):
    read_jsonl("gs://examples-bucket/ex.jsonl", sources=["a"])


@pytest.mark.parametrize("line,message", [
    ('{"source": "a", "inputs": [1]}', r"bad.jsonl:2: missing keys \['targets'\]"),
    ('{"source": "a", "inputs": "some text", "targets": [4, 1]}', r"bad.jsonl:2: inputs is text; pass a "
                                                                   r"SentencePiece vocabulary"),
    ('{"source": "a", "inputs": [3], "targets": [-4]}', r"bad.jsonl:2: targets must be a string or a list"),
    ("not json", r"bad.jsonl:2: not JSON"),
])
def test_read_jsonl_errors_name_the_line(tmp_path, line, message):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"source": "a", "inputs": [3], "targets": [4, 1]}\n' + line + "\n")
  with pytest.raises(ValueError, match=message):
    read_jsonl(str(path))


def test_token_ids_outside_the_backbone_vocabulary_are_named():
  """Out-of-range ids would embed as NaN (JAX's gather fills), so they are refused before training."""
  data = SourceExamples(["a", "b"], [Example(0, [5, 6], [7, 1]), Example(1, [3, 600, 601], [4, 1])])
  data.check_token_ids(602)
  with pytest.raises(ValueError, match=r"Example 1 \(source 'b'\) has inputs token ids \[600, 601\] outside "
                                       r"the backbone's vocabulary of 600"):
    data.check_token_ids(600)
  with pytest.raises(ValueError, match=r"Example 0 \(source 'a'\) has targets token ids \[7\]"):
    SourceExamples(["a"], [Example(0, [1], [7, 1])]).check_token_ids(7)

"""SeqIO tasks as prompt-tuning sources: one source per task, mixtures expanded, T0's EOS rules kept."""

from __future__ import annotations

import pytest

seqio = pytest.importorskip("seqio")

from rospr_tasks.seqio_input import seqio_sources  # noqa: E402

TEXTS = {"train": [("abc", "x"), ("de", "yz"), ("f", "w")]}


def _register(name, texts):
  import tensorflow as tf

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    inputs, targets = zip(*texts[split])
    return tf.data.Dataset.from_tensor_slices({"inputs": list(inputs), "targets": list(targets)})

  vocabulary = seqio.ByteVocabulary()  # pad 0, EOS 1, UNK 2, byte b -> b + 3: T5's special ids
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset_fn, splits=list(texts)),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={"inputs": seqio.Feature(vocabulary, add_eos=False),
                       "targets": seqio.Feature(vocabulary, add_eos=True)})


def test_tasks_and_mixtures_become_sources():
  _register("rospr_test_pt_one", TEXTS)
  _register("rospr_test_pt_two", {"train": [("q", "r")]})
  seqio.MixtureRegistry.remove("rospr_test_pt_mix")
  seqio.MixtureRegistry.add("rospr_test_pt_mix", ["rospr_test_pt_one", "rospr_test_pt_two"], default_rate=1.0)
  data = seqio_sources(["rospr_test_pt_two", "rospr_test_pt_mix"], shuffle=False, registry_module=None)
  assert data.names == ["rospr_test_pt_two", "rospr_test_pt_one"]  # mixture expanded, duplicate dropped
  as_bytes = lambda s: [b + 3 for b in s.encode()]
  got = [(e.source_id, list(e.inputs), list(e.targets)) for e in data.examples]
  assert got == [(0, as_bytes("q"), as_bytes("r") + [1])] + [
      (1, as_bytes(x), as_bytes(y) + [1]) for x, y in TEXTS["train"]]
  two = seqio_sources(["rospr_test_pt_one"], shuffle=False, max_examples_per_source=2, registry_module=None)
  assert len(two.examples) == 2
  with pytest.raises(ValueError, match="No SeqIO task or mixture named 'rospr_test_pt_absent'"):
    seqio_sources(["rospr_test_pt_absent"], registry_module=None)

"""TFDS as a record source: each mapped dataset's records equal the Hugging Face form of the same
examples (built here by hand, per dataset, from the TFDS feature names), render the same prompts, and
no code path can reach the network (a dataset absent locally fails at once, naming where to put it).

TFDS examples come from `tfds.testing.mock_data` (generated offline from each builder's feature spec);
one test prepares a real TFDS dataset on disk (winogrande) and reads it without mocks."""

from __future__ import annotations

import json
import socket
import time

import pytest

from rospr_jax.data import catalog
from rospr_jax.data import prompted
from rospr_jax.data import records
from rospr_jax.data import templates as templates_lib
from rospr_jax.data import tfds_records

tfds = pytest.importorskip("tensorflow_datasets")


def _s(value) -> str:
  assert isinstance(value, bytes), value
  return value.decode("utf-8")


def _i(value) -> int:
  return int(value)


def _strs(values) -> list[str]:
  return [_s(v) for v in values]


def _super_glue(*text):
  return lambda ex: {**{k: _s(ex[k]) for k in text}, **{k: _i(ex[k]) for k in ex if k not in text}}


# The HF record of one TFDS example (`tfds.as_numpy` values), written out per dataset from the TFDS
# builder's feature spec and the HF dataset script's, independently of tfds_records.FIELD_MAPS.
HF_FORM = {
    ("super_glue", "rte"): lambda ex: {"premise": _s(ex["premise"]), "hypothesis": _s(ex["hypothesis"]),
                                       "idx": _i(ex["idx"]), "label": _i(ex["label"])},
    ("super_glue", "cb"): lambda ex: {"premise": _s(ex["premise"]), "hypothesis": _s(ex["hypothesis"]),
                                      "idx": _i(ex["idx"]), "label": _i(ex["label"])},
    ("super_glue", "copa"): lambda ex: {"premise": _s(ex["premise"]), "choice1": _s(ex["choice1"]),
                                        "choice2": _s(ex["choice2"]), "question": _s(ex["question"]),
                                        "idx": _i(ex["idx"]), "label": _i(ex["label"])},
    ("super_glue", "wsc.fixed"): lambda ex: {"text": _s(ex["text"]), "span1_index": _i(ex["span1_index"]),
                                             "span2_index": _i(ex["span2_index"]),
                                             "span1_text": _s(ex["span1_text"]),
                                             "span2_text": _s(ex["span2_text"]), "idx": _i(ex["idx"]),
                                             "label": _i(ex["label"])},
    ("super_glue", "wic"): lambda ex: {"word": _s(ex["word"]), "sentence1": _s(ex["sentence1"]),
                                       "sentence2": _s(ex["sentence2"]), "start1": _i(ex["start1"]),
                                       "start2": _i(ex["start2"]), "end1": _i(ex["end1"]), "end2": _i(ex["end2"]),
                                       "idx": _i(ex["idx"]), "label": _i(ex["label"])},
    # HF anli: premise <- TFDS context; label 0/1/2 = e/n/c in both; HF's `reason` is not in TFDS.
    ("anli", None): lambda ex: {"uid": _s(ex["uid"]), "premise": _s(ex["context"]),
                                "hypothesis": _s(ex["hypothesis"]), "label": _i(ex["label"])},
    # HF hellaswag: ctx <- TFDS context, label a string; ind, ctx_a, ctx_b, split are not in TFDS.
    ("hellaswag", None): lambda ex: {"activity_label": _s(ex["activity_label"]), "ctx": _s(ex["context"]),
                                     "endings": _strs(ex["endings"]), "source_id": _s(ex["source_id"]),
                                     "split_type": _s(ex["split_type"]), "label": str(_i(ex["label"]))},
    # HF winogrande: answer "1" / "2" <- TFDS ClassLabel(['1', '2']) index.
    ("winogrande", "winogrande_xl"): lambda ex: {"sentence": _s(ex["sentence"]), "option1": _s(ex["option1"]),
                                                 "option2": _s(ex["option2"]),
                                                 "answer": {0: "1", 1: "2"}[_i(ex["label"])]},
    ("glue", "mrpc"): lambda ex: {"sentence1": _s(ex["sentence1"]), "sentence2": _s(ex["sentence2"]),
                                  "label": _i(ex["label"]), "idx": _i(ex["idx"])},
    ("glue", "qqp"): lambda ex: {"question1": _s(ex["question1"]), "question2": _s(ex["question2"]),
                                 "label": _i(ex["label"]), "idx": _i(ex["idx"])},
    ("paws", "labeled_final"): lambda ex: {"sentence1": _s(ex["sentence1"]), "sentence2": _s(ex["sentence2"]),
                                           "label": _i(ex["label"])},
    ("cos_e", "v1.11"): lambda ex: {"id": _s(ex["id"]), "question": _s(ex["question"]),
                                    "choices": _strs(ex["choices"]), "answer": _s(ex["answer"]),
                                    "abstractive_explanation": _s(ex["abstractive_explanation"]),
                                    "extractive_explanation": _s(ex["extractive_explanation"])},
    ("cosmos_qa", None): lambda ex: {"id": _s(ex["id"]), "context": _s(ex["context"]),
                                     "question": _s(ex["question"]),
                                     **{f"answer{k}": _s(ex[f"answer{k}"]) for k in range(4)},
                                     "label": _i(ex["label"])},
    ("qasc", None): lambda ex: {"id": _s(ex["id"]), "question": _s(ex["question"]),
                                "choices": {"text": _strs(ex["choices"]["text"]),
                                            "label": _strs(ex["choices"]["label"])},
                                "answerKey": _s(ex["answerKey"]), "fact1": _s(ex["fact1"]),
                                "fact2": _s(ex["fact2"]), "combinedfact": _s(ex["combinedfact"]),
                                "formatted_question": _s(ex["formatted_question"])},
    ("imdb", None): lambda ex: {"text": _s(ex["text"]), "label": _i(ex["label"])},
    ("samsum", None): lambda ex: {"id": _s(ex["id"]), "dialogue": _s(ex["dialogue"]),
                                  "summary": _s(ex["summary"])},
    ("trec", None): lambda ex: {"label-coarse": _i(ex["label-coarse"]), "label-fine": _i(ex["label-fine"]),
                                "text": _s(ex["text"])},
}

# (catalog spec, task split) per mapped dataset: the split the test reads.
SPECS = {(s.name, s.subset, s.task_suffix): s for s in catalog.HELD_OUT_DATASETS + catalog.T0_TRAIN_DATASETS}
CASES = [(("anli", None), "_r1", "validation"), (("anli", None), "_r2", "train"), (("anli", None), "_r3", "test")]
CASES += [((m.dataset, m.subset), "", "validation" if (m.dataset, m.subset, "") in
           {(s.name, s.subset, "") for s in catalog.HELD_OUT_DATASETS} else "train")
          for m in tfds_records.FIELD_MAPS if m.dataset != "anli"]
NUM_EXAMPLES = 3


def test_every_map_has_a_hand_written_expectation_and_a_catalog_dataset():
  assert {(m.dataset, m.subset) for m in tfds_records.FIELD_MAPS} == set(HF_FORM)
  assert {key for key, _, _ in CASES} == set(HF_FORM)
  for (name, subset), suffix, _ in CASES:
    assert (name, subset, suffix) in SPECS


def _builder_version(name: str) -> str:
  with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
    return str(tfds.builder(name).version)


def _prepare_metadata(root, name: str, split: str) -> None:
  """What a prepared dataset has that tfds_records.locate looks at: <name>/<version>/dataset_info.json."""
  folder = root / name / _builder_version(name)
  folder.mkdir(parents=True, exist_ok=True)
  info = folder / "dataset_info.json"
  splits = json.loads(info.read_text())["splits"] if info.exists() else []
  splits.append({"name": split, "shardLengths": [str(NUM_EXAMPLES)]})
  info.write_text(json.dumps({"name": name, "splits": splits}))


def _tfds_examples(name: str, split: str) -> list[dict]:
  """The raw mock TFDS examples (numpy values), read straight from TFDS."""
  builder = tfds.builder(name)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return list(tfds.as_numpy(ds))


def _same_types(a, b) -> bool:
  if type(a) is not type(b):
    return False
  if isinstance(a, dict):
    return a.keys() == b.keys() and all(_same_types(a[k], b[k]) for k in a)
  if isinstance(a, list):
    return len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b))
  return True


@pytest.fixture(scope="module")
def templates_by_dataset(templates_dir):
  return {key: templates_lib.sorted_templates(templates_lib.load_dataset_templates(templates_dir, *key))
          for key in HF_FORM}


@pytest.mark.parametrize("key,suffix,split", CASES, ids=[f"{k[0]}/{k[1]}{s}:{sp}" for k, s, sp in CASES])
def test_records_and_prompts_equal_the_hugging_face_form(key, suffix, split, templates_by_dataset, tmp_path,
                                                         monkeypatch):
  spec = SPECS[(key[0], key[1], suffix)]
  fmap = tfds_records.field_map(*key)
  hf_split = spec.source_split(split)
  tfds_name, tfds_split = fmap.tfds_split(hf_split)
  tfds_root, empty, hf_root = tmp_path / "tfds", tmp_path / "empty", tmp_path / "hf"
  _prepare_metadata(tfds_root, tfds_name, tfds_split)
  monkeypatch.setenv("ROSPR_TFDS_DIR", str(tfds_root))
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)

  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, max_value=3, policy=tfds.testing.MockPolicy.USE_CODE):
    loc = records.locate(spec.name, spec.subset, hf_split, empty)
    assert loc.kind == "tfds" and loc.path == tfds_root / tfds_name / _builder_version(tfds_name)
    got = list(records.iter_records(spec.name, spec.subset, hf_split, empty))
    expected = [HF_FORM[key](ex) for ex in _tfds_examples(tfds_name, tfds_split)]
    assert len(got) == NUM_EXAMPLES
    assert got == expected
    assert all(_same_types(g, e) for g, e in zip(got, expected))
    assert records.count_split(spec.name, spec.subset, hf_split, empty).examples == NUM_EXAMPLES

    # The same examples in HF form, as a JSON-lines file, render the same prompts.
    path = hf_root / spec.key / f"{hf_split}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in expected))
    absent = set(fmap.absent)
    readable = [t for t in templates_by_dataset[key] if not t.required_fields() & absent]
    assert readable, key
    for template in readable:
      via_tfds = list(templates_lib.render_all(template, got, templates_lib.RenderReport()))
      via_hf = list(templates_lib.render_all(template, expected, templates_lib.RenderReport()))
      assert via_tfds == via_hf, template.where
    template = readable[0]
    from_tfds = prompted.PromptsourceTask(spec, template, data_root=empty)
    from_hf = prompted.PromptsourceTask(spec, template, data_root=hf_root)
    assert list(from_tfds.examples(split)) == list(from_hf.examples(split))
    assert from_tfds.report.summary() == from_hf.report.summary()

    # A template reading a field TFDS lacks fails with a message naming the field.
    for template in templates_by_dataset[key]:
      if template.required_fields() & absent:
        report = templates_lib.RenderReport()
        assert list(templates_lib.render_all(template, got, report)) == []
        assert report.failed[template.where] == NUM_EXAMPLES
        assert "that the template reads are missing" in report.messages[template.where][0]


def test_what_tfds_lacks_is_only_what_the_table_says(templates_by_dataset):
  """The templates a TFDS record cannot render are those reading hellaswag's ctx_a / ctx_b."""
  unreadable = {(k, t.name) for k, ts in templates_by_dataset.items()
                for t in ts if t.required_fields() & set(tfds_records.field_map(*k).absent)}
  assert unreadable and {k for k, _ in unreadable} == {("hellaswag", None)}
  assert tfds_records.field_map("story_cloze", "2016") is None  # its 4 sentences are joined in TFDS


def test_test_split_label_conventions():
  """TFDS writes -1 for a missing label; HF writes '' where its label is a string."""
  wino = tfds_records.field_map("winogrande", "winogrande_xl")
  assert wino.to_hf({"sentence": "s", "option1": "a", "option2": "b", "label": -1})["answer"] == ""
  assert wino.to_hf({"sentence": "s", "option1": "a", "option2": "b", "label": 1})["answer"] == "2"
  hella = tfds_records.field_map("hellaswag", None)
  ex = {"context": "c", "endings": ["e"], "activity_label": "a", "label": -1, "split_type": "zeroshot",
        "source_id": "wikihow~1"}
  assert hella.to_hf(ex)["label"] == ""
  rte = tfds_records.field_map("super_glue", "rte")
  assert rte.to_hf({"premise": "p", "hypothesis": "h", "idx": 3, "label": -1})["label"] == -1
  assert wino.tfds_split("train") == ("winogrande", "train_xl")
  assert tfds_records.field_map("anli", None).tfds_split("dev_r2") == ("anli/r2", "validation")


@pytest.fixture
def no_network(monkeypatch):
  """Every way out of the machine raises, and is recorded."""
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network access attempted in a test")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket.socket, "connect_ex", refuse)
  monkeypatch.setattr(socket, "getaddrinfo", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)
  return attempts


def test_absent_dataset_fails_at_once_without_the_network(tmp_path, monkeypatch, no_network):
  monkeypatch.setenv("ROSPR_TFDS_DIR", str(tmp_path / "tfds"))
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  start = time.time()
  for name, subset, split in (("super_glue", "rte", "validation"), ("anli", None, "dev_r3"),
                              ("hellaswag", None, "validation")):
    with pytest.raises(records.DatasetNotFoundError) as info:
      records.iter_records(name, subset, split, tmp_path / "data")
    assert records.count_split(name, subset, split, tmp_path / "data") is None
    where = tfds_records.expected_folder(name, subset, split)
    assert where and str(tmp_path / "tfds") in where and where in str(info.value)
  # A dataset folder without the wanted split (its dataset_info.json lists others) is absent too.
  _prepare_metadata(tmp_path / "tfds", "super_glue/cb", "train")
  with pytest.raises(records.DatasetNotFoundError, match=r"super_glue/cb/<version>/ \(TFDS super_glue/cb, split 'validation'\)"):
    records.iter_records("super_glue", "cb", "validation", tmp_path / "data")
  # Metadata without its record files: TFDS is reached, and fails without trying the network.
  _prepare_metadata(tmp_path / "tfds", "super_glue/wic", "validation")
  with pytest.raises(Exception) as info:  # pylint: disable=broad-except
    list(records.iter_records("super_glue", "wic", "validation", tmp_path / "data"))
  assert not isinstance(info.value, records.DatasetNotFoundError)
  assert time.time() - start < 10
  assert no_network == []


def test_a_real_prepared_dataset_reads_without_mocks(tmp_path, monkeypatch, no_network, templates_by_dataset):
  """winogrande prepared by TFDS itself (its example generator fed in memory), read from disk."""
  rows = [{"sentence": "The trophy didn't fit in the suitcase because _ was too big.", "option1": "trophy",
           "option2": "suitcase", "label": "1"},
          {"sentence": "Ann asked Mary what time the library closes, because _ had forgotten.",
           "option1": "Ann", "option2": "Mary", "label": "2"}]
  with pytest.MonkeyPatch.context() as patch:  # the reader must not depend on the patched generator
    patch.setattr(tfds.builder_cls("winogrande"), "_split_generators",
                  lambda self, dl_manager: {"validation": ((str(i), r) for i, r in enumerate(rows))})
    builder = tfds.builder("winogrande", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  monkeypatch.setenv("ROSPR_TFDS_DIR", str(tmp_path / "tfds"))
  got = list(records.iter_records("winogrande", "winogrande_xl", "validation", tmp_path / "data"))
  hf = [{"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "answer": r["label"]}
        for r in rows]
  assert got == hf
  assert records.count_split("winogrande", "winogrande_xl", "validation", tmp_path / "data").examples == 2
  for template in templates_by_dataset[("winogrande", "winogrande_xl")]:
    assert (list(templates_lib.render_all(template, got, templates_lib.RenderReport()))
            == list(templates_lib.render_all(template, hf, templates_lib.RenderReport())))
  assert no_network == []

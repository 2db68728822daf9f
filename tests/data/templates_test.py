"""Template reading and rendering, compared with promptsource 0.2.3's own `Template.apply`."""

from __future__ import annotations

import random

import pytest

from rospr_jax.data import catalog
from rospr_jax.data import checks
from rospr_jax.data import templates

HELD_OUT_ORIGINAL_TASK_COUNTS = {  # docs/design.md, "Evaluation protocol"
    "super_glue/rte": 10, "super_glue/cb": 15, "anli": 15, "super_glue/copa": 12, "hellaswag": 4,
    "story_cloze/2016": 5, "winogrande/winogrande_xl": 5, "super_glue/wsc.fixed": 10, "super_glue/wic": 10,
}


def _unique_specs(specs):
  seen = {}
  for spec in specs:
    seen.setdefault(spec.key, spec)
  return list(seen.values())


def _compare(ours, reference, records, seed=1234):
  """Renders every record with both; returns how many (template, record) pairs gave output."""
  produced = 0
  for record in records:
    record = templates.remove_hyphens(record)
    random.seed(seed)
    expected = reference.apply(record)
    expected_choices = reference.get_answer_choices_list(record)
    got, got_choices = ours.apply_with_choices(record, rng=random.Random(seed))
    assert got == expected, (ours.where, record)
    assert got_choices == expected_choices, ours.where
    produced += len(got) == 2 and bool(got[0]) and bool(got[1])
  return produced


def test_held_out_templates_equal_promptsource(templates_dir, promptsource_reference, example_records):
  """All 95 templates of the 9 held-out template files; the 86 `original_task` ones are the targets."""
  compared = original = 0
  for spec in _unique_specs(catalog.HELD_OUT_DATASETS):
    ours = templates.load_dataset_templates(templates_dir, spec.name, spec.subset)
    reference = promptsource_reference.DatasetTemplates(spec.name, spec.subset)
    assert sorted(ours) == reference.all_template_names, spec.key
    targets = templates.original_task_templates(ours)
    assert len(targets) == HELD_OUT_ORIGINAL_TASK_COUNTS[spec.key], spec.key
    assert {t.name for t in targets} == {n for n in ours if reference[n].metadata.original_task}
    for name, template in ours.items():
      assert template.fixed_answer_choices_list() == reference[name].get_fixed_answer_choices_list()
      assert _compare(template, reference[name], example_records[spec.key]) > 0, template.where
      compared += 1
    original += len(targets)
  assert (compared, original) == (95, 86)  # 116 target tasks: ANLI's 15 count once per round.


def test_t0_source_templates_equal_promptsource(templates_dir, promptsource_reference, example_records):
  total = 0
  for spec in catalog.T0_TRAIN_DATASETS:
    ours = templates.load_dataset_templates(templates_dir, spec.name, spec.subset)
    reference = promptsource_reference.DatasetTemplates(spec.name, spec.subset)
    assert sorted(ours) == reference.all_template_names, spec.key
    for name, template in ours.items():
      assert _compare(template, reference[name], example_records[spec.key]) > 0, template.where
      total += 1
  assert total == 313 and len(catalog.T0_TRAIN_DATASETS) == 38


def test_every_template_reads_only_fields_the_records_have(templates_dir, example_records):
  # StrictUndefined: a nested field missing from a hand-written record would raise here.
  for spec in _unique_specs(catalog.T0_TRAIN_DATASETS + catalog.HELD_OUT_DATASETS):
    for template in templates.load_dataset_templates(templates_dir, spec.name, spec.subset).values():
      for record in example_records[spec.key]:
        record = templates.remove_hyphens(record)
        if "trec" == spec.name and "fine_grained" in template.name:
          continue  # these promptsource templates index answer choices with labels of other classes
        template.apply(record, strict=True, rng=random.Random(0))


def test_truncation_pipes_and_highlight_equal_promptsource(templates_dir, promptsource_reference, example_records):
  long_text = ("word ||| " * 600).strip()  # 5399 characters, with the separator inside a field
  cases = [("imdb", None, {"text": long_text, "label": 1}),
           ("super_glue", "rte", dict(example_records["super_glue/rte"][0], premise=long_text))]
  for dataset, subset, record in cases:
    reference = promptsource_reference.DatasetTemplates(dataset, subset)
    for name, template in templates.load_dataset_templates(templates_dir, dataset, subset).items():
      for truncate in (True, False):
        assert template.apply(record, truncate=truncate) == reference[name].apply(record, truncate=truncate)
      assert template.apply(record, highlight_variables=True) == reference[name].apply(record, highlight_variables=True)
  rendered = templates.load_dataset_templates(templates_dir, "imdb")["Movie Expressed Sentiment"].apply(cases[0][2])
  assert "|||" in rendered[0] and "..." in rendered[0] and len(rendered[0]) < len(long_text)


def test_choice_filter_uses_the_given_rng(templates_dir, example_records):
  template = templates.load_dataset_templates(templates_dir, "adversarial_qa", "dbidaf")["answer_the_following_q"]
  record = dict(example_records["adversarial_qa/dbidaf"][0],
                answers={"text": [f"answer {i}" for i in range(20)], "answer_start": list(range(20))})
  targets = {template.apply(record, rng=random.Random(s))[1] for s in range(30)}
  assert len(targets) > 5  # `choice` draws
  assert template.apply(record, rng=random.Random(7)) == template.apply(record, rng=random.Random(7))
  random.seed(7)
  expected = random.Random(7).choice(record["answers"]["text"])
  assert template.apply(record, rng=random.Random(7))[1] == expected


def test_render_all_counts_drops_and_failures(templates_dir, example_records):
  copa = templates.load_dataset_templates(templates_dir, "super_glue", "copa")
  template = copa["…What could happen next, C1 or C2?"]  # only for question == "effect"
  records = example_records["super_glue/copa"] + [{"premise": "x", "choice1": "a", "choice2": "b", "label": 0}]
  report = templates.RenderReport()
  out = list(templates.render_all(template, records, report))
  assert [i for i, _ in out] == [1]  # record 0 is a "cause" question: the template prints nothing
  assert report.rendered[template.where] == 1 and report.dropped[template.where] == 1
  assert report.failed[template.where] == 1 and report.num_failed == 1
  assert "['question']" in report.messages[template.where][0] and "example 2" in report.messages[template.where][0]
  assert "1 rendered, 1 dropped (empty), 1 failed" in report.summary()
  assert out[0][1].answer_choices == tuple(records[1][k] for k in ("choice1", "choice2"))


def test_missing_field_error_names_the_field(templates_dir, example_records):
  template = templates.load_dataset_templates(templates_dir, "super_glue", "rte")["GPT-3 style"]
  record = dict(example_records["super_glue/rte"][0])
  del record["hypothesis"]
  with pytest.raises(checks.DataError, match=r"super_glue/rte:'GPT-3 style' row 3: field\(s\) \['hypothesis'\] "
                     "that the template reads are missing") as raised:
    templates.render(template, record, where=" row 3")
  assert raised.value.field == "hypothesis"
  with pytest.raises(templates.TemplateError, match="reserved field 'answer_choices'"):
    template.apply(dict(record, hypothesis="h", answer_choices=["x"]))
  with pytest.raises(templates.TemplateError, match="must be a mapping"):
    templates.render(template, ["not", "a", "dict"])


def test_labels_that_index_no_answer_choice_are_data_errors(templates_dir, example_records):
  rte = templates.load_dataset_templates(templates_dir, "super_glue", "rte")["GPT-3 style"]
  record = dict(example_records["super_glue/rte"][0])
  for label in (2, 5, "entailment", "1", 1.0):
    with pytest.raises(checks.DataError, match=f"field 'label' is {label!r}, not an index into the "
                                               r"template's 2 answer choices \(True \| False\)"):
      templates.render(rte, dict(record, label=label))
  with pytest.raises(checks.DataError, match="field 'label' is -1, the Hugging Face mark of an unlabeled"):
    templates.render(rte, dict(record, label=-1))
  assert rte.apply(dict(record, label=5))[1] == ""  # what promptsource prints: an empty target
  assert checks.unlabeled_marks(rte.jinja) == {"label"}
  # An in-range negative index is kept (some templates print `answer_choices[-1]`).
  (last,) = templates.parse_templates_yaml(
      "dataset: d\ntemplates:\n  a: !Template\n    name: last\n    answer_choices: x ||| y\n"
      "    jinja: '{{ q }} ||| {{ answer_choices[-1] }}'\n").values()
  assert templates.render(last, {"q": "?"}).targets == "y"


def test_jinja_runtime_error_is_a_template_error():
  (template,) = templates.parse_templates_yaml(
      "templates:\n  a: !Template\n    name: t\n    jinja: '{{ x / 2 }} ||| y'\n", source="mem.yaml").values()
  with pytest.raises(templates.TemplateError, match=r"rendering failed: TypeError"):
    templates.render(template, {"x": "text"})


def test_parse_templates_yaml_builds_plain_objects():
  text = """dataset: demo
subset: sub
templates:
  id-1: !Template
    answer_choices: No ||| Yes
    id: id-1
    jinja: 'Is {{ a }} true? ||| {{ answer_choices[label] }}'
    metadata: !TemplateMetadata
      choices_in_prompt: false
      metrics:
      - Accuracy
      original_task: true
    name: first
    reference: me
"""
  (template,) = templates.parse_templates_yaml(text, source="demo.yaml").values()
  assert (template.dataset, template.subset, template.name, template.id) == ("demo", "sub", "first", "id-1")
  assert template.metadata == templates.TemplateMetadata(True, False, ("Accuracy",))
  assert template.fixed_answer_choices_list() == ["No", "Yes"]
  assert template.required_fields() == {"a", "label"}
  assert template.apply({"a": "sky", "label": 1}) == ["Is sky true?", "Yes"]


@pytest.mark.parametrize("text,message", [
    ("templates: [unclosed", r"demo\.yaml: malformed YAML"),
    ("templates:\n  x: !Template\n    jinja: 'a ||| b'\n", r"demo\.yaml: template x: missing or non-string 'name'"),
    ("templates:\n  x: !Template\n    name: n\n    jinja: '{{ a ||| b'\n", r"template x \('n'\): jinja syntax error"),
    ("templates:\n  x: {name: n, jinja: j}\n", r"template x: expected a !Template mapping"),
    ("dataset: d\n", r"expected a mapping with a 'templates' mapping"),
    ("templates:\n  x: !Template\n    name: n\n    jinja: j\n  y: !Template\n    name: n\n    jinja: k\n",
     r"two templates are named 'n'"),
])
def test_malformed_yaml_errors(text, message):
  with pytest.raises(templates.TemplateError, match=message):
    templates.parse_templates_yaml(text, source="demo.yaml")


def test_missing_templates_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no promptsource templates for nope/sub: .*nope/sub/templates.yaml"):
    templates.load_dataset_templates(tmp_path, "nope", "sub")


def test_all_279_files_parse(templates_dir):
  keys = templates.list_template_datasets(templates_dir)
  assert len(keys) == 279
  count = sum(len(templates.load_dataset_templates(templates_dir, d, s)) for d, s in keys)
  assert count == 2085
  assert ("Zaid/coqa_expanded", None) in keys and ("super_glue", "wsc.fixed") in keys

"""A selection rule is one registry entry: a throwaway rule added through `selection.register` alone
appears in `rospr retrieve`'s choices, in the evaluation's methods and report, and in its resume
check; the defaults are typed once (SelectionConfig) and the gin file agrees with them."""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np
import pytest

from rospr_jax import config_fields
from rospr_jax.commands import evaluate as evaluate_command
from rospr_jax.commands import retrieve as retrieve_command
from rospr_jax.eval import report
from rospr_jax.pipeline import evaluate
from rospr_jax.retrieval import selection


@pytest.fixture
def last_rule():
  """Registers LAST: the least frequent candidate (reads top_k, to show up in the resume check)."""

  def apply(freqs, config, predictions, num_choices):
    del predictions, num_choices
    last = int(freqs.source_ids[min(config.top_k, len(freqs.source_ids)) - 1])
    return dataclasses.replace(selection.rospr(freqs), rule="last", chosen=(last,),
                               params={"top_k": config.top_k})

  rule = selection.register(selection.Rule("last", "LAST", False, ("top_k",), apply))
  yield rule
  del selection.RULES["last"]


def test_a_registered_rule_reaches_the_cli_the_methods_and_the_report(last_rule):
  parser = retrieve_command.build_parser()
  (rule_action,) = [a for a in parser._actions if a.dest == "rule"]  # pylint: disable=protected-access
  assert "last" in rule_action.choices and "last (LAST)" in rule_action.help
  assert evaluate.all_methods()[-1] == "LAST" and "LAST" not in evaluate.METHODS
  neighbors = np.array([[0, 1, 2], [0, 1, 0]])
  chosen = selection.select("last", neighbors, np.ones((2, 3)), top_k=3)
  assert chosen.rule == "last" and chosen.chosen == (2,)  # freq 0: 3, 1: 2, 2: 1
  records = [{"method": m, "dataset": "d", "template": "t", "target": "d_t", "accuracy": a, "examples": 4}
             for m, a in (("T0", 0.25), ("LAST", 0.5))]
  assert "| LAST |" in report.markdown_table(report.summarize(records))


def test_a_registered_rule_is_evaluated_and_its_settings_guard_the_resume(last_rule, tmp_path, monkeypatch):
  seen = {}

  def fake_check(output_dir, settings):
    seen.update(settings)
    raise ValueError("stop here")

  monkeypatch.setattr(evaluate_command, "_check_resumable", fake_check)
  one_device = jax.devices()[:1]  # no mesh for the fake backbone (its Partitioner sees one device)
  monkeypatch.setattr("jax.devices", lambda *args, **kwargs: one_device)

  class FakeEmbedder:
    dim, fingerprint = 8, "f" * 16
    config = type("C", (), {"vocab_size": 10_000})

  class FakeBackbone:
    config = type("C", (), {"attention_impl": "einsum", "emb_dim": 8})
    params, model, fingerprint, vocabulary, dtype = {}, None, "b" * 16, "/v", "float32"
    description = {"checkpoint": "/ckpt"}

    def tokenizer(self):
      return type("T", (), {"check_fits": lambda *a: None})()

  monkeypatch.setattr("rospr_jax.library.embed.load_embedder", lambda *a, **k: FakeEmbedder())
  class FakeLibrary:
    retriever_fingerprint = FakeEmbedder.fingerprint  # Library.open checks it is the embedder's

    def check_prompts_fit(self, *args):
      pass

    def check_num_neighbors(self, *args):
      pass

  monkeypatch.setattr("rospr_jax.library.store.Library.open", classmethod(lambda cls, *a, **k: FakeLibrary()))
  (tmp_path / "library").mkdir()
  (tmp_path / "library" / "manifest.json").write_text("{}")
  monkeypatch.setattr(evaluate_command.targets_lib, "resolve_target_tasks", lambda *a: [])
  with pytest.raises(ValueError, match="stop here"):
    evaluate_command.run(backbone=FakeBackbone(), output_dir=str(tmp_path / "out"),
                         targets=evaluate_command.TargetConfig(["x"]), methods=["LAST"],
                         library=evaluate_command.LibraryConfig(str(tmp_path / "library"), "/r"),
                         selection=selection.SelectionConfig(top_k=4))
  assert seen["top_k"] == 4 and "num_prompts" not in seen and "eps" not in seen  # LAST reads top_k only
  with pytest.raises(ValueError, match=r"Unknown method 'NOPE'; known: \['RoSPr', .*'LAST'\]"):
    evaluate_command.run(backbone=FakeBackbone(), output_dir=str(tmp_path / "out"),
                         targets=evaluate_command.TargetConfig(["x"]), methods=["NOPE"])


def test_a_rule_cannot_take_an_existing_name_or_an_unknown_setting():
  with pytest.raises(ValueError, match="exists"):
    selection.register(selection.Rule("rospr", "Other", False, (), selection.RULES["rospr"].apply))
  with pytest.raises(ValueError, match=r"reads settings \['beam'\] that SelectionConfig lacks"):
    selection.register(selection.Rule("new", "NEW", False, ("beam",), selection.RULES["rospr"].apply))


def test_defaults_are_typed_once_and_the_gin_macros_agree():
  config = selection.SelectionConfig()
  text = open(os.path.join(os.path.dirname(__file__), "..", "..", "gin", "eval", "base.gin")).read()
  macros = {config_fields.macro(selection.SelectionConfig, f.name): getattr(config, f.name)
            for f in dataclasses.fields(config)}
  assert set(macros) == {"NUM_QUERIES", "NUM_NEIGHBORS", "NUM_PROMPTS", "TOP_K", "VAR_EPS", "RANDOM_SEED"}
  for macro, value in macros.items():
    (written,) = re.findall(rf"^{macro} = (\S+)$", text, re.MULTILINE)
    assert float(written) == value, macro
  args = retrieve_command.build_parser().parse_args(
      ["--library", "l", "--queries", "q", "--out", "o", "--random-retriever", "tiny", "--vocab", "v"])
  assert selection.SelectionConfig(**{f.name: getattr(args, f.name)
                                      for f in dataclasses.fields(config)}) == config
  with pytest.raises(ValueError, match=r"^top_k \(TOP_K\) must be an integer >= 1, not 0; eps \(VAR_EPS\) must be a "
                                       r"finite number > 0, not 0\.0\.$"):
    selection.SelectionConfig(top_k=0, eps=0.0)

"""Selection rules: RoSPr, INTER, VAR and INTER+VAR, and the Random reference row (docs/design.md,
"Retrieval rules").

Every rule is one `Rule` entry in `RULES` (at the end of this file): its name (`rospr retrieve
--rule`, `selection.json`), its label (the report's row, `rospr evaluate`'s METHODS), whether it
rank-classifies the queries with the backbone, and the `SelectionConfig` settings it reads. The CLI
choices, the report's methods and the evaluation's resume check are derived from it, so a new rule is
one `register(Rule(...))` here.

Pure NumPy. The input is, for Q target queries, the sources of their top-N library neighbours
(`neighbor_sources [Q, N]`) and the similarities of those neighbours (`similarities [Q, N]`). The
numbers the rules rank by (freq, VAR's variance, the Random draw) and the interpolation are
`rospr_jax.retrieval.scores`, whose names this module re-exports.

- freq(s): how often source s appears in `neighbor_sources`. Candidates are ordered by frequency,
  then by summed similarity (larger first), then by source id (smaller first), so every ordering is
  total and deterministic.
- RoSPr: the first candidate (argmax freq; ties: larger summed similarity).
- INTER: the first N' candidates, prompt = sum_s w_s P_s with w_s = freq(s) / sum freq.
- VAR: for each of the first K candidates, the predicted choice positions of the Q queries under its
  prompt give a histogram p_s over choice positions (normalized to sum 1); var_s is its variance over
  the choices and score_s = freq(s) / (var_s + eps). The candidate with the largest score is chosen
  (ties keep the frequency order).
- INTER+VAR: the first N' candidates by VAR score, weights proportional to the score.
- Random (a reference row, `Rule.reference`): one library prompt drawn uniformly from the S sources,
  whatever the neighbours; the generator is seeded by (`SelectionConfig.random_seed`, the target's
  name), so a target gets the same prompt in any run and in any order of targets. Not evaluated unless
  asked for. (The oracle, the best single prompt chosen with the target's labels, is no rule: it
  needs the labels and the scorer, so it is a method of `rospr_jax/pipeline/methods.py`, where each
  rule is a method too, named by its label.)

The rules that rank-classify the queries (VAR, INTER+VAR) take the predictions as a callable
(`PredictChoices`) that the caller makes from the backbone (`rospr_jax.eval.var`) and hands in:
retrieval never imports eval.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Callable, Sequence

import numpy as np

from rospr_jax.config_fields import NON_NEGATIVE, POSITIVE, check_fields, positive_number, setting
from rospr_jax.registry import Registry
from rospr_jax.retrieval import scores
# The numbers of the rules, re-exported: `selection.frequencies`, `selection.var_scores`, ...
from rospr_jax.retrieval.scores import (Frequencies, check_count as _check_count, frequencies, interpolate,
                                        random_source, var_scores)


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
  """The settings of retrieval and selection, with the paper's defaults (the one place they are set;
  eps and random_seed are `scores`' defaults, which its functions take too).

  Attributes:
    num_queries: Q unlabeled target inputs embedded as queries.
    num_neighbors: N library neighbours per query.
    num_prompts: N' prompts interpolated by INTER and INTER+VAR.
    top_k: K candidates that VAR rank-classifies the queries with.
    eps: eps of VAR's score_s = freq(s) / (var_s + eps).
    random_seed: seeds the Random reference row (with each target's name: `random_source`).
  """
  num_queries: int = setting("NUM_QUERIES", 32, POSITIVE)
  num_neighbors: int = setting("NUM_NEIGHBORS", 10, POSITIVE)
  num_prompts: int = setting("NUM_PROMPTS", 3, POSITIVE)
  top_k: int = setting("TOP_K", 10, POSITIVE)
  eps: float = setting("VAR_EPS", scores.DEFAULT_EPS, positive_number)
  random_seed: int = setting("RANDOM_SEED", scores.DEFAULT_RANDOM_SEED, NON_NEGATIVE)

  def __post_init__(self):
    check_fields(self)


DEFAULT_NUM_PROMPTS = SelectionConfig.num_prompts
DEFAULT_TOP_K = SelectionConfig.top_k
DEFAULT_EPS = SelectionConfig.eps
DEFAULT_RANDOM_SEED = SelectionConfig.random_seed

# predict_choices(prompt_ids [K]) -> K arrays [Q] of predicted choice positions.
PredictChoices = Callable[[Sequence[int]], Sequence[Sequence[int]]]


def _json_value(value: Any) -> Any:
  if value is None:
    return None
  return [v.item() if hasattr(v, "item") else v for v in value]


@dataclasses.dataclass(frozen=True)
class Selection:
  """The record of one selection, saved as JSON beside the interpolated prompt.

  Attributes:
    rule: one of RULES.
    candidates: [K] source ids the rule considered, in its ranking order.
    freqs: [K] freq(s) of each candidate.
    similarities: [K] summed neighbour similarity of each candidate.
    variances: [K] VAR variances (None for rospr / inter).
    scores: [K] the ranking score: freq for rospr / inter, freq / (var + eps) for var / inter_var.
    weights: [M] interpolation weights of the chosen prompts (sum 1).
    chosen: [M] chosen source ids (prompt rows), aligned with `weights`.
    num_queries: Q.
    num_neighbors: N.
    params: rule settings (num_prompts, top_k, eps) and anything the caller records (target, library).
    names: [K] source names of the candidates, when known.
  """

  rule: str
  candidates: tuple[int, ...]
  freqs: tuple[int, ...]
  similarities: tuple[float, ...]
  variances: tuple[float, ...] | None
  scores: tuple[float, ...]
  weights: tuple[float, ...]
  chosen: tuple[int, ...]
  num_queries: int
  num_neighbors: int
  params: dict = dataclasses.field(default_factory=dict)
  names: tuple[str, ...] | None = None

  def __post_init__(self):
    if self.rule not in RULES:
      raise ValueError(f"Unknown selection rule {self.rule!r}; known rules: {list(RULES)}.")
    k = len(self.candidates)
    for field in ("freqs", "similarities", "scores"):
      if len(getattr(self, field)) != k:
        raise ValueError(f"Selection.{field} has {len(getattr(self, field))} entries; "
                         f"candidates has {k}.")
    if self.variances is not None and len(self.variances) != k:
      raise ValueError(f"Selection.variances has {len(self.variances)} entries; candidates has {k}.")
    if self.names is not None and len(self.names) != k:
      raise ValueError(f"Selection.names has {len(self.names)} entries; candidates has {k}.")
    if len(self.weights) != len(self.chosen) or not self.chosen:
      raise ValueError(f"Selection.weights ({len(self.weights)}) and chosen ({len(self.chosen)}) "
                       "must be non-empty and of equal length.")

  def with_names(self, names_by_id: Sequence[str]) -> "Selection":
    """Returns a copy with `names` filled from a table indexed by source id."""
    return dataclasses.replace(self, names=tuple(names_by_id[i] for i in self.candidates))

  def to_dict(self) -> dict:
    return {
        "rule": self.rule,
        "candidates": _json_value(self.candidates),
        "freqs": _json_value(self.freqs),
        "similarities": _json_value(self.similarities),
        "variances": _json_value(self.variances),
        "scores": _json_value(self.scores),
        "weights": _json_value(self.weights),
        "chosen": _json_value(self.chosen),
        "num_queries": self.num_queries,
        "num_neighbors": self.num_neighbors,
        "params": dict(self.params),
        "names": None if self.names is None else list(self.names),
    }

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

  @classmethod
  def from_dict(cls, data: dict) -> "Selection":
    expected = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(expected - set(data))
    extra = sorted(set(data) - expected)
    if missing or extra:
      raise ValueError(f"Selection record: missing keys {missing}, unknown keys {extra}.")

    def tup(key, kind):
      return None if data[key] is None else tuple(kind(v) for v in data[key])

    return cls(
        rule=data["rule"],
        candidates=tup("candidates", int),
        freqs=tup("freqs", int),
        similarities=tup("similarities", float),
        variances=tup("variances", float),
        scores=tup("scores", float),
        weights=tup("weights", float),
        chosen=tup("chosen", int),
        num_queries=int(data["num_queries"]),
        num_neighbors=int(data["num_neighbors"]),
        params=dict(data["params"]),
        names=tup("names", str))

  @classmethod
  def from_json(cls, text: str) -> "Selection":
    return cls.from_dict(json.loads(text))


def _record_clamp(params: dict, setting: str, asked: int, available: int, rule: str) -> None:
  """A setting larger than what the neighbours offer (N' or K above the distinct sources retrieved)
  acts as `available`: recorded in the selection as `<setting>_used` and said in a warning, as Q is
  (a selection's `num_queries` is the number of queries actually drawn)."""
  if asked > available:
    params[f"{setting}_used"] = int(available)
    logging.getLogger(__name__).warning(
        "%s: %s = %d but the queries' neighbours come from %d sources; %d are used.", rule, setting, asked,
        available, available)


def _frequency_selection(rule: str, freqs: Frequencies, num_prompts: int, weights: np.ndarray,
                         params: dict | None = None) -> Selection:
  """A selection of the first `num_prompts` candidates in frequency order (scores = frequencies)."""
  params = dict(params or {})
  if "num_prompts" in params:
    _record_clamp(params, "num_prompts", num_prompts, len(freqs.source_ids), rule)
  return Selection(
      rule=rule,
      candidates=tuple(freqs.source_ids.tolist()),
      freqs=tuple(freqs.counts.tolist()),
      similarities=tuple(freqs.similarity.tolist()),
      variances=None,
      scores=tuple(float(c) for c in freqs.counts),
      weights=tuple(np.asarray(weights, np.float64).tolist()),
      chosen=tuple(freqs.source_ids[:num_prompts].tolist()),
      num_queries=freqs.num_queries,
      num_neighbors=freqs.num_neighbors,
      params=params)


def rospr(freqs: Frequencies) -> Selection:
  """RoSPr: the prompt of the most frequent source (ties: larger summed similarity)."""
  return _frequency_selection("rospr", freqs, 1, np.ones(1))


def inter(freqs: Frequencies, num_prompts: int = DEFAULT_NUM_PROMPTS) -> Selection:
  """INTER: the first `num_prompts` sources by frequency, weights freq(s) / sum freq."""
  _check_count("num_prompts", num_prompts)
  top = freqs.counts[:num_prompts].astype(np.float64)
  return _frequency_selection("inter", freqs, num_prompts, top / top.sum(),
                              {"num_prompts": int(num_prompts)})


def _var_ranked(freqs: Frequencies, predictions, num_choices, top_k: int, eps: float):
  """Scores the first `top_k` candidates; returns them re-ranked by VAR score."""
  _check_count("top_k", top_k)
  k = min(top_k, len(freqs.source_ids))
  preds = np.asarray(predictions)
  if preds.ndim != 2 or preds.shape[0] != k:
    raise ValueError(
        f"VAR needs predictions [K, Q] for the K = {k} first candidates "
        f"{freqs.source_ids[:k].tolist()}; got shape {preds.shape}.")
  if preds.shape[1] != freqs.num_queries:
    raise ValueError(f"predictions cover {preds.shape[1]} queries; the neighbours came from "
                     f"{freqs.num_queries} queries.")
  variances, scores = var_scores(freqs.counts[:k], preds, num_choices, eps=eps)
  # Stable sort on -score keeps the frequency order (freq, similarity, id) among equal scores.
  order = np.argsort(-scores, kind="stable")
  return order, variances, scores


def var(freqs: Frequencies, predictions, num_choices, top_k: int = DEFAULT_TOP_K,
        eps: float = DEFAULT_EPS) -> Selection:
  """VAR: of the first `top_k` candidates, the one with the largest freq / (var + eps).

  Args:
    freqs: the neighbour frequencies.
    predictions: [K, Q] predicted choice positions under the prompts of the first K = min(top_k,
      number of candidates) candidates, in candidate order.
    num_choices: [Q] answer choices per query.
    top_k: K.
    eps: see `var_scores`.
  """
  order, variances, scores = _var_ranked(freqs, predictions, num_choices, top_k, eps)
  return _var_selection("var", freqs, order, variances, scores, 1, top_k, eps)


def inter_var(freqs: Frequencies, predictions, num_choices, num_prompts: int = DEFAULT_NUM_PROMPTS,
              top_k: int = DEFAULT_TOP_K, eps: float = DEFAULT_EPS) -> Selection:
  """INTER+VAR: the first `num_prompts` candidates by VAR score, weights proportional to it."""
  _check_count("num_prompts", num_prompts)
  order, variances, scores = _var_ranked(freqs, predictions, num_choices, top_k, eps)
  return _var_selection("inter_var", freqs, order, variances, scores, num_prompts, top_k, eps)


def _var_selection(rule, freqs, order, variances, scores, num_prompts, top_k, eps) -> Selection:
  ids = freqs.source_ids[:len(order)][order]
  top = scores[order][:num_prompts]
  params = {"top_k": int(top_k), "eps": float(eps)}
  _record_clamp(params, "top_k", top_k, len(freqs.source_ids), rule)
  if rule == "inter_var":
    params["num_prompts"] = int(num_prompts)
    _record_clamp(params, "num_prompts", num_prompts, len(order), rule)
  return Selection(
      rule=rule,
      candidates=tuple(ids.tolist()),
      freqs=tuple(freqs.counts[:len(order)][order].tolist()),
      similarities=tuple(freqs.similarity[:len(order)][order].tolist()),
      variances=tuple(variances[order].tolist()),
      scores=tuple(scores[order].tolist()),
      weights=tuple((top / top.sum()).tolist()),
      chosen=tuple(ids[:num_prompts].tolist()),
      num_queries=freqs.num_queries,
      num_neighbors=freqs.num_neighbors,
      params=params)


def random_prompt(freqs: Frequencies, seed: int = DEFAULT_RANDOM_SEED) -> Selection:
  """Random: one library prompt drawn by `random_source` (a reference row: no retrieval involved).

  The library's size is `freqs.num_sources` (`retrieve_prompt` gives it); a caller that does not
  gets a draw over ids 0..(largest neighbour id), with a warning. The selection records the chosen
  source's frequency and similarity among the neighbours (0 when it is none of them).
  """
  num_sources = freqs.num_sources
  if num_sources is None:
    num_sources = int(freqs.source_ids.max()) + 1
    logging.warning("random: the library's number of sources was not given; drawing among source ids "
                    "0..%d (the largest neighbour id).", num_sources - 1)
  chosen = random_source(num_sources, seed, freqs.target)
  hit = np.flatnonzero(freqs.source_ids == chosen)
  count = int(freqs.counts[hit[0]]) if hit.size else 0
  similarity = float(freqs.similarity[hit[0]]) if hit.size else 0.0
  return Selection(
      rule="random", candidates=(chosen,), freqs=(count,), similarities=(similarity,), variances=None,
      scores=(float(count),), weights=(1.0,), chosen=(chosen,), num_queries=freqs.num_queries,
      num_neighbors=freqs.num_neighbors,
      params={"random_seed": int(seed), "num_sources": int(num_sources), "target": freqs.target})


def select(rule: str, neighbor_sources, similarities, *, num_prompts: int = DEFAULT_NUM_PROMPTS,
           top_k: int = DEFAULT_TOP_K, eps: float = DEFAULT_EPS,
           predict_choices: PredictChoices | None = None, num_choices=None,
           random_seed: int = DEFAULT_RANDOM_SEED, num_sources: int | None = None,
           target: str | None = None) -> Selection:
  """Applies one rule to the neighbours of the queries: the one selection entry point.

  Args:
    rule: the name of a rule of `RULES` ("rospr", "inter", "var", "inter_var", ...).
    neighbor_sources: [Q, N] source id of each query's neighbours.
    similarities: [Q, N] their similarities.
    num_prompts: N' of INTER and INTER+VAR.
    top_k: K candidates VAR rank-classifies the queries with.
    eps: VAR's eps.
    predict_choices: rules that need the backbone only: called once with the K candidate source ids
      (prompt rows), returns K sequences [Q] of predicted choice positions (one batched
      rank-classification pass).
    num_choices: the same rules only: [Q] number of answer choices per query.
    random_seed: the Random row's seed.
    num_sources: S, the library's number of sources (the Random row draws from all of them).
    target: the target's name (the Random row's draw depends on it).
  """
  spec = get_rule(rule)
  _check_count("num_prompts", num_prompts)
  _check_count("top_k", top_k)
  config = SelectionConfig(num_prompts=int(num_prompts), top_k=int(top_k), eps=eps,
                           random_seed=random_seed)
  freqs = frequencies(neighbor_sources, similarities, num_sources=num_sources, target=target)
  if not spec.needs_backbone:
    return spec.apply(freqs, config, None, None)
  if predict_choices is None or num_choices is None:
    raise ValueError(f"Rule {rule!r} needs predict_choices and num_choices (rank classification "
                     "of the queries under each candidate prompt).")
  ids = freqs.source_ids[:top_k].tolist()
  predicted = predict_choices(ids)
  if len(predicted) != len(ids):
    raise ValueError(f"predict_choices returned {len(predicted)} prediction lists for "
                     f"{len(ids)} candidate prompts {ids}.")
  lengths = {len(p) for p in predicted}
  if lengths != {freqs.num_queries}:
    raise ValueError(f"predict_choices returned prediction lists of lengths {sorted(lengths)}; "
                     f"expected {freqs.num_queries} (one per query).")
  return spec.apply(freqs, config, np.asarray([np.asarray(p) for p in predicted]), num_choices)


# ---------------------------------------------------------------------------------------------------
# The rules. `apply(freqs, config, predictions [K, Q] or None, num_choices [Q] or None) -> Selection`.

@dataclasses.dataclass(frozen=True)
class Rule:
  """One selection rule.

  Attributes:
    name: its identifier (`rospr retrieve --rule`, `selection.json`'s "rule").
    label: its row in reports and its method name in `rospr evaluate` (METHODS).
    needs_backbone: it rank-classifies the queries under candidate prompts (VAR's predictions).
    settings: the `SelectionConfig` fields it reads besides Q and N (a resumed evaluation must
      have used the same values).
    apply: the rule itself.
    reference: a reference row, not one of the paper's rules (Random): evaluated when METHODS names
      it, never by default (`rospr_jax.pipeline.evaluate.default_methods`).
  """
  name: str
  label: str
  needs_backbone: bool
  settings: tuple[str, ...]
  apply: Callable[[Frequencies, SelectionConfig, np.ndarray | None, Sequence[int] | None], Selection]
  reference: bool = False


RULES = Registry("selection rule", ("name", "label"))


def register(rule: Rule) -> Rule:
  """Adds a rule; its name and label must be new, its settings fields of `SelectionConfig`."""
  fields = {f.name for f in dataclasses.fields(SelectionConfig)}
  unknown = sorted(set(rule.settings) - fields)
  if unknown:
    raise ValueError(f"Rule {rule.name!r} reads settings {unknown} that SelectionConfig lacks "
                     f"(it has {sorted(fields)}).")
  return RULES.add(rule)


def get_rule(name: str) -> Rule:
  return RULES.named(name)


def rule_of_label(label: str) -> Rule:
  for rule in RULES.values():
    if rule.label == label:
      return rule
  rules = [r.label for r in RULES.values() if not r.reference]
  references = [r.label for r in RULES.values() if r.reference]
  raise ValueError(f"Unknown method {label!r}; known: {rules} and the reference rows {references}.")


# The reference row first (rule order is the order of `rospr retrieve`'s choices and of
# `pipeline.evaluate.all_methods()`: the reference rows, then the paper's rules).
register(Rule("random", "Random", False, ("random_seed",),
              lambda freqs, config, _, __: random_prompt(freqs, config.random_seed), reference=True))
register(Rule("rospr", "RoSPr", False, (), lambda freqs, config, _, __: rospr(freqs)))
register(Rule("inter", "INTER", False, ("num_prompts",),
              lambda freqs, config, _, __: inter(freqs, config.num_prompts)))
register(Rule("var", "VAR", True, ("top_k", "eps"),
              lambda freqs, config, predictions, num_choices: var(
                  freqs, predictions, num_choices, top_k=config.top_k, eps=config.eps)))
register(Rule("inter_var", "INTER+VAR", True, ("num_prompts", "top_k", "eps"),
              lambda freqs, config, predictions, num_choices: inter_var(
                  freqs, predictions, num_choices, num_prompts=config.num_prompts, top_k=config.top_k,
                  eps=config.eps)))

"""Zero-shot rank classification of target (dataset, template) pairs, with the hard prompt alone
(T0) and with the prompts RoSPr, INTER, VAR and INTER+VAR retrieve from a library.

`Evaluator` takes rendered targets, the backbone and an opened library; `rospr evaluate`
(`rospr_jax/commands/evaluate.py`) reads the targets and wires them in. For each target: its examples
are scored once per method with the encode-once scorer (`rospr_jax.eval`); retrieval
(`rospr_jax.retrieval`) embeds Q seeded queries (the target's unlabeled inputs) once and every rule
reuses the same neighbours and the same VAR rank classification, a callable made from the scorer
(`eval.var.make_predict_choices`) and handed to the rule. Each selection is saved (`selection.json`
and `prompt.npy`) under `<selections_dir>/<target>/<method>/`, and the accuracy is computed from that
saved prompt. Each (target, method) record is written as it is scored (`eval.records`); a rerun
scores only the pairs without one. A preemption (SIGTERM, SIGINT: `rospr_jax.preemption`) stops the
evaluation once the record in progress is written, at the record every process agrees on.

Every method is an object of `rospr_jax.pipeline.methods` (the hard prompt alone, each selection
rule, the oracle, chance), which says what it needs and how it predicts a target's examples given this
evaluator (its scorer `Evaluator.score`, library and settings); the evaluator dispatches through them.
Two reference rows are evaluated when asked for (METHODS), never by default: `Random` (a selection
rule, `selection.random_prompt`: one library prompt drawn uniformly, seeded per target) and
`Oracle (labels)`, the upper bound of choosing one library prompt (`methods.oracle`): every library
prompt is scored on the target's examples WITH their labels and the most accurate one is taken (the
first on a tie); its record is `oracle.json` (every source's accuracy) beside its `prompt.npy`.
The baselines score the same way: `MT prompt` with `multitask_prompt`, and the fine-tuned prompts,
which a method's `prepare` trains for every target at once before any target is scored
(`_prepare`; `rospr_jax.pipeline.fine_tuning`); a pair it cannot score (`methods.NotScored`) gets
no record, and its selection says why.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np

from rospr_jax import preemption
from rospr_jax.eval import batching, records as records_lib
from rospr_jax.eval.batching import RankExample
from rospr_jax.eval.metrics import accuracy_of, chance_accuracy
from rospr_jax.eval.records import RECORDS_DIR, Target
from rospr_jax.eval.var import make_predict_choices
from rospr_jax.library import sources as sources_lib
from rospr_jax.pipeline import fine_tuning, methods as methods_lib
from rospr_jax.retrieval import retrieve
from rospr_jax.retrieval import selection as selection_lib

# Names of the evaluation's other layers, reachable here too (`evaluate.Target`, ...).
__all__ = ["CHANCE", "HARD_PROMPT", "METHODS", "ORACLE", "ORACLE_FILE", "RECORDS_DIR", "Evaluator", "Target",
           "accuracy_of", "all_methods", "chance_accuracy", "default_methods", "load_oracle", "oracle_choice",
           "retrieval_frequencies", "retriever_for", "selection_dir"]

# The methods' names (`rospr_jax.pipeline.methods`, where they are defined), reachable here too.
HARD_PROMPT = methods_lib.HARD_PROMPT.name  # the hard prompt alone
CHANCE = methods_lib.CHANCE.name  # a uniform random guess: a reference row, no model involved
ORACLE = methods_lib.ORACLE.name  # the best library prompt chosen with the labels: a reference row
ORACLE_FILE = methods_lib.ORACLE_FILE
load_oracle, oracle_choice = methods_lib.load_oracle, methods_lib.oracle_choice


def all_methods() -> tuple[str, ...]:
  """Every method's name (`methods.all_methods()`): the hard prompt alone, the oracle, chance, then
  every selection rule by its label (the reference rule Random first, then the paper's rules)."""
  return methods_lib.names(methods_lib.all_methods())


def default_methods() -> tuple[str, ...]:
  """The methods run when none are named: the hard prompt alone and every rule but the reference rows
  (no oracle, no Random)."""
  return methods_lib.names(methods_lib.default_methods())


METHODS = default_methods()  # the built-in ones; `default_methods()` also lists rules registered later


def selection_dir(selections_dir: str, target: str, method: str) -> str:
  """Where the selection (or the oracle's record) of `method` for `target` is saved."""
  return os.path.join(selections_dir, records_lib.path_name(target), records_lib.path_name(method))


def retriever_for(library, embedder, tokenizer, scorer: batching.Scorer,
                  selection: selection_lib.SelectionConfig = selection_lib.SelectionConfig(),
                  seed: int = 0) -> retrieve.Retriever:
  """The evaluation's `Retriever` over `library`: queries embedded by `embedder` (the library's
  retriever, `library.embed.Embedder`) through `tokenizer`, VAR's predictions made by `scorer` (the
  evaluated backbone) under the library's prompts, the query draw seeded by `seed`."""
  def embed(texts: Sequence[str]) -> np.ndarray:  # [Q] -> [Q, D]
    return embedder.embed_texts(texts, tokenizer.encode_input)

  def predictor(queries: Sequence[sources_lib.Query]) -> selection_lib.PredictChoices:
    return make_predict_choices(queries, scorer=scorer, prompts=library.prompts(), tokenizer=tokenizer)

  return retrieve.Retriever(library, embed, selection, seed, predictor)


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """Everything the methods need, given at construction: the scorer, the tokenizer, and (for the
  retrieval methods and the oracle) the library's retriever.

  Attributes:
    score_fn: the encode-once scorer bound to the frozen backbone (`eval.batching.Scorer`): the
      evaluator never calls the model itself (t5x's evaluator is handed its `score_fn` alike).
    tokenizer: `rospr_jax.tokenization.Tokenizer`.
    retriever: the `retrieval.retrieve.Retriever` of an opened library (`retriever_for`; retrieval
      methods and the oracle only): the library, Q, N, N', K, eps and the query seed.
    multitask_prompt: [P, H] the multitask prompt of the method 'MT prompt' (MT_PROMPT), or None.
    labelled: {target name: `fine_tuning.LabelledExamples`} of the fine-tuned methods, or None.
    fine_tune: how they train (`fine_tuning.FineTuneConfig`).
  """
  score_fn: batching.Scorer
  tokenizer: Any
  retriever: retrieve.Retriever | None = None
  multitask_prompt: Any = None
  labelled: Any = None
  fine_tune: fine_tuning.FineTuneConfig = fine_tuning.FineTuneConfig()

  @property
  def library(self):
    """The opened `rospr_jax.library.store.Library` (None without a retriever)."""
    return self.retriever.library if self.retriever else None

  @property
  def selection(self) -> selection_lib.SelectionConfig:
    """The retrieval's settings (`SelectionConfig`; the defaults without a retriever)."""
    return self.retriever.config if self.retriever else selection_lib.SelectionConfig()

  @property
  def max_input_length(self) -> int:
    return self.score_fn.max_input_length

  def score(self, examples: Sequence[RankExample], prompt, description: str | None = None
            ) -> list[np.ndarray]:
    """The scores [choices] of each example under `prompt` ([P, H]; [S, P, H] indexed by each example's
    prompt_id; None: the hard prompt alone), with a progress bar named `description` if asked for."""
    return self.score_fn(examples, prompt, description)

  def tokenize(self, target: Target) -> list[RankExample]:
    encode_in, encode_out = self.tokenizer.encode_input, self.tokenizer.encode_target
    return [RankExample(encode_in(text), [encode_out(c) for c in choices])
            for text, choices in zip(target.inputs, target.choices)]

  def queries(self, target: Target) -> retrieve.TargetQueries:
    """The target's Q sampled queries, embedded, with VAR's memoized predictions (every rule's input)."""
    if self.retriever is None:
      raise ValueError("Retrieval methods need a library and its retriever (LIBRARY_DIR and "
                       "RETRIEVER_CHECKPOINT).")
    return self.retriever.queries([sources_lib.Query(text, choices)
                                   for text, choices in zip(target.inputs, target.choices)])

  def oracle(self, target: Target, examples: Sequence[RankExample] | None = None
             ) -> tuple[dict, np.ndarray]:
    """The oracle's record and chosen prompt for `target` (`methods.oracle`)."""
    return methods_lib.oracle(self, target, self.tokenize(target) if examples is None else examples)

  def _prepare(self, targets: Sequence[Target], methods: Sequence[methods_lib.Method], resumed: dict) -> dict:
    """What the methods with a `prepare` make before any target is scored (each `prepare` once, for
    every method sharing it): {(target, method): what its `predict` gets, or a `methods.NotScored`}."""
    prepared = {}
    for prepare in dict.fromkeys(m.prepare for m in methods if m.prepare):
      prepared.update(prepare(self, targets, [m for m in methods if m.prepare is prepare], resumed))
    return prepared

  def _evaluate_target(self, target: Target, methods: Sequence[methods_lib.Method], resumed: dict,
                       selections_dir, records_dir, say: Callable[[str], None],
                       scored: Callable[[], None] = lambda: None, prepared: dict | None = None
                       ) -> tuple[list[dict], dict[str, dict]]:
    """One target under every method, in order: (its records, {method: selection dict}); `scored()`
    is called once each new record is written. A pair `prepared` marks `NotScored` gets no record: its
    selection dict says why ({"not_scored": reason})."""
    examples = self.tokenize(target)
    truncated = batching.truncated_inputs(examples, self.max_input_length)
    retrieval = None  # the queries' embeddings and VAR's predictions, made once for all rules
    records, selections = [], {}
    for method in methods:
      record = records_lib.new_record(target, method.name, len(examples), truncated)
      if not method.needs_backbone:
        records.append({**record, "accuracy": method.expected(target)})
        continue
      where = (selection_dir(selections_dir, target.name, method.name)
               if selections_dir and method.saves_selection else None)
      if (target.name, method.name) in resumed:
        accuracy = resumed[target.name, method.name]  # checked: correct / examples
        records.append({**record, "accuracy": accuracy, "correct": round(accuracy * len(examples))})
        if where:
          selections[method.name] = method.load_saved(where)
        say(f"{target.name} {method.name}: {100 * accuracy:.2f}% (resumed)")
        continue
      context = (prepared or {}).get((target.name, method.name))
      if isinstance(context, methods_lib.NotScored):
        selections[method.name] = {"not_scored": context.reason}
        say(f"{target.name} {method.name}: not scored ({context.reason})")
        continue
      if method.retrieves and retrieval is None:
        retrieval = self.queries(target)
      chosen, predictions = method.predict(self, target, examples, retrieval if context is None else context,
                                           where)
      if chosen is not None:
        selections[method.name] = chosen
      records.append(self._write_record(target, method, record, predictions, where, records_dir, say))
      scored()
    return records, selections

  def _write_record(self, target: Target, method: methods_lib.Method, record: dict, predictions,
                    where: str | None, records_dir, say: Callable[[str], None]) -> dict:
    """Writes the scored record of `method` on `target` (with its selection's sha256 when saved in
    `where`) and says its accuracy; returns the record without its predictions and digests."""
    examples = record["examples"]
    full = {**record, **records_lib.scored(target, predictions)}
    if where:
      full["selection_sha256"] = records_lib.files_sha256(where, method.files())
    records_lib.write_record(records_dir, full)
    truncated = record["truncated_inputs"]
    notes = [f"{target.skipped} skipped by the template"] * bool(target.skipped) + [
        f"{truncated} inputs cut to {self.max_input_length} tokens"] * bool(truncated)
    notes = f" ({'; '.join(notes)})" if notes else ""
    say(f"{target.name} {method.name}: {100 * full['accuracy']:.2f}% on {examples} examples{notes}")
    return {k: v for k, v in full.items() if k not in ("predictions", "predictions_sha256", "selection_sha256")}

  def evaluate(self, targets: Sequence[Target], methods: Sequence[str] | None = None, *,
               selections_dir: str | None = None, records_dir: str | None = None,
               progress: Callable[[str], None] | None = None) -> tuple[list[dict], dict[str, dict]]:
    """Scores every target under every method (names; None: `default_methods()`).

    With `records_dir`, each (target, method) record is written there as soon as it is scored, and the
    pairs already there are not scored again (a killed run resumes; their selections are read back
    from `selections_dir`).

    Returns:
      records: one {"method", "dataset", "template", "target", "accuracy", "correct", "examples",
        "skipped", "truncated_inputs", "target_digest"} per pair (the written record also holds the predictions);
      selections: {target name: {method: selection dict}} for the methods that select a prompt.
    """
    methods_ = _methods_named(methods)
    by_name = {m.name: m for m in methods_}
    records, selections = [], {}
    pairs = [(t, m.name) for t in targets for m in methods_ if m.needs_backbone]
    resumed = records_lib.read_records(
        records_dir, pairs, lambda target, method: selection_dir(selections_dir, target, method)
        if selections_dir and by_name[method].saves_selection else None)
    scored = _preemption_check(len(pairs), len(resumed))
    prepared = self._prepare(targets, methods_, resumed)
    for number, target in enumerate(targets, 1):
      position = f"target {number} of {len(targets)}"
      say = (lambda message, at=position: progress(f"{at}: {message}")) if progress else (lambda _: None)
      target_records, chosen = self._evaluate_target(target, methods_, resumed, selections_dir, records_dir,
                                                      say, scored, prepared)
      records.extend(target_records)
      if chosen:
        selections.setdefault(target.name, {}).update(chosen)
    return records, selections


def _methods_named(methods: Sequence[str] | None) -> tuple[methods_lib.Method, ...]:
  """The methods of these names (None: the default ones); unknown names are refused, naming the known."""
  if methods is None:
    return methods_lib.default_methods()
  known = {m.name: m for m in methods_lib.all_methods()}
  unknown = [m for m in methods if m not in known and not methods_lib.is_method(m)]
  if unknown:
    raise ValueError(f"Unknown methods {unknown}; known: {list(known)}.")
  return tuple(known[m] if m in known else methods_lib.get(m) for m in methods)


def _preemption_check(total: int, resumed: int) -> Callable[[], None]:
  """`scored()`, which every process calls after each record it scored (of `total` pairs, `resumed` of
  them read back): it stops the evaluation (`preemption.stop`) at the record every process agrees on
  after SIGTERM or SIGINT, unless that record was the last one."""
  count = [0]

  def scored() -> None:
    count[0] += 1
    if preemption.reached(count[0]) and resumed + count[0] < total:
      preemption.stop(f"record {resumed + count[0]} of {total}", "records saved")
  return scored


def retrieval_frequencies(selections: dict[str, dict], method: str = methods_lib.ROSPR.name
                          ) -> dict[str, dict[str, int]]:
  """{target: {source name: freq}} of one method's selections (RoSPr's by default: the retrieval
  heatmap)."""
  out = {}
  for target, by_method in selections.items():
    if method in by_method:
      record = by_method[method]
      names = record.get("names") or [str(c) for c in record["candidates"]]
      out[target] = {name: int(f) for name, f in zip(names, record["freqs"])}
  return out

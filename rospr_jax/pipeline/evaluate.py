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

Two reference rows are evaluated when asked for (METHODS), never by default: `Random` (a selection
rule, `selection.random_prompt`: one library prompt drawn uniformly, seeded per target) and
`Oracle (labels)`, the upper bound of choosing one library prompt: every library prompt is scored on
the target's examples WITH their labels and the most accurate one is taken (the first on a tie). The
oracle is no selection rule (it needs the labels and the scorer), so it lives here; its record is
`oracle.json` (every source's accuracy) beside its `prompt.npy`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np

from rospr_jax import preemption, storage
from rospr_jax.eval import batching, records as records_lib, report
from rospr_jax.eval.batching import RankExample, score_examples
from rospr_jax.eval.metrics import accuracy_of, chance_accuracy
from rospr_jax.eval.records import RECORDS_DIR, Target
from rospr_jax.eval.var import make_predict_choices
from rospr_jax.library import sources as sources_lib
from rospr_jax.retrieval import retrieve
from rospr_jax.retrieval import selection as selection_lib

# Names of the evaluation's other layers, reachable here too (`evaluate.Target`, ...).
__all__ = ["CHANCE", "HARD_PROMPT", "METHODS", "ORACLE", "ORACLE_FILE", "RECORDS_DIR", "Evaluator", "Target",
           "accuracy_of", "all_methods", "chance_accuracy", "default_methods", "load_oracle", "oracle_choice",
           "retrieval_frequencies", "selection_dir"]

HARD_PROMPT = "T0"  # The hard prompt alone: the frozen backbone without a soft prompt.
CHANCE = report.CHANCE  # Expected accuracy of a uniform random guess: a reference row, no model involved.
# The best single library prompt for the target, chosen with the target's labels: a reference row (the
# upper bound of single-prompt selection), never a zero-shot result.
ORACLE = "Oracle (labels)"
ORACLE_FILE = "oracle.json"


def all_methods() -> tuple[str, ...]:
  """Every method: the hard prompt alone, the oracle, then every selection rule by its label (the
  reference rule Random first, then the paper's rules)."""
  return (HARD_PROMPT, ORACLE) + tuple(rule.label for rule in selection_lib.RULES.values())


def default_methods() -> tuple[str, ...]:
  """The methods run when none are named: the hard prompt alone and every rule but the reference rows
  (no oracle, no Random)."""
  return (HARD_PROMPT,) + tuple(r.label for r in selection_lib.RULES.values() if not r.reference)


METHODS = default_methods()  # the built-in ones; `default_methods()` also lists rules registered later


def selection_dir(selections_dir: str, target: str, method: str) -> str:
  """Where the selection (or the oracle's record) of `method` for `target` is saved."""
  return os.path.join(selections_dir, records_lib.path_name(target), records_lib.path_name(method))


def oracle_choice(accuracies: Sequence[float]) -> int:
  """The oracle's pick: the index of the highest accuracy, the first on a tie."""
  values = np.asarray(accuracies, np.float64)
  if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
    raise ValueError(f"The oracle needs one finite accuracy per library prompt; got {values.tolist()}.")
  return int(np.argmax(values))


def load_oracle(directory: str) -> tuple[dict, np.ndarray]:
  """Reads an oracle's record and prompt: ({"rule": "oracle", "accuracies", "chosen", ...}, [P, H])."""
  paths_ = [os.path.join(directory, name) for name in (ORACLE_FILE, retrieve.PROMPT_FILE)]
  for path in paths_:
    if not storage.as_path(path).is_file():
      raise FileNotFoundError(f"Oracle directory {directory} is missing {os.path.basename(path)}.")
  return storage.read_json(paths_[0], "Oracle record"), storage.load_npy(paths_[1])


def _selection_files(method: str) -> tuple[str, str]:
  """The files of a saved selection (or oracle record) of `method`; records carry their sha256."""
  return (ORACLE_FILE if method == ORACLE else retrieve.SELECTION_FILE, retrieve.PROMPT_FILE)


def _saved_selection(directory: str, method: str) -> dict:
  """The selection dict a (resumed) method saved in `directory`."""
  if method == ORACLE:
    return load_oracle(directory)[0]
  return retrieve.load_selection(directory)[0].to_dict()


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """Everything the methods need, given at construction: the backbone, its tokenizer, and (for the
  retrieval methods and the oracle) a library.

  Attributes:
    params, model: the frozen backbone (T0) and its `PromptedBackbone` (`Backbone.model`).
    tokenizer: `rospr_jax.tokenization.Tokenizer`.
    library: an opened `rospr_jax.library.store.Library` (retrieval methods and the oracle only).
    embedder: the library's retriever (`rospr_jax.library.embed.Embedder`; retrieval methods only).
    selection: Q, N, N', K and eps (`rospr_jax.retrieval.selection.SelectionConfig`).
    batch_size, mesh: scoring batch size and optional device mesh.
    seed: query sampling seed.
    max_input_length: inputs keep their first this many tokens.
    progress_bars: show a tqdm bar while each (target, method) is scored.
  """
  params: Any
  model: Any
  tokenizer: Any
  library: Any = None
  embedder: Any = None
  selection: selection_lib.SelectionConfig = selection_lib.SelectionConfig()
  batch_size: int = 32
  mesh: Any = None
  seed: int = 0
  max_input_length: int = batching.T0_INPUT_LENGTH
  progress_bars: bool = False

  def _score(self, examples: Sequence[RankExample], prompt, description: str | None = None
             ) -> list[np.ndarray]:
    return score_examples(self.params, self.model, examples, prompts=prompt, batch_size=self.batch_size,
                          max_input_length=self.max_input_length, mesh=self.mesh,
                          progress=description if self.progress_bars else None)

  def tokenize(self, target: Target) -> list[RankExample]:
    encode_in, encode_out = self.tokenizer.encode_input, self.tokenizer.encode_target
    return [RankExample(encode_in(text), [encode_out(c) for c in choices])
            for text, choices in zip(target.inputs, target.choices)]

  def _retrieval(self, target: Target) -> tuple[np.ndarray, Callable]:
    """Query embeddings [Q, D] and a memoized VAR rank classification for `target`."""
    if self.library is None or self.embedder is None:
      raise ValueError("Retrieval methods need a library and its retriever (LIBRARY_DIR and "
                       "RETRIEVER_CHECKPOINT).")
    picked = retrieve.sample_queries(len(target.inputs), self.selection.num_queries, self.seed)
    queries = [sources_lib.Query(target.inputs[i], target.choices[i]) for i in picked]
    embeddings = self.embedder.embed_texts([q.text for q in queries], self.tokenizer.encode_input)
    predict = make_predict_choices(self.params, self.model, queries, self.library.prompts(),
                                   self.tokenizer, batch_size=self.batch_size, mesh=self.mesh)
    cache: dict[tuple[int, ...], Any] = {}

    def predict_choices(ids):
      key = tuple(int(i) for i in ids)
      if key not in cache:
        cache[key] = predict(list(key))
      return cache[key]

    predict_choices.num_choices = [len(q.choices) for q in queries]
    return embeddings, predict_choices

  def _select(self, target: Target, method: str, retrieval) -> tuple[selection_lib.Selection, np.ndarray]:
    """The selection of a rule's method for `target` and its (interpolated) prompt [P, H]."""
    embeddings, predict_choices = retrieval
    config, rule = self.selection, selection_lib.rule_of_label(method)
    return retrieve.retrieve_prompt(
        self.library, embeddings, rule.name, num_neighbors=config.num_neighbors,
        num_prompts=config.num_prompts, top_k=config.top_k, eps=config.eps,
        predict_choices=predict_choices, num_choices=predict_choices.num_choices,
        random_seed=config.random_seed, params={"target": target.name, "seed": self.seed})

  def oracle(self, target: Target, examples: Sequence[RankExample] | None = None
             ) -> tuple[dict, np.ndarray]:
    """The best single library prompt for `target`, chosen WITH its labels (a reference row).

    Every library prompt scores all the target's examples (one batched pass, the prompt table indexed
    per example); the highest accuracy wins, the first source on a tie.

    Returns:
      ({"rule": "oracle", "uses_labels": True, "candidates": [S] source ids, "names": [S],
        "accuracies": [S], "chosen": [best], "weights": [1.0], "accuracy": the best one,
        "predictions": [E] the chosen prompt's choice per example, "params": {"target": ...}},
       the chosen prompt [P, H]).
    """
    if self.library is None:
      raise ValueError(f"{ORACLE} scores every prompt of a library: it needs one (LIBRARY_DIR).")
    examples = self.tokenize(target) if examples is None else examples
    table = np.asarray(self.library.prompts())  # [S, P, H]
    names = list(self.library.source_names)
    batch = [dataclasses.replace(ex, prompt_id=s) for s in range(len(table)) for ex in examples]
    scores = self._score(batch, table, f"{target.name} {ORACLE} ({len(table)} prompts)")
    size = len(examples)
    accuracies = [accuracy_of(scores[s * size:(s + 1) * size], target.is_correct,
                              f"{target.name} {ORACLE} (source {names[s]})") for s in range(len(table))]
    best = oracle_choice(accuracies)
    predictions = [int(np.argmax(s)) for s in scores[best * size:(best + 1) * size]]
    record = {"rule": "oracle", "uses_labels": True, "candidates": list(range(len(table))),
              "names": names, "accuracies": accuracies, "chosen": [best], "weights": [1.0],
              "accuracy": accuracies[best], "predictions": predictions,
              "params": {"target": target.name, "library": self.library.name}}
    return record, table[best]

  def _score_method(self, target: Target, method: str, examples: Sequence[RankExample], retrieval,
                    where: str | None) -> tuple[dict | None, list[int]]:
    """Scores `method` on `target` (saving its selection in `where`, if given): (the selection dict,
    None for the hard prompt; the predicted choice of each example, the first best on a tie)."""
    if method == ORACLE:
      # Scored per library prompt inside: its accuracy is the best of those (of the saved prompt).
      chosen, prompt = self.oracle(target, examples)
      if where:
        storage.save_npy(os.path.join(where, retrieve.PROMPT_FILE), prompt)
        storage.write_json(os.path.join(where, ORACLE_FILE), chosen)
      return chosen, chosen["predictions"]
    chosen = prompt = None
    if method != HARD_PROMPT:
      selected, prompt = self._select(target, method, retrieval)
      if where:
        retrieve.save_selection(where, selected, prompt)
        selected, prompt = retrieve.load_selection(where)  # Evaluate exactly what was saved.
      chosen = selected.to_dict()
    scores = self._score(examples, prompt, f"{target.name} {method}")
    accuracy_of(scores, target.is_correct, f"{target.name} {method}")  # refuses NaN or infinite scores
    return chosen, [int(np.argmax(s)) for s in scores]

  def _evaluate_target(self, target: Target, methods: Sequence[str], resumed: dict, selections_dir,
                       records_dir, say: Callable[[str], None], scored: Callable[[], None] = lambda: None
                       ) -> tuple[list[dict], dict[str, dict]]:
    """One target under every method, in order: (its records, {method: selection dict}); `scored()`
    is called once each new record is written."""
    examples = self.tokenize(target)
    truncated = batching.truncated_inputs(examples, self.max_input_length)
    retrieval = None  # the queries' embeddings and VAR's predictions, made once for all rules
    records, selections = [], {}
    for method in methods:
      record = records_lib.new_record(target, method, len(examples), truncated)
      if method == CHANCE:
        records.append({**record, "accuracy": chance_accuracy(target.is_correct)})
        continue
      where = selection_dir(selections_dir, target.name, method) if selections_dir else None
      if (target.name, method) in resumed:
        accuracy = resumed[target.name, method]  # checked: correct / examples
        records.append({**record, "accuracy": accuracy, "correct": round(accuracy * len(examples))})
        if where and method != HARD_PROMPT:
          selections[method] = _saved_selection(where, method)
        say(f"{target.name} {method}: {100 * records[-1]['accuracy']:.2f}% (resumed)")
        continue
      if method not in (HARD_PROMPT, ORACLE) and retrieval is None:
        retrieval = self._retrieval(target)
      chosen, predictions = self._score_method(target, method, examples, retrieval, where)
      if chosen is not None:
        selections[method] = chosen
      full = {**record, **records_lib.scored(target, predictions)}
      if where and method != HARD_PROMPT:
        full["selection_sha256"] = records_lib.files_sha256(where, _selection_files(method))
      records_lib.write_record(records_dir, full)
      records.append({k: v for k, v in full.items()
                      if k not in ("predictions", "predictions_sha256", "selection_sha256")})
      notes = [f"{target.skipped} skipped by the template"] * bool(target.skipped) + [
          f"{truncated} inputs cut to {self.max_input_length} tokens"] * bool(truncated)
      notes = f" ({'; '.join(notes)})" if notes else ""
      say(f"{target.name} {method}: {100 * full['accuracy']:.2f}% on {len(examples)} examples{notes}")
      scored()
    return records, selections

  def evaluate(self, targets: Sequence[Target], methods: Sequence[str] | None = None, *,
               selections_dir: str | None = None, records_dir: str | None = None,
               progress: Callable[[str], None] | None = None) -> tuple[list[dict], dict[str, dict]]:
    """Scores every target under every method.

    With `records_dir`, each (target, method) record is written there as soon as it is scored, and the
    pairs already there are not scored again (a killed run resumes; their selections are read back
    from `selections_dir`).

    Returns:
      records: one {"method", "dataset", "template", "target", "accuracy", "correct", "examples",
        "skipped", "truncated_inputs", "target_digest"} per pair (the written record also holds the predictions);
      selections: {target name: {method: selection dict}} for the retrieval methods.
    """
    known = all_methods() + (CHANCE,)
    methods_ = default_methods() if methods is None else tuple(methods)
    unknown = [m for m in methods_ if m not in known]
    if unknown:
      raise ValueError(f"Unknown methods {unknown}; known: {list(known)}.")
    records, selections = [], {}
    pairs = [(t, m) for t in targets for m in methods_ if m != CHANCE]
    resumed = records_lib.read_records(
        records_dir, pairs, lambda target, method: selection_dir(selections_dir, target, method)
        if selections_dir and method != HARD_PROMPT else None)
    scored = _preemption_check(len(pairs), len(resumed))
    for number, target in enumerate(targets, 1):
      position = f"target {number} of {len(targets)}"
      say = (lambda message, at=position: progress(f"{at}: {message}")) if progress else (lambda _: None)
      target_records, chosen = self._evaluate_target(target, methods_, resumed, selections_dir, records_dir,
                                                      say, scored)
      records.extend(target_records)
      if chosen:
        selections.setdefault(target.name, {}).update(chosen)
    return records, selections


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


def retrieval_frequencies(selections: dict[str, dict], method: str = "RoSPr") -> dict[str, dict[str, int]]:
  """{target: {source name: freq}} of one method's selections (for the retrieval heatmap)."""
  out = {}
  for target, by_method in selections.items():
    if method in by_method:
      record = by_method[method]
      names = record.get("names") or [str(c) for c in record["candidates"]]
      out[target] = {name: int(f) for name, f in zip(names, record["freqs"])}
  return out

"""Zero-shot rank classification of target (dataset, template) pairs, with the hard prompt alone
(T0) and with the prompts RoSPr, INTER, VAR and INTER+VAR retrieve from a library.

`Evaluator` takes rendered targets, the backbone and an opened library; `rospr evaluate`
(`rospr_jax/commands/evaluate.py`) reads the targets and wires them in. For each target: its examples
are scored once per method with the encode-once scorer; retrieval embeds Q seeded queries (the
target's unlabeled inputs) once and every rule reuses the same neighbours and the same VAR rank
classification. Each selection is saved (`selection.json` and `prompt.npy`) under
`<selections_dir>/<target>/<method>/`, and the accuracy is computed from that saved prompt.

Two reference rows are evaluated when asked for (METHODS), never by default: `Random` (a selection
rule, `selection.random_prompt`: one library prompt drawn uniformly, seeded per target) and
`Oracle (labels)`, the upper bound of choosing one library prompt: every library prompt is scored on
the target's examples WITH their labels and the most accurate one is taken (the first on a tie). The
oracle is no selection rule (it needs the labels and the scorer), so it lives here; its record is
`oracle.json` (every source's accuracy) beside its `prompt.npy`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from rospr_jax import artifacts, paths
from rospr_jax.eval import metrics, report
from rospr_jax.eval import batching
from rospr_jax.eval.batching import RankExample, score_examples
from rospr_jax.eval.var import make_predict_choices
from rospr_jax.library import sources as sources_lib
from rospr_jax.retrieval import retrieve
from rospr_jax.retrieval import selection as selection_lib

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


@dataclasses.dataclass(frozen=True)
class Target:
  """One evaluated (dataset, template): rendered examples with their answer choices."""
  name: str
  dataset: str
  template: str
  inputs: tuple[str, ...]                 # [E]
  choices: tuple[tuple[str, ...], ...]    # [E][C_e]
  is_correct: tuple[tuple[bool, ...], ...]  # [E][C_e]

  def digest(self) -> str:
    """16 hex digits of the examples (inputs, choices, correct flags): a record scored on other
    examples of the same target is never resumed into this one."""
    payload = json.dumps([self.name, self.inputs, self.choices, self.is_correct], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def accuracy_of(scores: Sequence[np.ndarray], is_correct: Sequence[Sequence[bool]],
                what: str = "the scores") -> float:
  """T0's rank-classification accuracy from per-example choice scores [C_e].

  A score that is NaN or infinite is refused (argmax would silently pick choice 0), naming `what` and
  the first such example.
  """
  bad = [e for e, s in enumerate(scores) if not np.all(np.isfinite(np.asarray(s, np.float64)))]
  if bad:
    raise FloatingPointError(
        f"{what}: {len(bad)} of {len(scores)} examples have NaN or infinite choice scores (first: "
        f"example {bad[0]}); the backbone's weights or the prompt are not finite.")
  idx = [(e, c) for e, s in enumerate(scores) for c in range(len(s))]
  flat_scores = np.concatenate([np.asarray(s, np.float64) for s in scores])
  flat_correct = [flag for flags in is_correct for flag in flags]
  return metrics.accuracy(idx, flat_scores, flat_correct)


def chance_accuracy(is_correct: Sequence[Sequence[bool]]) -> float:
  """Expected accuracy of picking a choice uniformly at random: mean over examples of correct / C."""
  return float(np.mean([sum(flags) / len(flags) for flags in is_correct]))


def _path_name(name: str) -> str:
  return re.sub(r"[^\w.+-]", "_", name)


RECORDS_DIR = "records"  # under the output folder: one record per (target, method), for resuming


def _record_path(records_dir: str, target: str, method: str) -> str:
  return os.path.join(records_dir, _path_name(target), _path_name(method) + ".json")


def _read_record(path: str, target: Target, method: str) -> float:
  """The accuracy of a record written by an earlier run, checked against this run's target."""
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
    accuracy = float(record["accuracy"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"Record {path} is unreadable ({type(e).__name__}: {e}); delete it to score "
                     f"{target.name} {method} again.") from None
  if not 0.0 <= accuracy <= 1.0:
    raise ValueError(f"Record {path} holds accuracy {accuracy!r}, outside [0, 1]; delete it to score "
                     f"{target.name} {method} again.")
  if record.get("target_digest") != target.digest() or record.get("examples") != len(target.inputs):
    raise ValueError(
        f"Record {path} was scored on other examples of {target.name} ({record.get('examples')} "
        f"examples, digest {record.get('target_digest')}; now {len(target.inputs)}, {target.digest()}): "
        "the target data changed. Give another OUTPUT_DIR, or delete the records to start over.")
  return accuracy


def _selection_dir(selections_dir: str, target: str, method: str) -> str:
  return os.path.join(selections_dir, _path_name(target), _path_name(method))


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
    if not os.path.isfile(path):
      raise FileNotFoundError(f"Oracle directory {directory} is missing {os.path.basename(path)}.")
  return artifacts.read_json(paths_[0], "Oracle record"), np.load(paths_[1])


@dataclasses.dataclass
class Evaluator:
  """Everything the methods need: the backbone, its tokenizer, and (for retrieval) a library.

  Attributes:
    params, config: the frozen backbone (T0).
    tokenizer: `rospr_jax.tokenization.Tokenizer`.
    library: an opened `rospr_jax.library.store.Library` (retrieval methods only).
    embedder: the library's retriever (`rospr_jax.library.embed.Embedder`).
    selection: Q, N, N', K and eps (`rospr_jax.retrieval.selection.SelectionConfig`).
    batch_size, mesh: scoring batch size and optional device mesh.
    seed: query sampling seed.
    progress_bars: show a tqdm bar while each (target, method) is scored.
  """
  params: Any
  config: Any
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
    return score_examples(self.params, self.config, examples, prompts=prompt, batch_size=self.batch_size,
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
    predict = make_predict_choices(self.params, self.config, queries, self.library.prompts(),
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
        "params": {"target": ...}}, the chosen prompt [P, H]).
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
    record = {"rule": "oracle", "uses_labels": True, "candidates": list(range(len(table))),
              "names": names, "accuracies": accuracies, "chosen": [best], "weights": [1.0],
              "accuracy": accuracies[best], "params": {"target": target.name, "library": self.library.name}}
    return record, table[best]

  def _resumed(self, targets: Sequence[Target], methods: Sequence[str],
               records_dir: str | None) -> dict[tuple[str, str], float]:
    """{(target, method): accuracy} of the pairs an earlier run already wrote to `records_dir`.

    Process 0 reads them and broadcasts the accuracies, so that on several hosts every process skips
    the same pairs (each scoring is a computation over all of them).
    """
    pairs = [(t, m) for t in targets for m in methods if m != CHANCE]
    accuracies = np.full(len(pairs), np.nan)
    problem = ""
    if records_dir and paths.writes_outputs():
      for i, (target, method) in enumerate(pairs):
        path = _record_path(records_dir, target.name, method)
        if os.path.exists(path):
          try:
            accuracies[i] = _read_record(path, target, method)
          except ValueError as e:
            problem = str(e)
            break
    if paths.from_process_zero(np.int32(bool(problem))):  # every process stops, not only process 0
      raise ValueError(problem or "process 0 refused a record of the output folder")
    accuracies = paths.from_process_zero(accuracies)
    return {(t.name, m): float(a) for (t, m), a in zip(pairs, accuracies) if not np.isnan(a)}

  def evaluate(self, targets: Sequence[Target], methods: Sequence[str] | None = None, *,
               selections_dir: str | None = None, records_dir: str | None = None,
               progress: Callable[[str], None] | None = None) -> tuple[list[dict], dict[str, dict]]:
    """Scores every target under every method.

    With `records_dir`, each (target, method) record is written there as soon as it is scored, and the
    pairs already there are not scored again (a killed run resumes; their selections are read back
    from `selections_dir`).

    Returns:
      records: one {"method", "dataset", "template", "target", "accuracy", "examples"} per pair;
      selections: {target name: {method: selection dict}} for the retrieval methods.
    """
    known = all_methods() + (CHANCE,)
    methods_ = default_methods() if methods is None else tuple(methods)
    unknown = [m for m in methods_ if m not in known]
    if unknown:
      raise ValueError(f"Unknown methods {unknown}; known: {list(known)}.")
    records, selections = [], {}
    resumed = self._resumed(targets, methods_, records_dir)
    for number, target in enumerate(targets, 1):
      examples = self.tokenize(target)
      retrieval = None
      position = f"target {number} of {len(targets)}"
      for method in methods_:
        prompt = None
        record = {"method": method, "dataset": target.dataset, "template": target.template,
                  "target": target.name, "examples": len(examples), "target_digest": target.digest()}
        if method == CHANCE:
          records.append({**record, "accuracy": chance_accuracy(target.is_correct)})
          continue
        if (target.name, method) in resumed:
          records.append({**record, "accuracy": resumed[target.name, method]})
          if method == ORACLE and selections_dir:
            chosen, _ = load_oracle(_selection_dir(selections_dir, target.name, method))
            selections.setdefault(target.name, {})[method] = chosen
          elif method != HARD_PROMPT and selections_dir:
            chosen, _ = retrieve.load_selection(_selection_dir(selections_dir, target.name, method))
            selections.setdefault(target.name, {})[method] = chosen.to_dict()
          if progress:
            progress(f"{position}: {target.name} {method}: {100 * records[-1]['accuracy']:.2f}% (resumed)")
          continue
        if method == ORACLE:
          # Scored per library prompt inside: its accuracy is the best of those (of the saved prompt).
          chosen, prompt = self.oracle(target, examples)
          if selections_dir:
            where = _selection_dir(selections_dir, target.name, method)
            artifacts.save_npy(os.path.join(where, retrieve.PROMPT_FILE), prompt)
            artifacts.write_json(os.path.join(where, ORACLE_FILE), chosen)
          selections.setdefault(target.name, {})[method] = chosen
          accuracy = chosen["accuracy"]
        else:
          if method != HARD_PROMPT:
            if retrieval is None:
              retrieval = self._retrieval(target)
            chosen, prompt = self._select(target, method, retrieval)
            if selections_dir:
              where = _selection_dir(selections_dir, target.name, method)
              retrieve.save_selection(where, chosen, prompt)
              chosen, prompt = retrieve.load_selection(where)  # Evaluate exactly what was saved.
            selections.setdefault(target.name, {})[method] = chosen.to_dict()
          accuracy = accuracy_of(self._score(examples, prompt, f"{target.name} {method}"),
                                 target.is_correct, f"{target.name} {method}")
        records.append({**record, "accuracy": accuracy})
        if records_dir and paths.writes_outputs():
          artifacts.write_json(_record_path(records_dir, target.name, method), records[-1])
        if progress:
          progress(f"{position}: {target.name} {method}: {100 * accuracy:.2f}% on {len(examples)} examples")
    return records, selections


def retrieval_frequencies(selections: dict[str, dict], method: str = "RoSPr") -> dict[str, dict[str, int]]:
  """{target: {source name: freq}} of one method's selections (for the retrieval heatmap)."""
  out = {}
  for target, by_method in selections.items():
    if method in by_method:
      record = by_method[method]
      names = record.get("names") or [str(c) for c in record["candidates"]]
      out[target] = {name: int(f) for name, f in zip(names, record["freqs"])}
  return out

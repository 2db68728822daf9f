"""The evaluation's methods as objects: the one module where their names are written and compared.

A method is one `Method`: its name (the report's row, a record's "method", `rospr evaluate`'s
METHODS), what it needs (the library, the queries' retrieval, the target's labels, the backbone), the
`SelectionConfig` settings it reads (a resumed evaluation must have used the same values), the record
it saves beside its prompt, and how it predicts a target's examples given the `Evaluator` (its scorer,
library and settings: `rospr_jax.pipeline.evaluate`), which dispatches through these objects only.

- T0 (`HARD_PROMPT`): the hard prompt alone, the frozen backbone without a soft prompt.
- Each selection rule of `rospr_jax.retrieval.selection.RULES` (RoSPr, INTER, VAR, INTER+VAR and the
  reference rule Random), named by its label: a method made from the rule (`rule_method`), so a rule
  registered there is a method here too.
- `Oracle (labels)` (`ORACLE`): the best single library prompt for the target, chosen WITH its labels
  (the upper bound of single-prompt selection, a reference row, never a zero-shot result): every
  library prompt scores the target's examples and the most accurate one is taken (the first on a tie).
  Its record is `oracle.json` (every source's accuracy) beside its `prompt.npy`.
- `chance` (`CHANCE`): the expected accuracy of a uniform random guess, from the target alone (no
  model, no record): drawn as a tick in the accuracy plot (`reference_ticks`).
- `MT prompt` (`MULTITASK`): one soft prompt trained on the union of every source (train-prompts with
  MULTITASK = True), the same prompt for every target: is retrieval better than one shared prompt
  trained on the same data?
- `Fine-tuned (k labels, from RoSPr)` and `Fine-tuned (k labels)` (`fine_tuned(k, from_rospr)`; k = 16
  and 32 registered, any k by its name): a prompt tuned on k labelled examples of the target's
  training split, started from RoSPr's prompt or from the default initializer
  (`rospr_jax.pipeline.fine_tuning`); the prompts of every target train jointly in one run, before
  the targets are scored (`Method.prepare`). A target without a training split apart from the
  evaluated one is not scored (`NotScored`, its reason recorded among the selections).

A new method is one `register(Method(...))` here (after the built-ins, before the rules in
`all_methods()`); the evaluation, `rospr evaluate`'s checks and the report follow from its fields.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from rospr_jax import storage
from rospr_jax.eval.metrics import accuracy_of, chance_accuracy
from rospr_jax.eval.records import Target
from rospr_jax.pipeline import fine_tuning
from rospr_jax.retrieval import retrieve
from rospr_jax.retrieval import selection as selection_lib

ORACLE_FILE = "oracle.json"

# predict(evaluator, target, examples [E] RankExample, retrieval, where) -> (the selection dict, None
# when the method selects nothing; the predicted choice of each example, the first best on a tie).
# `retrieval` is the evaluator's `retrieve.TargetQueries` (embedded, with VAR's predictions) for
# methods that retrieve, else None; `where` the folder the method saves its selection in, or None.
Predict = Callable[[Any, Target, Sequence[Any], Any, str | None], tuple[dict | None, list[int]]]
# prepare(evaluator, targets, methods sharing it, resumed {(target, method): accuracy}) ->
# {(target name, method name): what that method's `predict` gets for the target (in place of
# `retrieval`), or a `NotScored`}: work done once for every target before any is scored.
Prepare = Callable[[Any, Sequence[Target], Sequence[Any], dict], dict]


@dataclasses.dataclass(frozen=True)
class NotScored:
  """A (target, method) pair that cannot be scored, and why (recorded, never a silent gap)."""
  reason: str


@dataclasses.dataclass(frozen=True)
class Method:
  """One evaluation method.

  Attributes:
    name: its row in reports, a record's "method" and its entry in `rospr evaluate`'s METHODS.
    predict: how it predicts a target's examples (`Predict`); None for a method scored without the
      backbone (`expected`).
    expected: the accuracy of a method that scores nothing, from the target alone (chance): no record
      is written for it and it is never resumed. None for a scored method.
    default: evaluated when METHODS names none (the reference rows are not).
    retrieves: it needs the target's queries embedded and VAR's predictions (`Evaluator.queries`).
    needs_library: it reads the library (LIBRARY_DIR and RETRIEVER_CHECKPOINT).
    needs_labels: it reads the target's labels to choose its prompt (a reference row, an upper bound).
    settings: the `SelectionConfig` fields it reads besides Q and N (they guard a resume).
    record_file: the record saved beside `prompt.npy` in its selection folder; None: it saves none.
    load_saved: reads the selection dict back from that folder (a resumed pair).
    needs_multitask_prompt: it scores with the multitask prompt (`Evaluator.multitask_prompt`, MT_PROMPT).
    fine_tune: (k, from RoSPr) of a fine-tuned prompt, which reads the targets' labelled training
      examples (`Evaluator.labelled`); None for the others.
    prepare: the `Prepare` run once, for every method sharing it, before the targets are scored.
  """
  name: str
  predict: Predict | None
  expected: Callable[[Target], float] | None = None
  default: bool = False
  retrieves: bool = False
  needs_library: bool = False
  needs_labels: bool = False
  settings: tuple[str, ...] = ()
  record_file: str | None = None
  load_saved: Callable[[str], dict] | None = None
  needs_multitask_prompt: bool = False
  fine_tune: tuple[int, bool] | None = None
  prepare: Prepare | None = None

  @property
  def needs_backbone(self) -> bool:
    """It scores the target's examples (every method but chance): a record is written for it."""
    return self.expected is None

  @property
  def saves_selection(self) -> bool:
    """It saves its choice (`record_file` and `prompt.npy`) under `<selections_dir>/<target>/<name>/`."""
    return self.record_file is not None

  def files(self) -> tuple[str, str]:
    """The files of its saved selection, whose sha256 its records carry."""
    return (self.record_file, retrieve.PROMPT_FILE)


METHODS: dict[str, Method] = {}  # the methods that are no selection rule, by name, in order


def register(method: Method) -> Method:
  """Adds a method; its name must be new (among the methods and the rules' labels), and it is scored
  (`predict`) or expected (`expected`), not both."""
  if method.name in METHODS or any(rule.label == method.name for rule in selection_lib.RULES.values()):
    raise ValueError(f"A method named {method.name!r} exists.")
  if (method.predict is None) == (method.expected is None):
    raise ValueError(f"Method {method.name!r} needs exactly one of predict and expected.")
  if method.saves_selection and method.load_saved is None:
    raise ValueError(f"Method {method.name!r} saves {method.record_file} but cannot read it back.")
  METHODS[method.name] = method
  return method


def rule_method(rule: selection_lib.Rule) -> Method:
  """The method of a selection rule: named by its label, run by default unless a reference row."""
  return Method(rule.label, functools.partial(_rule_predictions, rule), default=not rule.reference,
                retrieves=True, needs_library=True, settings=rule.settings,
                record_file=retrieve.SELECTION_FILE, load_saved=_load_selection)


def all_methods() -> tuple[Method, ...]:
  """Every method: the registered ones (the hard prompt alone, the oracle, chance, ...), then every
  selection rule (the reference rule Random first, then the paper's rules, then any registered later)."""
  return tuple(METHODS.values()) + tuple(rule_method(rule) for rule in selection_lib.RULES.values())


def default_methods() -> tuple[Method, ...]:
  """The methods run when none are named: the hard prompt alone and every rule but the reference rows."""
  return tuple(m for m in all_methods() if m.default)


def names(methods: Sequence[Method]) -> tuple[str, ...]:
  return tuple(m.name for m in methods)


def get(name: str) -> Method:
  """The method named `name` (a fine-tuned one with any k); an unknown name is refused, naming the
  known rules."""
  if name in METHODS:
    return METHODS[name]
  match = _FINE_TUNED_NAME.fullmatch(name)
  if match and int(match[1]) >= 1:
    return fine_tuned(int(match[1]), bool(match[2]))
  return rule_method(selection_lib.rule_of_label(name))


def is_method(name: str) -> bool:
  """Whether `name` names a method (a registered one, a rule's label, or a fine-tuned one of any k)."""
  try:
    get(name)
  except ValueError:
    return False
  return True


def not_scored_note(selections: dict[str, dict]) -> str:
  """A line naming each (target, method) pair that was not scored and why ("" when every pair was)."""
  pairs = [f"{method} on {target} ({chosen['not_scored']})" for target, by_method in selections.items()
           for method, chosen in by_method.items() if isinstance(chosen, dict) and "not_scored" in chosen]
  return "Not scored, for want of labelled examples apart from the evaluated ones: " + "; ".join(pairs) + "." if pairs else ""


def reference_ticks() -> tuple[str, ...]:
  """The rows the accuracy plot draws as a tick over each dataset, not as a bar: those of no model."""
  return tuple(m.name for m in all_methods() if not m.needs_backbone)


def _predictions(evaluator, target: Target, examples, prompt, description: str) -> list[int]:
  """Each example's predicted choice (the first best on a tie) under `prompt` (None: the hard prompt);
  NaN or infinite scores are refused."""
  scores = evaluator.score(examples, prompt, description)
  accuracy_of(scores, target.is_correct, description)
  return [int(np.argmax(s)) for s in scores]


def _hard_prompt_predictions(evaluator, target: Target, examples, retrieval, where):
  """T0: the examples scored without a soft prompt; it selects nothing."""
  del retrieval, where
  return None, _predictions(evaluator, target, examples, None, f"{target.name} {HARD_PROMPT.name}")


def _select(evaluator, target: Target, rule: selection_lib.Rule, queries: retrieve.TargetQueries
            ) -> tuple[selection_lib.Selection, np.ndarray]:
  """The selection of `rule` for `target` and its (interpolated) prompt [P, H]."""
  retriever = evaluator.retriever
  return retriever.select(queries, rule.name, {"target": target.name, "seed": retriever.seed})


def _rule_predictions(rule: selection_lib.Rule, evaluator, target: Target, examples, retrieval, where):
  """A rule's prompt selected (and saved in `where`, then read back: exactly what was saved is scored)."""
  selected, prompt = _select(evaluator, target, rule, retrieval)
  if where:
    retrieve.save_selection(where, selected, prompt)
    selected, prompt = retrieve.load_selection(where, committed=False)
  return selected.to_dict(), _predictions(evaluator, target, examples, prompt, f"{target.name} {rule.label}")


def _load_selection(directory: str) -> dict:
  return retrieve.load_selection(directory, committed=False)[0].to_dict()


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


def oracle(evaluator, target: Target, examples) -> tuple[dict, np.ndarray]:
  """The best single library prompt for `target`, chosen WITH its labels (a reference row).

  Every library prompt scores all the target's examples (one batched pass, the prompt table indexed
  per example); the highest accuracy wins, the first source on a tie.

  Returns:
    ({"rule": "oracle", "uses_labels": True, "candidates": [S] source ids, "names": [S],
      "accuracies": [S], "chosen": [best], "weights": [1.0], "accuracy": the best one,
      "predictions": [E] the chosen prompt's choice per example, "params": {"target": ...}},
     the chosen prompt [P, H]).
  """
  name, library = ORACLE.name, evaluator.library
  if library is None:
    raise ValueError(f"{name} scores every prompt of a library: it needs one (LIBRARY_DIR).")
  table = np.asarray(library.prompts())  # [S, P, H]
  names_ = list(library.source_names)
  batch = [dataclasses.replace(ex, prompt_id=s) for s in range(len(table)) for ex in examples]
  scores = evaluator.score(batch, table, f"{target.name} {name} ({len(table)} prompts)")
  size = len(examples)
  accuracies = [accuracy_of(scores[s * size:(s + 1) * size], target.is_correct,
                            f"{target.name} {name} (source {names_[s]})") for s in range(len(table))]
  best = oracle_choice(accuracies)
  predictions = [int(np.argmax(s)) for s in scores[best * size:(best + 1) * size]]
  record = {"rule": "oracle", "uses_labels": True, "candidates": list(range(len(table))),
            "names": names_, "accuracies": accuracies, "chosen": [best], "weights": [1.0],
            "accuracy": accuracies[best], "predictions": predictions,
            "params": {"target": target.name, "library": library.name}}
  return record, table[best]


def _oracle_predictions(evaluator, target: Target, examples, retrieval, where):
  """The oracle's choice (saved in `where`): its predictions are the chosen prompt's."""
  del retrieval
  chosen, prompt = oracle(evaluator, target, examples)
  if where:
    storage.save_npy(os.path.join(where, retrieve.PROMPT_FILE), prompt)
    storage.write_json(os.path.join(where, ORACLE_FILE), chosen)
  return chosen, chosen["predictions"]


def _multitask_predictions(evaluator, target: Target, examples, retrieval, where):
  """MT prompt: the examples scored with the one multitask prompt [P, H]; it selects nothing."""
  del retrieval, where
  if evaluator.multitask_prompt is None:
    raise ValueError(f"The method {MULTITASK.name!r} needs a multitask prompt export (MT_PROMPT).")
  return None, _predictions(evaluator, target, examples, evaluator.multitask_prompt,
                            f"{target.name} {MULTITASK.name}")


_FINE_TUNED_NAME = re.compile(r"Fine-tuned \((\d+) labels(, from RoSPr)?\)")


def fine_tuned(k: int, from_rospr: bool) -> Method:
  """The method of a prompt tuned on k labelled training examples of each target, started from
  RoSPr's prompt or from the default initializer (`pipeline.fine_tuning`)."""
  name = f"Fine-tuned ({k} labels{', from ' + ROSPR.name if from_rospr else ''})"
  return Method(name, functools.partial(_fine_tuned_predictions, name), needs_library=from_rospr,
                needs_labels=True, settings=ROSPR.settings if from_rospr else (), record_file=fine_tuning.FILE,
                load_saved=_load_fine_tuned, fine_tune=(k, from_rospr), prepare=_prepare_fine_tuning)


def _load_fine_tuned(directory: str) -> dict:
  return storage.read_json(os.path.join(directory, fine_tuning.FILE), "Fine-tuned prompt record")


def _fine_tuned_predictions(name: str, evaluator, target: Target, examples, tuned, where):
  """A fine-tuned prompt (`tuned`: (record, [P, H]) from `_prepare_fine_tuning`), saved in `where` and
  read back: exactly what was saved is scored."""
  chosen, prompt = tuned
  if where:
    storage.save_npy(os.path.join(where, retrieve.PROMPT_FILE), prompt)
    storage.write_json(os.path.join(where, fine_tuning.FILE), chosen)
    prompt = storage.load_npy(os.path.join(where, retrieve.PROMPT_FILE))
  return chosen, _predictions(evaluator, target, examples, prompt, f"{target.name} {name}")


def _not_scored(evaluator, target: Target, method: Method) -> NotScored | None:
  """Why `method` cannot tune a prompt for `target` (no labelled examples apart from the evaluated
  ones, or fewer than k), or None."""
  k = method.fine_tune[0]
  labelled = (evaluator.labelled or {}).get(target.name)
  if labelled is None or labelled.reason:
    return NotScored(labelled.reason if labelled else f"{target.name}: no labelled training examples were read")
  if len(labelled.ids) < k:
    return NotScored(f"{target.name}: its {labelled.split} split has {len(labelled.ids)} labelled examples "
                     f"apart from the evaluated ones, fewer than k = {k}")
  return None


def _fine_tuning_plan(evaluator, target: Target, method: Method) -> fine_tuning.Plan:
  """What `method` tunes for `target`: its first k labelled examples, from RoSPr's prompt or not."""
  k, from_rospr = method.fine_tune
  start = None
  if from_rospr:
    _, start = _select(evaluator, target, selection_lib.get_rule("rospr"), evaluator.queries(target))
  return fine_tuning.Plan(f"{target.name}|{method.name}", target.name, evaluator.labelled[target.name], k, start)


def _prepare_fine_tuning(evaluator, targets: Sequence[Target], methods: Sequence[Method], resumed: dict) -> dict:
  """Tunes the prompts of every (target, fine-tuned method) in one run (`fine_tuning.train_jointly`),
  unless every pair that can be scored was scored already; returns {(target, method): (record,
  [P, H]) or NotScored}."""
  out, scorable = {}, []
  for target in targets:
    for method in methods:
      reason = _not_scored(evaluator, target, method)
      if reason:
        out[target.name, method.name] = reason
      else:
        scorable.append((target, method))
  if all((t.name, m.name) in resumed for t, m in scorable):
    return out
  plans = {(t.name, m.name): _fine_tuning_plan(evaluator, t, m) for t, m in scorable}
  config, library = evaluator.fine_tune, evaluator.library
  length = library.prompts().shape[1] if library is not None else config.prompt_length
  table = fine_tuning.train_jointly(evaluator, list(plans.values()), config, length)
  steps = fine_tuning.num_steps(config, sum(p.k for p in plans.values()))
  for (key, plan), prompt in zip(plans.items(), table):
    start = ({"from": ROSPR.name, "prompt_sha256": hashlib.sha256(np.ascontiguousarray(
        plan.start, np.float32).tobytes()).hexdigest()} if plan.start is not None else
             {"from": "default initializer (random uniform, scale 0.5)", "seed": config.seed})
    out[key] = (fine_tuning.record(plan, config, steps, start), prompt)
  return out


# The order of `all_methods()`: the hard prompt alone, the oracle, chance, then the rules.
HARD_PROMPT = register(Method("T0", _hard_prompt_predictions, default=True))
ORACLE = register(Method("Oracle (labels)", _oracle_predictions, needs_library=True, needs_labels=True,
                         record_file=ORACLE_FILE, load_saved=lambda directory: load_oracle(directory)[0]))
CHANCE = register(Method("chance", None, expected=lambda target: chance_accuracy(target.is_correct)))
# The rules' methods the demo and its analysis name (their names are the rules' labels).
ROSPR = rule_method(selection_lib.get_rule("rospr"))
RANDOM = rule_method(selection_lib.get_rule("random"))
# The baselines (reference rows, evaluated when METHODS names them): one multitask prompt, and prompts
# fine-tuned on k labelled training examples of each target (k = 16 and 32 listed; any k by name).
MULTITASK = register(Method("MT prompt", _multitask_predictions, needs_multitask_prompt=True))
FINE_TUNE_LABELS = (16, 32)
FINE_TUNED = tuple(register(fine_tuned(k, from_rospr)) for k in FINE_TUNE_LABELS for from_rospr in (True, False))

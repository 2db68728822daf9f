"""From a target's unlabeled inputs to a selection and its (interpolated) prompt: the `Retriever`.

    library = store.Library.open(library_dir, retriever=embedder.fingerprint, dim=embedder.dim)
    retriever = Retriever(library, functools.partial(embedder.embed_texts, tokenize=tok.encode_input),
                          SelectionConfig(num_neighbors=10))
    queries = retriever.queries(target_queries)  # Q sampled (seeded), embedded once
    selection, prompt = retriever.select(queries, "inter", {"target": name})

The same `Retriever` serves the `rospr retrieve` command, the evaluation and the demo: it samples the
queries, embeds them, memoizes VAR's predictions (made by a `predictor` its caller hands it: retrieval
never scores) and applies every rule to the same neighbours.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np

from rospr_jax import storage
from rospr_jax.library import store
from rospr_jax.retrieval import selection as selection_lib

DEFAULT_NUM_QUERIES = selection_lib.SelectionConfig.num_queries  # Q
SELECTION_FILE = "selection.json"
PROMPT_FILE = "prompt.npy"
SELECTION_KIND = "rospr_selection"  # the manifest's "kind" of `rospr retrieve --out`
SELECTION = storage.ManifestKind("Selection", SELECTION_KIND, required=("files",),
                                 rebuild="Run rospr retrieve again.")


def sample_queries(num_inputs: int, num_queries: int = DEFAULT_NUM_QUERIES,
                   seed: int = 0) -> np.ndarray:
  """Indices of the Q query inputs of a target: min(Q, num_inputs) drawn without replacement.

  Returns:
    [Q'] sorted int64 indices into the target's inputs.
  """
  if num_inputs < 1:
    raise ValueError("The target has no inputs to draw queries from.")
  if num_queries < 1:
    raise ValueError(f"num_queries must be >= 1; got {num_queries}.")
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_inputs, size=min(num_queries, num_inputs), replace=False))


def retrieve_prompt(library: store.Library, query_embeddings, rule: str,
                    config: selection_lib.SelectionConfig = selection_lib.SelectionConfig(), *,
                    predict_choices: selection_lib.PredictChoices | None = None,
                    num_choices: Sequence[int] | None = None, searcher: str = "auto",
                    params: dict | None = None):
  """Searches the library with the queries and applies a selection rule.

  Args:
    library: an opened library.
    query_embeddings: [Q, D] embeddings of the target's queries (the library's retriever).
    rule: the name of a rule of `selection.RULES`.
    config: N neighbours per query and the rules' settings (`selection.select`; the Random row draws
      from all the library's sources, seeded by `config.random_seed` and `params["target"]`).
    predict_choices, num_choices: VAR's predictions and the [Q] choice counts (`selection.select`).
    searcher: "auto" (the library's index), "scann" or "exact".
    params: facts recorded in the selection (e.g. the target's name and the query seed).

  Returns:
    (Selection with names filled in, prompt [P, H] = sum_i weights[i] * prompts[chosen[i]]).
  """
  sources, sims = library.neighbors(query_embeddings, config.num_neighbors, kind=searcher)  # [Q, N] each
  chosen = selection_lib.select(rule, sources, sims, num_prompts=config.num_prompts, top_k=config.top_k,
                                eps=config.eps, predict_choices=predict_choices, num_choices=num_choices,
                                random_seed=config.random_seed, num_sources=len(library.source_names),
                                target=(params or {}).get("target"))
  record = {"library": library.name, "searcher": searcher, **chosen.params, **(params or {})}
  chosen = dataclasses.replace(chosen, params=record).with_names(library.source_names)
  prompt = selection_lib.interpolate(library.prompts(), chosen.chosen, chosen.weights)
  return chosen, prompt


@dataclasses.dataclass(frozen=True)
class TargetQueries:
  """A target's Q sampled queries, embedded once, with VAR's memoized predictions: what every rule reads.

  Attributes:
    indices: [Q] sorted indices of the sampled queries among the target's inputs.
    embeddings: [Q, D] their embeddings (the library's retriever).
    predict_choices: VAR's predictions on them (`selection.PredictChoices`, each candidate list scored
      once), or None when no predictor was given.
    num_choices: [Q] answer choices per query (VAR's), or None with no predictor.
  """
  indices: np.ndarray
  embeddings: np.ndarray
  predict_choices: selection_lib.PredictChoices | None
  num_choices: tuple[int, ...] | None


def _memoized(predict: selection_lib.PredictChoices) -> selection_lib.PredictChoices:
  """`predict` scoring each list of candidate ids once (VAR and INTER+VAR share K candidates)."""
  cache: dict[tuple[int, ...], Any] = {}

  def predict_choices(ids):
    key = tuple(int(i) for i in ids)
    if key not in cache:
      cache[key] = predict(list(key))
    return cache[key]
  return predict_choices


@dataclasses.dataclass(frozen=True)
class Retriever:
  """Retrieval for one library: queries sampled and embedded, then any rule applied to them.

  Attributes:
    library: an opened `store.Library`.
    embed: texts [Q] -> [Q, D] embeddings with the library's retriever (`Embedder.embed_texts` bound
      to the tokenizer).
    config: Q, N and the rules' settings (`selection.SelectionConfig`), taken whole.
    seed: the query draw's seed (`sample_queries`).
    predictor: queries [Q] (with `.text` and `.choices`) -> VAR's `PredictChoices` under the library's
      prompts (`eval.var.make_predict_choices` bound to a scorer); None: rules that need the backbone
      are refused.
    searcher: "auto" (the library's index), "scann" or "exact".
  """
  library: store.Library
  embed: Callable[[Sequence[str]], np.ndarray]
  config: selection_lib.SelectionConfig = selection_lib.SelectionConfig()
  seed: int = 0
  predictor: Callable[[Sequence[Any]], selection_lib.PredictChoices] | None = None
  searcher: str = "auto"

  def queries(self, queries: Sequence[Any]) -> TargetQueries:
    """Samples Q of a target's `queries` (anything with `.text`, and `.choices` for VAR) and embeds them."""
    picked = sample_queries(len(queries), self.config.num_queries, self.seed)
    sampled = [queries[i] for i in picked]
    predict = None if self.predictor is None else _memoized(self.predictor(sampled))  # refuses bad queries
    num_choices = None if predict is None else tuple(len(q.choices) for q in sampled)
    return TargetQueries(picked, self.embed([q.text for q in sampled]), predict, num_choices)

  def select(self, queries: TargetQueries, rule: str, params: dict | None = None
             ) -> tuple[selection_lib.Selection, np.ndarray]:
    """The selection of `rule` (a name of `selection.RULES`) from the sampled queries, recording
    `params`, and its (interpolated) prompt [P, H] (`retrieve_prompt`)."""
    return retrieve_prompt(self.library, queries.embeddings, rule, self.config,
                           predict_choices=queries.predict_choices, num_choices=queries.num_choices,
                           searcher=self.searcher, params=params)


def save_selection(directory: str, chosen: selection_lib.Selection, prompt: np.ndarray) -> None:
  """Writes `selection.json` and `prompt.npy` [P, H] into `directory`, each atomically."""
  storage.save_npy(os.path.join(directory, PROMPT_FILE), prompt)
  storage.write_text(os.path.join(directory, SELECTION_FILE), chosen.to_json() + "\n")


def load_selection(directory: str, *, committed: bool = True) -> tuple[selection_lib.Selection, np.ndarray]:
  """Reads what `save_selection` wrote: (Selection, prompt [P, H]). A `rospr retrieve --out` folder
  (`committed`) is read once its manifest is checked (kind, and the files' sha256); an evaluation's
  record folder (not `committed`) holds the two files alone, each written whole."""
  if committed:
    SELECTION.read(directory)
  paths = [os.path.join(directory, name) for name in (SELECTION_FILE, PROMPT_FILE)]
  for path in paths:
    if not storage.as_path(path).is_file():
      raise FileNotFoundError(f"Selection directory {directory} is missing {os.path.basename(path)}.")
  chosen = selection_lib.Selection.from_json(storage.as_path(paths[0]).read_text())
  return chosen, storage.load_npy(paths[1])

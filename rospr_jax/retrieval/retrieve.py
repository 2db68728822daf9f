"""From a target's query embeddings to a selection and its (interpolated) prompt.

    library = store.Library.open(library_dir, retriever=embedder.fingerprint, dim=embedder.dim)
    queries = embedder.embed_texts([texts[i] for i in sample_queries(len(texts), 32, seed)], tok)
    selection, prompt = retrieve_prompt(library, queries, "inter", num_neighbors=10)

The same function serves the `rospr retrieve` command, the evaluation and the demo.
"""

from __future__ import annotations

import os

import numpy as np

from rospr_jax import storage
from rospr_jax.library import store
from rospr_jax.retrieval import selection as selection_lib

DEFAULT_NUM_QUERIES = selection_lib.SelectionConfig.num_queries  # Q
DEFAULT_NUM_NEIGHBORS = selection_lib.SelectionConfig.num_neighbors  # N
SELECTION_FILE = "selection.json"
PROMPT_FILE = "prompt.npy"
SELECTION_KIND = "rospr_selection"  # the manifest's "kind" of `rospr retrieve --out`


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


def retrieve_prompt(library: store.Library, query_embeddings, rule: str, *,
                    num_neighbors: int = DEFAULT_NUM_NEIGHBORS,
                    num_prompts: int = selection_lib.DEFAULT_NUM_PROMPTS,
                    top_k: int = selection_lib.DEFAULT_TOP_K, eps: float = selection_lib.DEFAULT_EPS,
                    predict_choices: selection_lib.PredictChoices | None = None, num_choices=None,
                    random_seed: int = selection_lib.DEFAULT_RANDOM_SEED, searcher: str = "auto",
                    params: dict | None = None):
  """Searches the library with the queries and applies a selection rule.

  Args:
    library: an opened library.
    query_embeddings: [Q, D] embeddings of the target's queries (the library's retriever).
    rule: the name of a rule of `selection.RULES`.
    num_neighbors: N neighbours per query.
    num_prompts, top_k, eps, predict_choices, num_choices, random_seed: see `selection.select` (the
      Random row draws from all the library's sources, seeded by `random_seed` and `params["target"]`).
    searcher: "auto" (the library's index), "scann" or "exact".
    params: facts recorded in the selection (e.g. the target's name and the query seed).

  Returns:
    (Selection with names filled in, prompt [P, H] = sum_i weights[i] * prompts[chosen[i]]).
  """
  sources, sims = library.neighbors(query_embeddings, num_neighbors, kind=searcher)  # [Q, N] each
  chosen = selection_lib.select(rule, sources, sims, num_prompts=num_prompts, top_k=top_k, eps=eps,
                                predict_choices=predict_choices, num_choices=num_choices,
                                random_seed=random_seed, num_sources=len(library.source_names),
                                target=(params or {}).get("target"))
  record = {"library": library.name, "searcher": searcher, **chosen.params, **(params or {})}
  chosen = selection_lib.Selection.from_dict({**chosen.to_dict(), "params": record})
  chosen = chosen.with_names(library.source_names)
  prompt = selection_lib.interpolate(library.prompts(), chosen.chosen, chosen.weights)
  return chosen, prompt


def save_selection(directory: str, chosen: selection_lib.Selection, prompt: np.ndarray) -> None:
  """Writes `selection.json` and `prompt.npy` [P, H] into `directory`, each atomically."""
  storage.save_npy(os.path.join(directory, PROMPT_FILE), prompt)
  storage.write_text(os.path.join(directory, SELECTION_FILE), chosen.to_json() + "\n")


def load_selection(directory: str) -> tuple[selection_lib.Selection, np.ndarray]:
  """Reads what `save_selection` wrote: (Selection, prompt [P, H])."""
  paths = [os.path.join(directory, name) for name in (SELECTION_FILE, PROMPT_FILE)]
  for path in paths:
    if not storage.as_path(path).is_file():
      raise FileNotFoundError(f"Selection directory {directory} is missing {os.path.basename(path)}.")
  chosen = selection_lib.Selection.from_json(storage.as_path(paths[0]).read_text())
  return chosen, storage.load_npy(paths[1])

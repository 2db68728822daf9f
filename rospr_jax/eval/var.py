"""VAR's rank classification: the predicted answer position of every query under candidate prompts.

VAR (`rospr_jax.retrieval.selection.var`) penalizes a candidate prompt whose predictions collapse
onto one choice; it takes the predictions as a callable (`selection.PredictChoices`), made here from
the backbone and the encode-once scorer and handed to it by the caller (`rospr_jax.pipeline.evaluate`,
`rospr retrieve`): retrieval needs no model and never imports eval, and eval knows nothing of the
library or of retrieval (a query is anything with `.text` and `.choices`, as `library.sources.Query`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, Sequence

import numpy as np

from rospr_jax.eval.batching import T0_INPUT_LENGTH, RankExample, Scorer


class RankQuery(Protocol):
  """One unlabeled input of a target with its rendered answer choices."""
  text: str
  choices: Sequence[str] | None


# predict_choices(prompt_ids [K]) -> K lists [Q] of predicted choice positions.
PredictChoices = Callable[[Sequence[int]], list[list[int]]]


def make_predict_choices(queries: Sequence[RankQuery], *, scorer: Scorer, prompts: np.ndarray,
                         tokenizer) -> PredictChoices:
  """The K candidate prompts on the Q queries in one batched pass.

  Args:
    queries: [Q] queries with their answer choices.
    scorer: the backbone (T0) the prompts were trained for, bound to its scoring batch size and layout;
      VAR reads whole queries (T0's input length) without progress bars, in `rospr retrieve` and in
      the evaluation alike.
    prompts: [S, P, H] the library's prompt table.
    tokenizer: `rospr_jax.tokenization.Tokenizer` (inputs without EOS, choices with EOS).

  Returns:
    predict_choices(ids [K]) -> [K] lists [Q] of argmax choice positions (first on a tie).
  """
  missing = [i for i, q in enumerate(queries) if not q.choices]
  if missing:
    raise ValueError(f"VAR needs the answer choices of every query; queries {missing[:10]} have none.")
  if prompts.shape[-1] != scorer.model.config.emb_dim:
    raise ValueError(f"The library's prompts have H = {prompts.shape[-1]}; the backbone has "
                     f"H = {scorer.model.config.emb_dim}.")
  score = dataclasses.replace(scorer, max_input_length=T0_INPUT_LENGTH, progress_bars=False)
  inputs = [tokenizer.encode_input(q.text) for q in queries]
  choices = [[tokenizer.encode_target(c) for c in q.choices] for q in queries]

  def predict_choices(ids):
    examples = [RankExample(inputs[q], choices[q], prompt_id=int(s))
                for s in ids for q in range(len(queries))]
    scores = score(examples, prompts)
    bad = sorted({int(ids[i // len(queries)]) for i, s in enumerate(scores) if not np.all(np.isfinite(s))})
    if bad:
      raise FloatingPointError(f"VAR: the queries' choice scores under prompts {bad[:10]} are NaN or "
                               "infinite; the backbone's weights or those prompts are not finite.")
    predictions = [int(np.argmax(s)) for s in scores]
    return [predictions[k * len(queries):(k + 1) * len(queries)] for k in range(len(ids))]

  return predict_choices

"""`rospr retrieve`: choose the prompt (or mixture) for one target from its unlabeled inputs.

    rospr retrieve --library LIB --queries target.jsonl --vocab spiece.model --retriever CKPT \
        --rule inter --out OUT [--target "rte:GPT-3 style"]
    rospr retrieve ... --rule var --backbone T0_CKPT     # VAR rank-classifies with the backbone

`target.jsonl` holds the target's inputs rendered with its template, {"text": ..., "choices": [...]}
per line (choices are needed by VAR and INTER+VAR only). Q of them (seeded) are embedded with the
library's retriever; OUT receives `selection.json` (candidates, frequencies, variances, scores,
weights, chosen prompt ids and names) and `prompt.npy` [P, H], the chosen or interpolated prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np

from rospr_jax import paths
from rospr_jax.library import build, sources as sources_lib, store
from rospr_jax.retrieval import retrieve, selection


def make_predict_choices(params, config, queries: Sequence[sources_lib.Query], prompts: np.ndarray,
                         tokenizer, *, batch_size: int = 32) -> selection.PredictChoices:
  """VAR's rank classification: the K candidate prompts on the Q queries in one batched pass.

  Args:
    params, config: the backbone (T0) the prompts were trained for.
    queries: [Q] queries with their answer choices.
    prompts: [S, P, H] the library's prompt table.
    tokenizer: `rospr_jax.tokenization.Tokenizer` (inputs without EOS, choices with EOS).
    batch_size: examples per scoring batch.

  Returns:
    predict_choices(ids [K]) -> [K] lists [Q] of argmax choice positions (first on a tie).
  """
  from rospr_jax.eval.batching import RankExample, score_examples  # pylint: disable=g-import-not-at-top
  missing = [i for i, q in enumerate(queries) if not q.choices]
  if missing:
    raise ValueError(f"VAR needs the answer choices of every query; queries {missing[:10]} have none.")
  if prompts.shape[-1] != config.emb_dim:
    raise ValueError(f"The library's prompts have H = {prompts.shape[-1]}; the backbone has "
                     f"H = {config.emb_dim}.")
  inputs = [tokenizer.encode_input(q.text) for q in queries]
  choices = [[tokenizer.encode_target(c) for c in q.choices] for q in queries]

  def predict_choices(ids):
    examples = [RankExample(inputs[q], choices[q], prompt_id=int(s))
                for s in ids for q in range(len(queries))]
    scores = score_examples(params, config, examples, prompts=prompts, batch_size=batch_size)
    predictions = [int(np.argmax(s)) for s in scores]
    return [predictions[k * len(queries):(k + 1) * len(queries)] for k in range(len(ids))]

  return predict_choices


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr retrieve", description=__doc__.splitlines()[0])
  parser.add_argument("--library", required=True, help="Library directory (rospr build-library).")
  parser.add_argument("--queries", required=True, help="JSONL of the target's rendered inputs.")
  parser.add_argument("--out", required=True, help="Directory for selection.json and prompt.npy.")
  parser.add_argument("--target", default=None, help="Target name, recorded in the selection.")
  parser.add_argument("--rule", default="rospr", choices=selection.RULES)
  parser.add_argument("--num-queries", type=int, default=retrieve.DEFAULT_NUM_QUERIES, help="Q.")
  parser.add_argument("--num-neighbors", type=int, default=retrieve.DEFAULT_NUM_NEIGHBORS, help="N.")
  parser.add_argument("--num-prompts", type=int, default=selection.DEFAULT_NUM_PROMPTS,
                      help="N' of INTER and INTER+VAR.")
  parser.add_argument("--top-k", type=int, default=selection.DEFAULT_TOP_K,
                      help="Candidates VAR scores.")
  parser.add_argument("--eps", type=float, default=selection.DEFAULT_EPS, help="VAR's eps.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the query draw.")
  parser.add_argument("--searcher", default="auto", choices=["auto", *store.INDEX_KINDS])
  parser.add_argument("--backbone", help="Backbone checkpoint for VAR's rank classification.")
  parser.add_argument("--batch-size", type=int, default=32, help="VAR scoring batch size.")
  parser.add_argument("--no-verify", action="store_true", help="Skip the library's checksums.")
  build.add_retriever_arguments(parser)
  args = parser.parse_args(argv)
  try:
    paths.require_local_args(args)
    if not paths.writes_outputs():  # retrieval runs on one host's devices: one host is enough
      print("rospr retrieve: not process 0 of this multi-host run; process 0 retrieves.")
      return 0
    if args.rule in ("var", "inter_var") and not args.backbone:
      raise ValueError(f"--rule {args.rule} rank-classifies the queries: give --backbone.")
    embedder, tokenize = build.embedder_from_args(args)
    library = store.Library.open(args.library, dim=embedder.dim, retriever=embedder.fingerprint,
                                 verify=not args.no_verify)
    queries = sources_lib.read_queries(args.queries)
    picked = retrieve.sample_queries(len(queries), args.num_queries, args.seed)
    queries = [queries[i] for i in picked]
    predict_choices = num_choices = None
    if args.rule in ("var", "inter_var"):
      from rospr_jax import tokenization  # pylint: disable=g-import-not-at-top
      from rospr_jax.model import checkpoints  # pylint: disable=g-import-not-at-top
      config, params = checkpoints.load_checkpoint(args.backbone)
      predict_choices = make_predict_choices(params, config.replace(dtype=embedder.config.dtype),
                                             queries, library.prompts(),
                                             tokenization.Tokenizer(args.vocab),
                                             batch_size=args.batch_size)
      num_choices = [len(q.choices) for q in queries]
    query_embeddings = embedder.embed_texts([q.text for q in queries], tokenize)
    chosen, prompt = retrieve.retrieve_prompt(
        library, query_embeddings, args.rule, num_neighbors=args.num_neighbors,
        num_prompts=args.num_prompts, top_k=args.top_k, eps=args.eps,
        predict_choices=predict_choices, num_choices=num_choices, searcher=args.searcher,
        params={"target": args.target, "queries_file": args.queries, "query_seed": args.seed,
                "query_indices": picked.tolist()})
    retrieve.save_selection(args.out, chosen, prompt)
  except (ValueError, FileNotFoundError) as e:
    print(f"rospr retrieve: {e}", file=sys.stderr)
    return 2
  names = [chosen.names[chosen.candidates.index(i)] for i in chosen.chosen]
  print(json.dumps({"rule": chosen.rule, "chosen": list(chosen.chosen), "names": names,
                    "weights": list(chosen.weights), "out": args.out}))
  return 0

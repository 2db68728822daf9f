"""`rospr retrieve`: choose the prompt (or mixture) for one target from its unlabeled inputs.

    rospr retrieve --library LIB --queries target.jsonl --vocab spiece.model --retriever CKPT \
        --rule inter --out OUT [--target super_glue_rte_GPT_3_style]
    rospr retrieve ... --rule var --backbone T0_CKPT     # VAR rank-classifies with the backbone

`target.jsonl` holds the target's inputs rendered with its template, {"text": ..., "choices": [...],
"target": ...} per line (choices are needed by VAR and INTER+VAR only; `rospr tasks --show NAME
--queries FILE` writes it, recording the target, and a file of another target than --target is
refused). Q of them (seeded) are embedded with the
library's retriever; OUT receives `selection.json` (candidates, frequencies, variances, scores,
weights, chosen prompt ids and names) and `prompt.npy` [P, H], the chosen or interpolated prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys

from rospr_jax import multihost, storage
from rospr_jax.commands import common
from rospr_jax.library import sources as sources_lib, store
from rospr_jax.retrieval import retrieve, selection


PROG = "rospr retrieve"


# Help of the flags made from `SelectionConfig`'s fields (`--num-queries`, ...; defaults from it).
SELECTION_HELP = {"num_queries": "Q: target inputs embedded as queries.",
                  "num_neighbors": "N: library neighbours per query.",
                  "num_prompts": "N': prompts interpolated by INTER and INTER+VAR.",
                  "top_k": "K: candidates VAR scores.",
                  "eps": "VAR's eps.",
                  "random_seed": "Seed of the random rule's draw (with --target's name)."}


# The path flags (each read through its local copy when at a URL).
OUTPUT = common.FolderCommand("out", retrieve.SELECTION_KIND, "the selection", files=("queries", "vocab"),
                              folders=("library", "retriever", "backbone"))


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  parser.add_argument("--library", required=True, help="Library directory (rospr build-library).")
  parser.add_argument("--queries", required=True, help="JSONL of the target's rendered inputs.")
  parser.add_argument("--out", required=True, help="Directory for selection.json and prompt.npy.")
  parser.add_argument("--overwrite", action="store_true",
                      help="Replace the selection already at --out (never a folder of other files).")
  parser.add_argument("--target", default=None,
                      help="Target name (a task name), recorded in the selection; a queries file of another "
                           "target is refused (default: the target the queries file names).")
  parser.add_argument("--rule", default="rospr", choices=list(selection.RULES),
                      help="The selection rule (those marked * need --backbone): " + ", ".join(
                          f"{r.name}{'*' if r.needs_backbone else ''} ({r.label})"
                          for r in selection.RULES.values()))
  counts = ("num_queries", "num_neighbors", "num_prompts", "top_k")  # argparse names the flag it refuses
  for field in dataclasses.fields(selection.SelectionConfig):
    parser.add_argument("--" + field.name.replace("_", "-"),
                        type=common.positive_int if field.name in counts else type(field.default),
                        default=field.default,
                        help=f"{SELECTION_HELP.get(field.name, field.name)} (default {field.default})")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the query draw.")
  parser.add_argument("--searcher", default="auto", choices=["auto", *store.INDEX_KINDS])
  parser.add_argument("--backbone", help="Backbone checkpoint for VAR's rank classification.")
  parser.add_argument("--batch-size", type=common.positive_int, default=32, help="VAR scoring batch size.")
  parser.add_argument("--no-verify", action="store_true", help="Skip the library's checksums.")
  common.add_retriever_arguments(parser, backbone_flag="--backbone")
  return parser


def _var_predictor(args: argparse.Namespace, library: store.Library):
  """VAR's predictor (`eval.var.make_predict_choices`): the --backbone scores the queries under the
  library's prompts (refused before any scoring when they were trained for another backbone)."""
  from rospr_jax.backbone import load_backbone  # pylint: disable=g-import-not-at-top
  from rospr_jax.eval.batching import Scorer  # pylint: disable=g-import-not-at-top
  from rospr_jax.eval.var import make_predict_choices  # pylint: disable=g-import-not-at-top
  backbone = load_backbone(args.backbone, dtype=args.dtype, vocabulary=args.vocab)
  library.check_prompts_fit(backbone.fingerprint, backbone.config.emb_dim)
  return functools.partial(make_predict_choices, scorer=Scorer(backbone.params, backbone.model,
                                                               batch_size=args.batch_size),
                           prompts=library.prompts(), tokenizer=backbone.tokenizer())


def main(argv: list[str]) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  # VAR's scores not finite (the backbone or the prompts): exit 1.
  return OUTPUT.run(PROG, args, lambda: _retrieve(args), overwrite=args.overwrite,
                    failures=((FloatingPointError, 1),))


def _retrieve(args: argparse.Namespace) -> str:
  """Every process embeds its share of the queries (and VAR scores them on its own devices, alike);
  process 0 writes the selection. Returns the rule's choice, as JSON."""
  rule = selection.get_rule(args.rule)
  config = selection.SelectionConfig(**{f.name: getattr(args, f.name)
                                        for f in dataclasses.fields(selection.SelectionConfig)})
  if rule.needs_backbone and not args.backbone:
    raise ValueError(f"--rule {args.rule} rank-classifies the queries: give --backbone.")
  embedder, tokenizer = common.embedder_from_args(args)
  library = store.Library.open(args.library, dim=embedder.dim, retriever=embedder.fingerprint,
                               verify=not args.no_verify, name=storage.absolute(args.library))
  library.check_num_neighbors(config.num_neighbors, "--num-neighbors")
  queries = sources_lib.read_queries(args.queries, args.target)  # a file of another target is refused
  target = args.target or next((q.target for q in queries if q.target), None)
  predictor = _var_predictor(args, library) if rule.needs_backbone else None
  retriever = retrieve.Retriever(library, functools.partial(embedder.embed_texts, tokenize=tokenizer.encode_input),
                                 config, args.seed, predictor, searcher=args.searcher)
  sampled = retriever.queries(queries)
  chosen, prompt = retriever.select(sampled, rule.name, {
      "target": target, "queries_file": storage.absolute(args.queries), "query_seed": args.seed,
      "query_indices": sampled.indices.tolist()})
  if multihost.is_writer():
    with storage.output_folder(args.out, "--out", kind=retrieve.SELECTION_KIND, overwrite=args.overwrite) as out:
      retrieve.save_selection(out, chosen, prompt)
  names = [chosen.names[chosen.candidates.index(i)] for i in chosen.chosen]
  return json.dumps({"rule": chosen.rule, "chosen": list(chosen.chosen), "names": names,
                     "weights": list(chosen.weights), "out": args.out})


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

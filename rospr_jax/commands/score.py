"""`rospr score`: rank the answer choices of one input with a T0 checkpoint.

    rospr score --checkpoint DIR [--vocab SPM] --input TEXT --choice TEXT --choice TEXT ...

Prints JSON {"choices": [...], "scores": [...], "prediction": index}; a score is the choice's summed
token log-probability under T0's protocol (input without EOS, choice with EOS, no length normalization).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from rospr_jax.commands import common

PROG = "rospr score"


def _text_problem(flag: str, text: str) -> str | None:
  """Why `text` cannot be scored (not UTF-8 as the terminal passed it, or empty), or None."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 arrive as surrogate escapes
    raw = text.encode("utf-8", "surrogateescape")
    return (f"{flag} is not UTF-8 text (byte 0x{raw[len(text[:e.start].encode('utf-8', 'surrogateescape'))]:02x} "
            f"at character {e.start}); pass it in UTF-8.")
  if not text.strip():
    what = "an empty answer choice would be scored on its EOS alone" if flag.startswith("--choice") else \
        "there is nothing to rank the choices for"
    return f"{flag} is empty: {what}; give its text."
  return None


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, help="Hugging Face or T5X checkpoint directory.")
  parser.add_argument("--vocab", help="SentencePiece model (default: the one in --checkpoint).")
  parser.add_argument("--input", required=True, help="The input text (hard prompt applied).")
  parser.add_argument("--choice", action="append", required=True, help="An answer choice; repeat.")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="Parameter and activation dtype.")
  args = parser.parse_args(argv)
  problem = _text_problem("--input", args.input) or next(
      filter(None, (_text_problem(f"--choice {i + 1} of {len(args.choice)}", c) for i, c in enumerate(args.choice))),
      None)
  if problem:
    return common.error(PROG, problem)

  from rospr_jax.backbone import load_backbone  # pylint: disable=g-import-not-at-top  (heavy imports after parsing)
  from rospr_jax.eval.batching import RankExample, score_examples  # pylint: disable=g-import-not-at-top
  try:
    common.local_copies_of_args(args, ("checkpoint", "vocab"))  # a URL: read through its local copy
    backbone = load_backbone(args.checkpoint, dtype=args.dtype, vocabulary=args.vocab)
    tokenizer = backbone.tokenizer()
  except (OSError, ValueError) as e:
    return common.error(PROG, e)
  example = RankExample(tokenizer.encode_input(args.input), [tokenizer.encode_target(c) for c in args.choice])
  scores = score_examples(backbone.params, backbone.model, [example], batch_size=1)[0]
  if not np.all(np.isfinite(scores)):
    return common.error(PROG, f"the scores {scores.tolist()} are not finite: the checkpoint "
                              f"{args.checkpoint} holds NaN or infinite weights.")
  result = {"choices": args.choice, "scores": [float(s) for s in scores],
            "prediction": int(scores.argmax())}
  print(json.dumps(result))
  return 0

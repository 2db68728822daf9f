"""`rospr score`: rank the answer choices of one input with a T0 checkpoint.

    rospr score --checkpoint DIR [--vocab SPM] --input TEXT --choice TEXT --choice TEXT ...

Prints JSON {"choices": [...], "scores": [...], "prediction": index}; a score is the choice's summed
token log-probability under T0's protocol (input without EOS, choice with EOS, no length normalization).
"""

from __future__ import annotations

import argparse
import json
import sys

import jax.numpy as jnp

from rospr_jax import tokenization


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr score", description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, help="Hugging Face or T5X checkpoint directory.")
  parser.add_argument("--vocab", help="SentencePiece model (default: the one in --checkpoint).")
  parser.add_argument("--input", required=True, help="The input text (hard prompt applied).")
  parser.add_argument("--choice", action="append", required=True, help="An answer choice; repeat.")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="Parameter and activation dtype.")
  args = parser.parse_args(argv)

  from rospr_jax.eval.batching import RankExample, score_examples  # Heavy imports after parsing.
  from rospr_jax.model import checkpoints

  tokenizer = tokenization.Tokenizer(args.vocab or tokenization.find_sentencepiece_model(args.checkpoint))
  dtype = jnp.dtype(args.dtype)
  config, params = checkpoints.load_checkpoint(args.checkpoint, dtype=dtype)
  config = config.replace(dtype=dtype)
  if tokenizer.vocab_size > config.vocab_size:
    print(f"rospr score: the vocabulary {tokenizer.path} has {tokenizer.vocab_size} pieces but the model "
          f"only {config.vocab_size} embeddings.", file=sys.stderr)
    return 2
  example = RankExample(tokenizer.encode_input(args.input), [tokenizer.encode_target(c) for c in args.choice])
  scores = score_examples(params, config, [example], batch_size=1)[0]
  result = {"choices": args.choice, "scores": [float(s) for s in scores],
            "prediction": int(scores.argmax())}
  print(json.dumps(result))
  return 0

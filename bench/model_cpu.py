"""Forward time of the Flax T5 against Hugging Face's PyTorch T5 on this CPU, same shape, same weights.

Usage: python bench/model_cpu.py [--size small] [--batch 4] [--inputs 256] [--targets 32]
Prints a markdown table; the ratio is PyTorch time / JAX time (above 1: JAX is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from common import forward_flops, markdown_table, median_time
from rospr_jax.model import T5, checkpoints, get_config, shift_right


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--inputs", type=int, default=256)
  parser.add_argument("--targets", type=int, default=32)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  config = get_config(args.size)
  torch.manual_seed(0)
  hf_config = transformers.T5Config(
      vocab_size=config.vocab_size, d_model=config.emb_dim, d_kv=config.head_dim, d_ff=config.mlp_dim,
      num_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
      num_heads=config.num_heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=0.0)
  hf_model = transformers.T5ForConditionalGeneration(hf_config).eval()
  with tempfile.TemporaryDirectory() as tmp:
    hf_model.save_pretrained(tmp)
    config, params = checkpoints.load_checkpoint(tmp)

  rng = np.random.default_rng(0)
  inputs = rng.integers(3, config.vocab_size, (args.batch, args.inputs))
  targets = rng.integers(3, config.vocab_size, (args.batch, args.targets))
  decoder_inputs = np.asarray(shift_right(jnp.asarray(targets)))

  forward = jax.jit(lambda p, e, d: T5(config).apply({"params": p}, e, d))
  jax_inputs = (params, jnp.asarray(inputs, jnp.int32), jnp.asarray(decoder_inputs, jnp.int32))
  jax_logits = forward(*jax_inputs)
  jax_time = median_time(lambda: forward(*jax_inputs).block_until_ready(), reps=args.reps)

  torch_inputs = dict(input_ids=torch.tensor(inputs), decoder_input_ids=torch.tensor(decoder_inputs))
  with torch.no_grad():
    torch_logits = hf_model(**torch_inputs).logits.numpy()
    torch_time = median_time(lambda: hf_model(**torch_inputs), reps=args.reps)

  max_diff = float(np.abs(np.asarray(jax_logits) - torch_logits).max())
  flops = forward_flops(config, args.batch, args.inputs, args.targets)
  rows = [["Hugging Face PyTorch (eager, float32)", torch_time, flops / torch_time / 1e9, 1.0],
          ["rospr-jax Flax (jit, float32)", jax_time, flops / jax_time / 1e9, torch_time / jax_time]]
  print(f"T5 forward, size={args.size}, B={args.batch}, inputs={args.inputs}, targets={args.targets}, "
        f"{os.cpu_count()} CPU cores, jax {jax.__version__}, torch {torch.__version__}")
  print(markdown_table(["implementation", "median s", "GFLOP/s", "speed vs PyTorch"], rows))
  print(f"max |logit difference| = {max_diff:.2e}")
  print(json.dumps({"jax_s": jax_time, "torch_s": torch_time, "ratio": torch_time / jax_time,
                    "max_logit_diff": max_diff}))


if __name__ == "__main__":
  main()

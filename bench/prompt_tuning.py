"""Prompt-tuning step time and achieved TFLOP/s: one prompt, and 32 prompts trained jointly.

Usage:
  python bench/prompt_tuning.py [--size xl] [--json FILE]   # accelerator: T0_3B shape, bfloat16
  python bench/prompt_tuning.py --cpu                        # CPU: the tiny and small shapes, float32
  python bench/prompt_tuning.py --peer bench/anchor_hf_t5.py # also run the HF peer in this job
  python bench/prompt_tuning.py --shapes 32x256x16 --variants einsum:0.1 cudnn:0   # chosen cases
  python bench/prompt_tuning.py --cpu --size xl --compile_only --shapes 32x256x16   # compilation only

Shapes: B 32 / inputs 256 / targets 16 and B 8 / 512 / 64 with a 100-token prompt (on the CPU the
`small` size runs B 4 and B 1 at those lengths, to finish in minutes). The step is the one training uses
(`rospr_jax.prompt.train_step`): frozen random backbone with parameters and activations in the compute
dtype, dropout 0.1 as the peer (the trainer's "auto" dropout keys: JAX's CUDA threefry kernel on GPUs,
RngBitGenerator elsewhere; masks shared along the length as in T5X;
`--per_element_dropout` draws one per element as the peer does), prompt table in float32, Adafactor
(lr 0.3) per prompt, state donated, remat "minimal" as the trainer's default (T0_3B at B 32, data-parallel on a
v4-8: 3.72 GiB of temporaries per chip instead of 8.79 GiB without remat, `rospr plan`). FLOPs per step = 2 x forward FLOPs at inputs P + T (only input gradients
are computed, no weight gradients), counted by `bench/common.py` (model FLOPs: the ~1% that remat
"minimal" recomputes is not counted, so TFLOP/s are comparable with the peer's). Tokens/s counts prompt,
input and target positions, as the peer does. "joint 32" trains a table of 32 prompts with the batch
spread over them (one example per prompt at B 32): the same total batch as the single prompt. Imports
only the compute core and gin-config (which `rospr_jax.prompt.optimizers` imports; no TensorFlow or
orbax). `--compile_only` compiles the step for abstract parameters (no weights in memory: the T0_3B shape fits a CPU) and prints the seconds to trace and to
compile and the random draws in the step (`random_bits` in its jaxpr; remat redraws them in the
backward pass), the figure that drove compilation time with dropout on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import numpy as np

from common import count_primitive, forward_flops, markdown_table, median_time
from rospr_jax.model import get_config, init_params, model_for
from rospr_jax.prompt.train_step import default_optimizer, dropout_key, init_state, make_train_step

FULL_SHAPES = [(32, 256, 16), (8, 512, 64)]
CPU_SHAPES = {"tiny": FULL_SHAPES, "small": [(4, 256, 16), (1, 512, 64)]}


def parse_shape(text: str) -> tuple[int, int, int]:
  """"32x256x16" -> (batch, inputs, targets)."""
  batch, inputs, targets = (int(v) for v in text.lower().split("x"))
  return batch, inputs, targets


def parse_variant(text: str) -> tuple[str, float, str, str]:
  """"cudnn:0" -> (attention implementation, dropout rate, remat policy, dropout key implementation);
  "einsum:0.1:none:unsafe_rbg" sets the remat policy (default: the trainer's "minimal") and the
  dropout key's PRNG (default: the trainer's "auto", `train_step.dropout_key`) too."""
  attention, dropout, remat, rng = (text.split(":") + ["", "", ""])[:4]
  return attention, float(dropout or 0.1), remat or "minimal", rng or "auto"


def step_arguments(config, batch, inputs, targets, prompt_length, num_sources):
  """(prompt-training state, batch of random tokens) for the step at this shape."""
  rng = np.random.default_rng(0)
  table = jax.random.uniform(jax.random.PRNGKey(1), (num_sources, prompt_length, config.emb_dim),
                             minval=-0.5, maxval=0.5)
  data = {"inputs": jnp.asarray(rng.integers(3, config.vocab_size, (batch, inputs)), jnp.int32),
          "targets": jnp.asarray(rng.integers(3, config.vocab_size, (batch, targets)), jnp.int32),
          "source_ids": jnp.asarray(np.arange(batch) % num_sources, jnp.int32)}
  return init_state(table, default_optimizer()), data


def compile_step(config, params, state, data, rng_impl):
  """(compiled step, its dropout key, seconds to trace and lower, seconds to trace, lower and compile,
  the step's jaxpr).

  `params` may be abstract (`jax.ShapeDtypeStruct` leaves): nothing runs."""
  # The training code's jitted step (a `partitioning.MeshStep`).
  jitted = make_train_step(model_for(config), default_optimizer())
  key = dropout_key(0, rng_impl)
  start = time.perf_counter()
  traced = jitted.trace(state, params, data, key)
  lowered = traced.lower()
  lowered_s = time.perf_counter() - start
  step = lowered.compile()
  return step, key, lowered_s, time.perf_counter() - start, traced.jaxpr


def time_step(config, params, batch, inputs, targets, prompt_length, num_sources, reps, rng_impl="auto"):
  """(compile seconds, median step seconds, GiB) of the training step on random tokens.

  GiB is XLA's own figure for the compiled step: its arguments (backbone, prompts, batch) plus the
  temporary buffers (saved activations and working space) on this backend.
  """
  state, data = step_arguments(config, batch, inputs, targets, prompt_length, num_sources)
  start = time.perf_counter()
  step, key, lowered_s, compiled_s, _ = compile_step(config, params, state, data, rng_impl)
  memory = step.memory_analysis()
  gib = (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / 2**30 if memory else float("nan")
  print(f"  traced in {lowered_s:.1f} s, compiled by {compiled_s:.1f} s ({gib:.1f} GiB)", flush=True)
  state, metrics = step(state, params, data, key)
  jax.block_until_ready(state.prompts)
  compile_s = time.perf_counter() - start
  print(f"  first step done by {compile_s:.1f} s", flush=True)
  if not bool(metrics["finite"]):
    print("warning: non-finite loss on random weights (the timing is still valid)", flush=True)
  holder = [state]

  def run():
    holder[0], _ = step(holder[0], params, data, key)
    jax.block_until_ready(holder[0].prompts)

  return compile_s, median_time(run, warmup=2, reps=reps), gib


def run_peer(script: str, size: str) -> list[list]:
  """Runs the Hugging Face peer (shared/bench/anchor_hf_t5.py) and returns its prompt-tuning rows."""
  with tempfile.TemporaryDirectory() as out:
    subprocess.run([sys.executable, script, "--size", size, "--out", out], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(out, f"anchor_hf_{size}.json")) as f:
      result = json.load(f)
  rows = []
  for r in result["results"]:
    if r["kind"] == "prompt_tune_step":
      rows.append([f"HF peer ({result['device']}, torch {result['torch']})", "eager, dropout 0.1", size, r["B"], r["S"], r["T"],
                   r["prompt"], 1, "", r["median_s"], r["tokens_per_s"], r["tflops"], "",
                   result.get("peak_mem_gib", "")])  # the peer's peak over all its measurements
  if "bf16_matmul_tflops" in result:
    rows.append([f"bf16 matmul 8192^3 ceiling (torch)", "", "", "", "", "", "", "", "", "", "",
                 result["bf16_matmul_tflops"], "", ""])
  return rows


def case_config(args, size, dtype, attention, dropout, remat, rng_impl):
  """(T5Config, its label) of one benchmark case under the command line's options."""
  config = get_config(size, dtype=dtype, param_dtype=dtype, dropout_rate=dropout, attention_impl=attention,
                      remat_policy=remat, fused_padding=args.fused_padding)
  if args.layers:
    config = config.replace(num_encoder_layers=args.layers, num_decoder_layers=args.layers)
  if args.per_element_dropout:
    config = config.replace(dropout_broadcast_dims=())
  variant = f"{attention}, dropout {dropout:g}, remat {remat}" + (
      f", {rng_impl} dropout key" if dropout and rng_impl != "auto" else "") + (
      ", per-element masks" if dropout and args.per_element_dropout else "") + (
      ", padding as lengths" if attention != "einsum" and args.fused_padding == "lengths" else "")
  return config, variant


def report_compilation(args, cases, dtype) -> None:
  """Compiles each case's 1-prompt step for abstract parameters; prints (and writes) a table."""
  rows = []
  for size, batch, inputs, targets, attention, dropout, remat, rng_impl in cases:
    config, variant = case_config(args, size, dtype, attention, dropout, remat, rng_impl)
    params = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    state, data = step_arguments(config, batch, inputs, targets, args.prompt_length, 1)
    _, _, traced_s, compiled_s, jaxpr = compile_step(config, params, state, data, rng_impl)
    draws = count_primitive(jaxpr, "random_bits")  # the forward pass's: remat's recomputation redraws them
    rows.append([variant, size + (f" ({args.layers} layers)" if args.layers else ""), batch, inputs, targets,
                 args.prompt_length, draws, traced_s, compiled_s])
    print(rows[-1], flush=True)
  headers = ["step (compiled only)", "size", "B", "inputs T", "targets L", "prompt P",
             "random draws (jaxpr)", "trace s", "trace + compile s"]
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": jax.devices()[0].device_kind, "jax": jax.__version__,
                 "rows": [dict(zip(headers, row)) for row in rows]}, f, indent=1)
  print()
  print(markdown_table(headers, rows))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cpu", action="store_true", help="run on the CPU in float32 (tiny and small)")
  parser.add_argument("--size", default=None,
                      help="comma-separated sizes (default: xl; tiny,small with --cpu)")
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--joint", type=int, default=32, help="prompts of the joint step")
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--dropout", type=float, default=0.1, help="dropout while training (the peer's 0.1)")
  parser.add_argument("--attention", default="einsum", choices=["einsum", "xla", "cudnn"],
                      help="attention implementation (fused paths apply when attention dropout is off)")
  parser.add_argument("--shapes", nargs="+", type=parse_shape, default=None,
                      help="BxTxL cases (default: 32x256x16 8x512x64; smaller for small on the CPU)")
  parser.add_argument("--variants", nargs="+", type=parse_variant, default=None,
                      help="attention:dropout[:remat] cases, e.g. einsum:0.1 cudnn:0 einsum:0.1:none "
                           "(default: --attention, --dropout, remat minimal); each runs every shape, the "
                           "joint step only the first")
  parser.add_argument("--peer", default=None, help="path of anchor_hf_t5.py: run the HF peer in this job")
  parser.add_argument("--per_element_dropout", action="store_true",
                      help="draw a dropout mask per element, as the Hugging Face peer does (default: the "
                           "model's T5X masks, shared along the length; T5Config.dropout_broadcast_dims)")
  parser.add_argument("--fused_padding", default="bias", choices=["bias", "lengths"],
                      help="T5Config.fused_padding: how fused attention takes the key padding")
  parser.add_argument("--layers", type=int, default=None,
                      help="encoder and decoder layers instead of the size's (a shallow model to study "
                           "compilation quickly)")
  parser.add_argument("--compile_only", action="store_true",
                      help="compile the 1-prompt step for abstract parameters and report its compilation")
  parser.add_argument("--json", "--out", dest="json", default=None, help="also write the rows as JSON here")
  args = parser.parse_args()
  if args.cpu:
    jax.config.update("jax_platforms", "cpu")
  dtype = jnp.float32 if args.cpu else jnp.bfloat16
  sizes = (args.size or ("tiny,small" if args.cpu else "xl")).split(",")
  variants = args.variants or [(args.attention, args.dropout, "minimal", "auto")]
  cases = [(size, *shape, *variant) for size in sizes
           for shape in (args.shapes or (CPU_SHAPES.get(size, FULL_SHAPES) if args.cpu else FULL_SHAPES))
           for variant in variants]
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{os.cpu_count()} CPU cores, dtype {jnp.dtype(dtype).name}", flush=True)
  rows, records, params_by_size = [], [], {}
  result = {"device": device.device_kind, "jax": jax.__version__, "rows": records}
  if args.compile_only:
    return report_compilation(args, cases, dtype)
  for size, batch, inputs, targets, attention, dropout, remat, rng_impl in cases:
    first_variant = (attention, dropout, remat, rng_impl) == variants[0]
    config, variant = case_config(args, size, dtype, attention, dropout, remat, rng_impl)
    print(f"{size}{f' ({args.layers} layers)' if args.layers else ''} B {batch} / {inputs} / {targets}, "
          f"{variant}:", flush=True)
    if size not in params_by_size:
      params_by_size.clear()  # one backbone in memory at a time
      params_by_size[size] = jax.block_until_ready(
          init_params(config, jax.random.PRNGKey(0)))
    params = params_by_size[size]
    flops = 2 * forward_flops(config, batch, args.prompt_length + inputs, targets)
    single_s = None
    for num_sources in ((1, args.joint) if first_variant and args.joint > 1 else (1,)):
      try:
        compile_s, step_s, gib = time_step(config, params, batch, inputs, targets, args.prompt_length,
                                           num_sources, args.reps, rng_impl)
      except Exception as error:  # one variant failing (e.g. out of memory) must not cost the others
        print(f"{size} {batch}x{inputs}x{targets} {variant}, {num_sources} prompt(s): "
              f"failed: {type(error).__name__}: {str(error)[:800]}", flush=True)
        continue
      single_s = step_s if num_sources == 1 else single_s or float("nan")
      tokens = batch * (args.prompt_length + inputs + targets) / step_s
      label = "rospr-jax, 1 prompt" if num_sources == 1 else f"rospr-jax, joint {num_sources} prompts"
      rows.append([label, variant, size + (f" ({args.layers} layers)" if args.layers else ""), batch, inputs, targets, args.prompt_length, num_sources, compile_s, step_s,
                   tokens, flops / step_s / 1e12, step_s / single_s, gib])
      records.append(dict(attention=attention, dropout=dropout, remat=remat, dropout_key=rng_impl,
                          layers=args.layers, size=size, B=batch, T=inputs, L=targets, P=args.prompt_length, S=num_sources,
                          compile_s=compile_s, step_s=step_s, tokens_per_s=tokens, memory_gib=gib,
                          tflops=flops / step_s / 1e12, joint_over_single=step_s / single_s))
      print(rows[-1], flush=True)
      if args.json:
        with open(args.json, "w") as f:
          json.dump(result, f, indent=1)
  if args.peer:
    rows += run_peer(args.peer, "xl" if not args.cpu else "tiny")
  headers = ["step", "attention", "size", "B", "inputs T", "targets L", "prompt P", "prompts S", "compile s", "median s",
             "tokens/s", "TFLOP/s", "time / 1-prompt time", "XLA memory GiB"]
  print()
  print(markdown_table(headers, rows))


if __name__ == "__main__":
  main()

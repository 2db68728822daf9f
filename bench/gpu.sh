#!/usr/bin/env bash
# One call on a lent GPU machine: checks, then times this project against the Hugging Face peer.
# Its image has jax, flax, optax, orbax, torch and transformers (no tensorflow, seqio, scann, gin):
# the benchmarks below import only the compute core.
# Usage (from the repository root): bash bench/gpu.sh   -> results in $OUT (default bench/out)
set -euo pipefail
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"

# 1. Correctness on the card: the tests that need only the compute core and torch.
timeout 150 python -m pytest -q -x tests/model/t5_test.py tests/eval/scoring_test.py 2>&1 | tail -3 | tee "$OUT/tests.txt"

# 2. The peer (Hugging Face PyTorch T5, T0_3B shape), same card, same job.
timeout 200 python bench/anchor_hf_t5.py --size xl --out "$OUT" > "$OUT/anchor.log" 2>&1 || echo "peer failed"
tail -40 "$OUT/anchor.log"

# 3. Ours: scoring and prompt tuning at the T0_3B shape in bfloat16.
for attention in einsum cudnn; do
  timeout 120 python bench/scoring.py --size xl --dtype bfloat16 --skip-naive --attention $attention \
      --json "$OUT/scoring_$attention.json" 2>&1 | tail -8
done
if [ -f bench/prompt_tuning.py ]; then
  timeout 150 python bench/prompt_tuning.py --size xl --json "$OUT/prompt_tuning.json" 2>&1 | tail -12
fi

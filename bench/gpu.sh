#!/usr/bin/env bash
# One call on a lent GPU machine (at most 10 minutes): the Hugging Face peer and this project at the
# T0_3B shape, on the same card, in the same job; then the correctness checks on the card.
# Its image has jax, flax, optax, orbax, torch and transformers (no tensorflow, seqio, scann, gin):
# everything below imports only the compute core.
# Usage (from the repository root): bash bench/gpu.sh   -> results in $OUT (default bench/out)
set -uo pipefail
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export JAX_PLATFORMS=cuda
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"

# 1. The peer (Hugging Face PyTorch T5, T0_3B shape, bf16): prompt-tuning steps and scoring.
timeout 150 python bench/anchor_hf_t5.py --size xl --out "$OUT" > "$OUT/anchor.log" 2>&1 || echo "peer failed or timed out"
tail -30 "$OUT/anchor.log"

# 2. Ours, same shape and dtype: encode-once scoring (fused cuDNN attention), prompt-tuning steps.
timeout 100 python bench/scoring.py --size xl --dtype bfloat16 --skip-naive --attention cudnn \
    --json "$OUT/scoring_cudnn.json" 2>&1 | tail -8
timeout 200 python bench/prompt_tuning.py --size xl --json "$OUT/prompt_tuning.json" 2>&1 | tail -12

# 3. Correctness on the card (single-device tests of the model and the scorer).
timeout 60 python -m pytest -q -x -k "not sharded" tests/model/t5_test.py tests/eval/scoring_test.py 2>&1 \
    | tail -3 | tee "$OUT/tests.txt"

# 4. The plain einsum attention, for comparison, if time is left.
timeout 80 python bench/scoring.py --size xl --dtype bfloat16 --skip-naive --attention einsum \
    --json "$OUT/scoring_einsum.json" 2>&1 | tail -8

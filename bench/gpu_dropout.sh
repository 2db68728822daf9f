#!/usr/bin/env bash
# A short call on a lent GPU (timeout_s 250) that studies why the dropout-0.1 prompt-tuning step of
# bench/gpu.sh produced no number within its limits while the dropout-free step compiled in 28 s:
# compilation and step time of a 4-layer T0_3B-width model per variant (fused or einsum attention,
# dropout off or on, RngBitGenerator or threefry dropout keys), then the full-depth step with dropout
# 0.1 and threefry keys in the time that is left. Session 4 ran it (BUDGET=232) before the model's
# dropout masks became T5X's (shared along the length): to repeat that study, FLAGS=--per_element_dropout.
# Dry run on the CPU: OUT=/tmp/o SIZE=tiny JAX_PLATFORMS=cpu SHALLOW="einsum:0 einsum:0.1" bash bench/gpu_dropout.sh
set -uo pipefail
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
SIZE=${SIZE:-xl}
BUDGET=${BUDGET:-240}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
export TF_CPP_MIN_LOG_LEVEL=2
section() { echo; echo "== $* ($(date +%T), ${SECONDS}s of ${BUDGET}s used)"; }
{
section "card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
section "1. 4 layers: compile and step time per variant (attention:dropout:remat:dropout key)"
timeout 95 python bench/prompt_tuning.py --size $SIZE --layers 4 --shapes 32x256x16 --joint 1 --reps 3 ${FLAGS:-} \
    --variants ${SHALLOW:-cudnn:0 einsum:0 einsum:0.1:minimal:threefry2x32 einsum:0.1:minimal} \
    --json "$OUT/shallow.json" || echo "shallow study failed or timed out"
section "2. full depth: dropout 0.1 with threefry dropout keys"
timeout $(( BUDGET - SECONDS > 1 ? BUDGET - SECONDS : 1 )) python bench/prompt_tuning.py --size $SIZE \
    --shapes 32x256x16 --joint 1 ${FLAGS:-} --variants ${FULL:-einsum:0.1:minimal:threefry2x32} \
    --json "$OUT/full.json" || echo "full-depth step failed or timed out"
section "done"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# One call on a lent GPU machine (run it with timeout_s 590): this project and the Hugging Face peer at
# the T0_3B shape, on the same card, in the same job (ours first: the goal figures are ours, the peer's
# were already seen on an H100); the correctness checks on the card; then, in whatever time is left,
# the variants (for prompt tuning einsum attention, and no remat: faster if its activations fit; a
# scoring breakdown; the RngBitGenerator dropout keys against the default CUDA threefry kernel). A variant
# that fails on the card is reported and skipped; each step prints its compile time as soon as it is
# known (session 4: the dropout step, then with a random draw per dropout site, took minutes to compile;
# the model now draws each stack's masks at once: 6 draws instead of 483). Every section
# has its own time limit inside BUDGET seconds, so a slow section costs only itself; each writes its
# JSON under $OUT as soon as it has a row.
# Its image has jax, flax, optax, orbax, torch and transformers (no tensorflow, seqio, scann, gin):
# everything below imports only the compute core.
# Usage (from the repository root): bash bench/gpu.sh   -> log.txt and JSON files in $OUT (default bench/out)
# Dry run of the plumbing on a CPU (tests/bench/gpu_script_test.py does this):
#   OUT=/tmp/o SIZE=tiny DTYPE=float32 JAX_PLATFORMS=cpu SCORING_ATTENTION="xla einsum" \
#   MORE_SCORING_ATTENTION=einsum PROMPT_SHAPES=4x64x8 PROMPT_VARIANT=xla:0.1:minimal \
#   MORE_PROMPT_VARIANT="xla:0 einsum:0.1:none" \
#   bash bench/gpu.sh
set -uo pipefail
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
SIZE=${SIZE:-xl}
BUDGET=${BUDGET:-560}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
export TF_CPP_MIN_LOG_LEVEL=2 JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/rospr_jax_cache}
section() { echo; echo "== $* ($(date +%T), ${SECONDS}s of ${BUDGET}s used)"; }
limit() {  # limit CAP: a section's timeout, at most CAP and what is left of the budget
  local left=$(( BUDGET - SECONDS )); echo $(( left < $1 ? (left > 1 ? left : 1) : $1 ))
}
{
section "card and software"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || echo "no nvidia-smi"
python -c "import jax, flax, optax, torch, transformers; print('jax', jax.__version__, jax.devices(), '| flax', flax.__version__, '| optax', optax.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

section "1. ours: encode-once scoring, 64 examples x 3 and x 2 choices (${SCORING_ATTENTION:-cudnn einsum} attention)"
timeout $(limit 170) python bench/scoring.py --size $SIZE --dtype ${DTYPE:-bfloat16} --skip-naive \
    --attention ${SCORING_ATTENTION:-cudnn einsum} --choices 3 2 --json "$OUT/scoring.json" | grep -v '^{' \
    || echo "scoring failed or timed out"

PROMPT_VARIANT=${PROMPT_VARIANT:-cudnn:0.1:minimal}
section "2. ours: prompt-tuning step $PROMPT_VARIANT, 1 prompt and 32 joint (dropout 0.1 as the peer)"
timeout $(limit 300) python bench/prompt_tuning.py --size $SIZE --shapes ${PROMPT_SHAPES:-32x256x16} \
    --variants $PROMPT_VARIANT --json "$OUT/prompt_tuning.json" || echo "prompt tuning failed or timed out"

section "3. the peer: Hugging Face PyTorch T5, T0_3B shape, bfloat16 (prompt-tuning steps, scoring, matmul ceiling)"
timeout $(limit 130) python bench/anchor_hf_t5.py --size $SIZE --out "$OUT" | python -c "import json,sys; r=json.load(sys.stdin); print({k: v for k, v in r.items() if k != 'results'}); [print(x) for x in r['results']]" || echo "peer failed or timed out"

section "4. correctness on the card (scorer, fused attention and dropout tests, float32 at full matmul precision)"
if [ -z "${SKIP_CARD_TESTS:-}" ]; then
  # The GPU-only tests first (cuDNN scoring; cuDNN training with dropout, even and odd lengths), 90 s;
  # then 40 s of the CPU-checked scorer, fused-path and dropout tests, rerun on the card.
  for selection in "cudnn:90" "(naive or fused or dropout) and not cudnn:40"; do
    JAX_DEFAULT_MATMUL_PRECISION=highest timeout $(limit ${selection##*:}) python -m pytest -q -p no:cacheprovider \
        -rs -k "${selection%:*}" tests/eval/scoring_test.py tests/model/t5_test.py 2>&1 | tail -6
  done
fi

section "5a. if time is left: prompt-tuning step $PROMPT_VARIANT with the key padding as lengths (no [B, N, T, T] bias)"
timeout $(limit 120) python bench/prompt_tuning.py --size $SIZE --shapes ${PROMPT_SHAPES:-32x256x16} \
    --variants $PROMPT_VARIANT --fused_padding lengths --joint 1 --json "$OUT/prompt_lengths.json" \
    || echo "prompt tuning with lengths failed or timed out"

MORE_PROMPT_VARIANT=${MORE_PROMPT_VARIANT:-cudnn:0.1:none cudnn:0.1:minimal:unsafe_rbg einsum:0.1:minimal}
section "5b. if time is left: prompt-tuning step with $MORE_PROMPT_VARIANT (attention:dropout:remat; the first also joint 32)"
timeout $(limit 180) python bench/prompt_tuning.py --size $SIZE --shapes ${PROMPT_SHAPES:-32x256x16} \
    --variants $MORE_PROMPT_VARIANT --joint 32 --json "$OUT/prompt_more.json" \
    || echo "extra prompt tuning failed or timed out"

section "6. if time is left: scoring with ${MORE_SCORING_ATTENTION:-cudnn} attention, padding as lengths: encoder alone, bare matmuls"
timeout $(limit 150) python bench/scoring.py --size $SIZE --dtype ${DTYPE:-bfloat16} --skip-naive --fused_padding lengths \
    --attention ${MORE_SCORING_ATTENTION:-cudnn} --choices 3 --breakdown --json "$OUT/scoring_more.json" \
    | grep -v '^{' || echo "extra scoring failed or timed out"
section "done"
} 2>&1 | tee "$LOG"

#!/usr/bin/env bash
# One call on a lent GPU machine (run it with timeout_s 590): what the GPU issue asks, in one job.
# 1-3: this project and the Hugging Face peer at the T0_3B shape, on the same card (ours first: the goal
# figures are ours, the peer's were already seen on an H100). 4: evaluation end to end on the path
# `rospr evaluate` runs (bench/evaluate_e2e.py: the generated held-out targets, 4,800 examples at T0's
# lengths, method 'T0'), against the bench scorer at the same batch shapes. 5: `rospr plan --topology
# local`'s memory figures (bench/plan_memory.py: the planner's own function) for the prompt-tuning and
# scoring steps, against the card's measured peak_bytes_in_use after running each step, one process per
# step. Then the correctness checks on the card; then, in whatever time is left, the variants (for
# prompt tuning einsum attention, and no remat: faster if its activations fit; a scoring breakdown; the
# RngBitGenerator dropout keys against the default CUDA threefry kernel). A variant that fails on the
# card is reported and skipped; each step prints its compile time as soon as it is known (session 4: the
# dropout step, then with a random draw per dropout site, took minutes to compile; the model now draws
# each stack's masks at once: 6 draws instead of 483). Every section has its own time limit inside
# BUDGET seconds, so a slow section costs only itself; each writes its JSON under $OUT/sections as soon
# as it has a row. Last, outside BUDGET (a second): bench/gpu_summary.py writes the figures to
# $OUT/gpu-<date>.json (copy it to bench/results/) and bundles the section JSONs into
# $OUT/sections.json: with log.txt, 3 files (a device call brings back at most 8).
# Estimated on an H100 from session 4's timings (bench/RESULTS.md): sections 1-3 about 70 + 120 + 70 s,
# 4 about 60 s, 5 about 80 + 40 s: about 440 s, the rest of the 560 s going to the card tests.
# Its image has jax, flax, optax, orbax, torch, transformers, sentencepiece and matplotlib, but not
# gin-config, which the training step (rospr_jax.prompt.optimizers) and the commands import, nor
# tensorflow, seqio or scann, which nothing below imports. Bring gin-config's wheel (61 KB, pure
# Python): here, before the call,
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl gin-config==0.5.0
# and name .whl in the run tool's carry if git ignores it; this script installs what .whl (WHEELS) holds
# when gin is missing.
# Usage (from the repository root): bash bench/gpu.sh   -> log.txt, gpu-<date>.json, sections.json in $OUT
# (default bench/out)
# Dry run of the plumbing on a CPU (tests/bench/gpu_script_test.py does this):
#   OUT=/tmp/o SIZE=tiny DTYPE=float32 JAX_PLATFORMS=cpu SCORING_ATTENTION="xla einsum" \
#   MORE_SCORING_ATTENTION=einsum PROMPT_SHAPES=2x32x4 PROMPT_VARIANT=xla:0.1:minimal \
#   MORE_PROMPT_VARIANT=xla:0.1:minimal ATTENTION=xla PLAN_SCORING_SHAPE=4x32x2x4 \
#   EVAL_ARGS="--vocab_size 2000 --max_examples 4 --reps 1 --profile_below 2" SKIP_CARD_TESTS=1 \
#   bash bench/gpu.sh
set -uo pipefail
OUT=${OUT:-bench/out}
J=$OUT/sections  # each section's JSON, bundled into $OUT/sections.json at the end
mkdir -p "$J"
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
if ! python -c "import gin" 2>/dev/null; then  # the image has no gin-config: install the carried wheel
  python -m pip install -q --no-index --no-deps --no-compile --target /tmp/rospr_site "${WHEELS:-.whl}"/*.whl \
      && export PYTHONPATH=$PYTHONPATH:/tmp/rospr_site || echo "no gin-config wheel in ${WHEELS:-.whl}: sections 2, 4, 5 will fail"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || echo "no nvidia-smi"
python -c "import jax, flax, optax, torch, transformers; print('jax', jax.__version__, jax.devices(), '| flax', flax.__version__, '| optax', optax.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

section "1. ours: encode-once scoring, 64 examples x 3 and x 2 choices (${SCORING_ATTENTION:-cudnn einsum} attention)"
timeout $(limit 170) python bench/scoring.py --size $SIZE --dtype ${DTYPE:-bfloat16} --skip-naive \
    --attention ${SCORING_ATTENTION:-cudnn einsum} --choices 3 2 --json "$J/scoring.json" | grep -v '^{' \
    || echo "scoring failed or timed out"

PROMPT_VARIANT=${PROMPT_VARIANT:-cudnn:0.1:minimal}
section "2. ours: prompt-tuning step $PROMPT_VARIANT, 1 prompt and 32 joint (dropout 0.1 as the peer)"
timeout $(limit 240) python bench/prompt_tuning.py --size $SIZE --shapes ${PROMPT_SHAPES:-32x256x16} \
    --variants $PROMPT_VARIANT --json "$J/prompt_tuning.json" || echo "prompt tuning failed or timed out"

section "3. the peer: Hugging Face PyTorch T5, T0_3B shape, bfloat16 (prompt-tuning steps, scoring, matmul ceiling)"
timeout $(limit 130) python bench/anchor_hf_t5.py --size $SIZE --out "$J" | python -c "import json,sys; r=json.load(sys.stdin); print({k: v for k, v in r.items() if k != 'results'}); [print(x) for x in r['results']]" || echo "peer failed or timed out"

section "4. evaluation end to end (rospr evaluate's path: generated held-out targets, method T0, ${ATTENTION:-cudnn} attention) against the bench scorer at its batches"
# tqdm's progress bars (stderr) are kept out of the log; anything else the script says stays.
timeout $(limit 120) python bench/evaluate_e2e.py --size $SIZE --dtype ${DTYPE:-bfloat16} --attention ${ATTENTION:-cudnn} \
    ${EVAL_ARGS:-} --json "$J/evaluate.json" 2>&1 | tr '\r' '\n' | grep -Ev '(ex/s|s/ex)\]$|^$' ; [ "${PIPESTATUS[0]}" = 0 ] \
    || echo "evaluation end to end failed or timed out"

section "5. rospr plan --topology local's memory figure against the measured peak: prompt step, then scoring ${PLAN_SCORING_SHAPE:-64x256x3x8} with a prompt"
for step_cap in train:110 scoring:60; do  # one process each: a device's peak only grows
  timeout $(limit ${step_cap#*:}) python bench/plan_memory.py --step ${step_cap%:*} --size $SIZE --dtype ${DTYPE:-bfloat16} \
      --attention ${ATTENTION:-cudnn} --train_shape ${PROMPT_SHAPES%% *} --scoring_shape ${PLAN_SCORING_SHAPE:-64x256x3x8} \
      --json "$J/plan_${step_cap%:*}.json" || echo "plan against peak (${step_cap%:*}) failed or timed out"
done

section "6. correctness on the card (scorer, fused attention and dropout tests, float32 at full matmul precision)"
if [ -z "${SKIP_CARD_TESTS:-}" ]; then
  # The GPU-only tests first (cuDNN scoring; cuDNN training with dropout, even and odd lengths), 90 s;
  # then 40 s of the CPU-checked scorer, fused-path and dropout tests, rerun on the card.
  for selection in "cudnn:90" "(naive or fused or dropout) and not cudnn:40"; do
    JAX_DEFAULT_MATMUL_PRECISION=highest timeout $(limit ${selection##*:}) python -m pytest -q -p no:cacheprovider \
        -rs -k "${selection%:*}" tests/eval/scoring_test.py tests/model/t5_test.py 2>&1 | tail -6
  done
fi

section "7a. if time is left: prompt-tuning step $PROMPT_VARIANT with the key padding as lengths (no [B, N, T, T] bias)"
timeout $(limit 120) python bench/prompt_tuning.py --size $SIZE --shapes ${PROMPT_SHAPES:-32x256x16} \
    --variants $PROMPT_VARIANT --fused_padding lengths --joint 1 --json "$J/prompt_lengths.json" \
    || echo "prompt tuning with lengths failed or timed out"

MORE_PROMPT_VARIANT=${MORE_PROMPT_VARIANT:-cudnn:0.1:none cudnn:0.1:minimal:unsafe_rbg einsum:0.1:minimal}
section "7b. if time is left: prompt-tuning step with $MORE_PROMPT_VARIANT (attention:dropout:remat; the first also joint 32)"
timeout $(limit 180) python bench/prompt_tuning.py --size $SIZE --shapes ${PROMPT_SHAPES:-32x256x16} \
    --variants $MORE_PROMPT_VARIANT --joint 32 --json "$J/prompt_more.json" \
    || echo "extra prompt tuning failed or timed out"

section "8. if time is left: scoring with ${MORE_SCORING_ATTENTION:-cudnn} attention, padding as lengths: encoder alone, bare matmuls"
timeout $(limit 150) python bench/scoring.py --size $SIZE --dtype ${DTYPE:-bfloat16} --skip-naive --fused_padding lengths \
    --attention ${MORE_SCORING_ATTENTION:-cudnn} --choices 3 --breakdown --json "$J/scoring_more.json" \
    | grep -v '^{' || echo "extra scoring failed or timed out"
section "summary (outside the budget): the issue's figures"
python bench/gpu_summary.py "$J" --write "$OUT/gpu-$(date +%F).json" --bundle "$OUT/sections.json" && rm -r "$J"
section "done"
} 2>&1 | tee "$LOG"

#!/usr/bin/env bash
# Runs any `rospr` entry point on every worker of a Cloud TPU VM (single host or pod slice).
#
#   ./run_tpu.sh --name rospr-v4 --zone us-central2-b --accelerator v4-32 --mount my-bucket -- \
#       train-prompts --gin_file=models/t0_3b.gin --gin_file=prompt_tuning/train_seqio.gin \
#       --gin.CHECKPOINT="'/gcs/my-bucket/T0_3B'" --gin.MODEL_DIR="'/gcs/my-bucket/run'" ...
#
# Flags (all optional but --name and --zone):
#   --name NAME            TPU VM name (created when absent, reused otherwise)
#   --zone ZONE            e.g. us-central2-b
#   --project PROJECT      gcloud project (default: gcloud's configured one)
#   --accelerator TYPE     e.g. v4-8, v5litepod-16 (default v4-8; only used at creation)
#   --version VERSION      TPU software version (default tpu-ubuntu2204-base; only at creation)
#   --spot                 create a Spot VM
#   --mount BUCKET         mount gs://BUCKET at /gcs/BUCKET on every worker with gcsfuse (installed
#                          when missing); repeatable. Paths may be mounted (/gcs/BUCKET/...) or
#                          gs:// URLs given directly (gcsfs, installed with the package; README.md,
#                          "Bucket paths", lists the flags and settings that take one).
#   --no-install           skip copying and installing the package (reuse what the workers have)
#   --delete-after         delete the VM when the command ends
# Everything after `--` is passed to `rospr` on every worker. The repository (this working tree,
# tracked files) is copied to ~/rospr-jax on each worker and installed into a new venv there with
# `pip install -c constraints.txt -e '.[tpu]'` (the tested stack: jax[tpu] 0.10.2 and its libtpu; the
# package brings the bucket drivers, gcsfs and s3fs); `jax.distributed.initialize()` runs on
# every worker when ROSPR_MULTIHOST=1, which this script sets for slices with more than one host.
# ROSPR_INIT_TIMEOUT, ROSPR_HEARTBEAT_TIMEOUT and ROSPR_SHUTDOWN_TIMEOUT (seconds; see
# rospr_jax/distributed.py), when set here, reach every worker.
set -euo pipefail

NAME="" ZONE="" PROJECT="" ACCELERATOR="v4-8" VERSION="tpu-ubuntu2204-base" SPOT="" INSTALL=1 DELETE=0
MOUNTS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --accelerator) ACCELERATOR=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --spot) SPOT="--spot"; shift ;;
    --mount) [[ "$2" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || { echo "run_tpu.sh: --mount takes a bucket name (no gs://), got '$2'" >&2; exit 2; }
      MOUNTS+=("$2"); shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --delete-after) DELETE=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;  # the comment block above, alone
    *) echo "run_tpu.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$NAME" && -n "$ZONE" ]] || { echo "run_tpu.sh: --name and --zone are required (see --help)" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "run_tpu.sh: give the rospr command after --, e.g. -- evaluate --gin_file=..." >&2; exit 2; }
command -v gcloud >/dev/null || { echo "run_tpu.sh: gcloud is not installed" >&2; exit 2; }

GCLOUD=(gcloud compute tpus tpu-vm)
COMMON=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project "$PROJECT")

if ! "${GCLOUD[@]}" describe "$NAME" "${COMMON[@]}" >/dev/null 2>&1; then
  echo "Creating TPU VM $NAME ($ACCELERATOR, $VERSION) in $ZONE"
  "${GCLOUD[@]}" create "$NAME" "${COMMON[@]}" --accelerator-type "$ACCELERATOR" --version "$VERSION" $SPOT
else
  echo "Reusing TPU VM $NAME in $ZONE"
fi

HOSTS=$("${GCLOUD[@]}" describe "$NAME" "${COMMON[@]}" --format='value(networkEndpoints.len())')
MULTIHOST=0; [[ "${HOSTS:-1}" -gt 1 ]] && MULTIHOST=1

if [[ $INSTALL -eq 1 ]]; then
  ARCHIVE=$(mktemp --suffix=.tar.gz)
  git -C "$(dirname "$0")" ls-files -z | tar -C "$(dirname "$0")" --null -T - -czf "$ARCHIVE"
  "${GCLOUD[@]}" scp "$ARCHIVE" "$NAME":~/rospr-jax.tar.gz "${COMMON[@]}" --worker=all
  rm -f "$ARCHIVE"
  "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command "
    set -e; rm -rf ~/rospr-jax && mkdir -p ~/rospr-jax && tar -xzf ~/rospr-jax.tar.gz -C ~/rospr-jax
    cd ~/rospr-jax && python3 -m venv .venv && .venv/bin/pip install -q -U pip
    .venv/bin/pip install -q -c constraints.txt -e '.[tpu]' && .venv/bin/rospr fetch"
fi

if [[ ${#MOUNTS[@]} -gt 0 ]]; then
  MOUNT_COMMAND="set -e
    if ! command -v gcsfuse >/dev/null; then
      echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
      sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
    fi"
  for BUCKET in "${MOUNTS[@]}"; do
    MOUNT_COMMAND+="
    sudo mkdir -p /gcs/$BUCKET && sudo chown \$USER /gcs/$BUCKET
    mountpoint -q /gcs/$BUCKET || gcsfuse --implicit-dirs $BUCKET /gcs/$BUCKET"
  done
  "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command "$MOUNT_COMMAND"
fi

QUOTED=$(printf '%q ' "$@")
FORWARD=""  # the launch timeouts set here, for every worker
for VAR in ROSPR_INIT_TIMEOUT ROSPR_HEARTBEAT_TIMEOUT ROSPR_SHUTDOWN_TIMEOUT; do
  if [[ -n "${!VAR:-}" ]]; then FORWARD+="$VAR=$(printf '%q' "${!VAR}") "; fi
done
set +e
"${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command \
  "cd ~/rospr-jax && ${FORWARD}ROSPR_MULTIHOST=$MULTIHOST .venv/bin/rospr $QUOTED"
STATUS=$?
set -e
if [[ $DELETE -eq 1 ]]; then
  "${GCLOUD[@]}" delete "$NAME" "${COMMON[@]}" --quiet
fi
exit $STATUS

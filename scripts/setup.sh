#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with the package, its test extra, and the
# cached data archives (promptsource and BIG-bench, from the package index, checksummed). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
if .venv/bin/python -c "import rospr_jax.data.archives" 2>/dev/null; then
  .venv/bin/rospr fetch
fi

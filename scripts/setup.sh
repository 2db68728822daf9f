#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with the package and its test and tpu extras
# (libtpu, for `rospr plan --topology`) at the tested versions of constraints.txt, then
# `rospr fetch` for the archives that are still served (promptsource 0.2.3 and the t5 0.9.4 wheel, from
# the package index, sha256-pinned). Nothing here needs BIG-bench or a model hub. If the fetch fails, the
# demo still runs on the generated task family alone; the message says what was not fetched. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# setup.py declares ranges; constraints.txt pins the exact stack the suite is tested with.
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,tpu]"
if ! .venv/bin/rospr fetch; then
  echo "scripts/setup.sh: rospr fetch failed (see above): the promptsource templates are not cached, so" \
       "the T0 tasks and their tests are unavailable; \`rospr demo\` still runs on the generated family." >&2
fi

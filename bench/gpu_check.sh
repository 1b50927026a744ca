#!/usr/bin/env bash
# The GPU check in one call (issue 24, item 4): bench/gpu_check.py does the work; this picks the Python.
#
#   bench/gpu_check.sh              on the lent GPU machine: needs_cuda tests, kernels check, kernel bench,
#                                   omsf2 bench (torch, torch.compile on CUDA, 448 px, batch 1 and 32) and a
#                                   CUDA-vs-CPU training check, each under its time budget (sum < 8 min);
#                                   one JSON record in $OUT (or --out DIR)
#   bench/gpu_check.sh --dry-run    the same steps as CPU stand-ins (CI runs this)
#
# Python: $PYTHON, else the checkout's .venv, else python3 (the lent machine's, which holds torch).
# The checkout goes on PYTHONPATH, so omsf2 need not be installed there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then py="$repo/.venv/bin/python"; else py="$(command -v python3)"; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$repo"
exec "$py" "$here/gpu_check.py" "$@"

#!/usr/bin/env bash
# Run everything CI runs: static checks, then the whole test suite (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || ./scripts/setup.sh --no-demo
./scripts/dev-install.sh
./scripts/check.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "==> pytest"
.venv/bin/pytest "$@"

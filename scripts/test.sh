#!/usr/bin/env bash
# Run everything CI runs: static checks, then the whole test suite (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || ./scripts/setup.sh --no-demo
./scripts/dev-install.sh
./scripts/check.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# One thread per process, as the grpc engine's clients and Flower's Ray actors run: the tests that
# compare engines then compare the same arithmetic (a 2-thread GEMM sums in another order), and
# parallel kernels do not stall on a shared 2-core machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# A throwaway PostgreSQL cluster for the tests marked `postgres` (a URL already set is used as is).
if [ -z "${FEDFT_TEST_POSTGRES_URL:-}" ]; then
  pgdir=$(mktemp -d "${TMPDIR:-/tmp}/fedft-pg.XXXXXX")
  trap './scripts/pg.sh stop "$pgdir" || true; rm -rf "$pgdir"' EXIT
  trap 'exit 130' INT TERM  # run the EXIT trap, so no server outlives the tests
  echo "==> postgresql"
  set +e
  url=$(./scripts/pg.sh start "$pgdir")
  rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    export FEDFT_TEST_POSTGRES_URL=$url
  elif [ "$rc" = 3 ] && [ "${CI:-}" != true ]; then
    echo "warning: PostgreSQL is not installed; the tests marked postgres will be skipped" >&2
  elif [ "$rc" = 3 ]; then
    echo "error: PostgreSQL is not installed, and CI (CI=true) must run the postgres tests" >&2
    exit 1
  else
    echo "error: could not start PostgreSQL for the tests (see the messages above)" >&2
    exit 1
  fi
fi
echo "==> pytest"
.venv/bin/pytest "$@"

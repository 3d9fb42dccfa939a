#!/usr/bin/env bash
# Re-link the editable install: strict editable mode only sees modules that existed at install time.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  -e . --config-settings editable_mode=strict 2> >(grep -v 'is ignored: it is neither' >&2)

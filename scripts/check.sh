#!/usr/bin/env bash
# Static checks CI runs: ruff lint and format, mypy (strict), and drift of the generated protobuf code.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
# mypy cannot follow setuptools' package-dir mapping, so it checks the editable link tree, where
# every module sits at its import path (fedft/core/..., fedft/server/...).
tree=$(echo build/__editable__.fedft-*)
(cd "$tree" && ../../.venv/bin/mypy --config-file ../../pyproject.toml --explicit-package-bases fedft)
echo "==> generated protobuf code"
.venv/bin/python scripts/gen_protos.py --check

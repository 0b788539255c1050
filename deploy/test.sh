#!/usr/bin/env bash
# Set up and run every check: lint, format, types, and the tests on real PostgreSQL and
# Redis (started, or installed from Debian packages, when absent). Extra arguments go
# to pytest, e.g. `deploy/test.sh -m "not slow"` or `deploy/test.sh tests/unit`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=deploy/scripts/venv.sh
. deploy/scripts/venv.sh
# shellcheck source=deploy/scripts/services.sh
. deploy/scripts/services.sh

ensure_venv dev
ensure_postgres
ensure_redis
ensure_dicom_tools
ensure_chromium
# TensorFlow's C++ start-up chatter is noise in test logs.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

echo "== ruff check" && "$VENV/bin/ruff" check .
echo "== ruff format --check" && "$VENV/bin/ruff" format --check .
echo "== mypy --strict (cxr_screen, worker, trainer, db)" && "$VENV/bin/mypy"
echo "== import contracts (pyproject.toml [tool.importlinter])" && "$VENV/bin/lint-imports" --no-cache
echo "== pytest (PostgreSQL: $CXR_TEST_POSTGRES_URL, Redis: $CXR_TEST_REDIS_URL)"
"$PY" -m pytest "$@"

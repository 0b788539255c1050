#!/usr/bin/env bash
# Quick start: create .venv, install cxr-screen, create the database (embedded SQLite
# under ./var unless CXR_DATABASE_URL says otherwise) and start the service.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=deploy/scripts/venv.sh
. deploy/scripts/venv.sh
ensure_venv
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
"$VENV/bin/cxr-screen" db upgrade
exec "$VENV/bin/cxr-screen" "${@:-up}"

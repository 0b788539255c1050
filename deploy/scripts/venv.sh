# Sourced by the quick-start and test scripts: make .venv with the project installed.
# Usage: ensure_venv [EXTRAS]   (EXTRAS such as "dev"); sets VENV and PY.

ensure_python() {
    PYTHON="${PYTHON:-python3.11}"
    command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
    if ! "$PYTHON" -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13)' 2>/dev/null; then
        echo "cxr-screen needs Python 3.11 or 3.12 (found: $("$PYTHON" --version 2>&1))." >&2
        echo "On Debian: apt-get install python3.11 python3.11-venv" >&2
        exit 1
    fi
    # Debian splits venv/ensurepip into their own package.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing python3-venv ..." >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            echo "Python's venv module is missing: sudo apt-get install python3-venv" >&2
            exit 1
        fi
    fi
}

ensure_venv() {
    local extras="${1:-}"
    ensure_python
    VENV="${CXR_VENV:-$ROOT/.venv}"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    PY="$VENV/bin/python"
    # Reinstall only when pyproject.toml changed since the last install.
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    local stamp="$VENV/.cxr-installed"
    local want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $spec"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing cxr-screen$( [ -n "$extras" ] && echo " with [$extras]") into $VENV (first time: a few minutes) ..." >&2
        "$PY" -m pip install -q --upgrade pip
        (cd "$ROOT" && "$PY" -m pip install -q -e "$spec")
        echo "$want" > "$stamp"
    fi
}

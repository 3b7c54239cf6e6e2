#!/usr/bin/env bash
# Create .venv (if missing) and install mvc with the given extras into it.
# Usage: source scripts/bootstrap.sh [EXTRAS]   e.g. "test"   (sets $PY and $VENV)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MVC_VENV:-$HERE/.venv}"
EXTRAS="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.mvc-installed-${EXTRAS:-core}"
if [ ! -f "$STAMP" ] || [ "$HERE/pyproject.toml" -nt "$STAMP" ]; then
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if [ -n "$EXTRAS" ]; then
    "$PY" -m pip install -q -e "$HERE[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
  else
    "$PY" -m pip install -q -e "$HERE" 2>&1 | grep -v "^WARNING: Location" || true
  fi
  "$PY" -c "import mvc, dvc" || { echo "install failed" >&2; exit 1; }
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"

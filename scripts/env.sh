# Sourced by the other scripts: create or reuse the local virtual environment `.venv` with kcaps
# (editable) with the pinned dependencies of the library and of its extras (the application,
# which includes the deployment; LCE; tests). Re-installs when pyproject.toml changes.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KCAPS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "kcaps needs Python 3.11 (TensorFlow 2.21 + larq 0.14 pins); found $("$PYTHON" --version)." >&2
  echo "Set PYTHON=/path/to/python3.11 and run again." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.kcaps-stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "Setting up $VENV (first run: a few minutes) ..." >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[app,lce,test]"
  echo "$STAMP" > "$VENV/.kcaps-stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # TensorFlow's C++ info lines
export PATH="$VENV/bin:$PATH"
cd "$ROOT"

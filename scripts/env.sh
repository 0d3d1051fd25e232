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

# The firmware toolchain (kcaps firmware, tests/test_firmware.py): Debian packages. Installed when
# missing and running as root; otherwise the exact command is printed and the firmware tests skip.
KCAPS_FIRMWARE_PACKAGES="gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-dev qemu-system-arm"
if command -v dpkg-query >/dev/null 2>&1; then
  _missing=""
  for _p in $KCAPS_FIRMWARE_PACKAGES; do
    dpkg-query -W -f='${Status}' "$_p" 2>/dev/null | grep -q "install ok installed" || _missing="$_missing $_p"
  done
  if [ -n "$_missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${KCAPS_NO_APT:-0}" != 1 ]; then
      echo "Installing the firmware toolchain:$_missing" >&2
      export DEBIAN_FRONTEND=noninteractive
      { apt-get install -y --no-install-recommends $_missing >/dev/null \
          || { apt-get update >/dev/null && apt-get install -y --no-install-recommends $_missing >/dev/null; }; } \
        || echo "Could not install$_missing; the firmware tests will be skipped." >&2
    else
      echo "Firmware toolchain missing:$_missing. Install it with:" >&2
      echo "  sudo apt-get install -y --no-install-recommends$_missing" >&2
      echo "(until then the firmware tests are skipped)" >&2
    fi
  fi
  unset _missing _p
fi

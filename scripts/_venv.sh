# Sourced by demo.sh and test.sh: make .venv and install acetwist into it.
# Usage: ensure_venv [extras]   (e.g. ensure_venv test,bench)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ACETWIST_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  local extras="${1:-}"
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
      # Debian/Ubuntu ship venv separately; install it when we may.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing python3-venv (Debian package)..." >&2
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
      else
        echo "error: '$PY -m venv' failed; install python3-venv (sudo apt-get install python3-venv)" >&2
        exit 1
      fi
    fi
  fi
  local spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  # compat editable mode keeps twisted/plugins visible to twistd (a PEP 660
  # editable install hides it).
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -c "$ROOT/constraints.txt" -e "$spec" --config-settings editable_mode=compat
  # Regenerate Twisted's plugin cache now, so twistd never needs to write it later.
  "$VENV/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
}

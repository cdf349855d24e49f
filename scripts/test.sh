#!/usr/bin/env bash
# Install acetwist with its test dependencies into .venv and run the whole
# trial suite. Prints a closing line "N passed, N failed".
# Extra arguments are passed to trial (e.g. a single test module).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv test
cd "$ROOT"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(tests)
set +e
"$VENV/bin/python" -m twisted.trial --temp-directory="$(mktemp -d)/_trial_temp" "${targets[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
"$VENV/bin/python" "$ROOT/scripts/trial_counts.py" "$status" < "$log"

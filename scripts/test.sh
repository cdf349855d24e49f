#!/usr/bin/env bash
# Install acetwist with its test dependencies into .venv, run the whole trial
# suite, then type-check with mypy (configured in pyproject.toml). Prints a
# closing line "N passed, N failed", where mypy counts as one more check.
# Extra arguments are passed to trial (e.g. a single test module); mypy then
# does not run (run it alone with: .venv/bin/mypy).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv test,bench
cd "$ROOT"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
targets=("$@")
checks=()
[ ${#targets[@]} -eq 0 ] && targets=(tests)
set +e
"$VENV/bin/python" -m twisted.trial --temp-directory="$(mktemp -d)/_trial_temp" "${targets[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ $# -eq 0 ]; then
  echo "mypy (pyproject.toml [tool.mypy]):"
  "$VENV/bin/python" -m mypy
  checks+=("mypy=$?")
fi
set -e
"$VENV/bin/python" "$ROOT/scripts/trial_counts.py" "$status" ${checks[@]+"${checks[@]}"} < "$log"

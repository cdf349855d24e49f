"""
Turn trial's closing line into 'N passed, N failed' and the right exit code.

    trial_counts.py TRIAL_STATUS [NAME=STATUS ...] < trial-output

Each NAME=STATUS is one more check run beside trial (mypy, say): it counts as
one passed when STATUS is 0 and as one failed otherwise (named on stderr).
The exit code is non-zero when anything failed or trial ran no test.
"""

import re
import sys
from typing import List, Tuple


def _checks(args: List[str]) -> Tuple[int, List[str]]:
    """(how many extra checks passed, the names of those that failed)."""
    passed, failed = 0, []
    for arg in args:
        name, sep, status = arg.rpartition("=")
        if not sep or not name or not status.lstrip("-").isdigit():
            raise SystemExit(f"trial_counts.py: expected NAME=STATUS, got {arg!r}")
        if int(status) == 0:
            passed += 1
        else:
            failed.append(name)
    return passed, failed


def main() -> int:
    status = int(sys.argv[1])
    extra_passed, extra_failed = _checks(sys.argv[2:])
    for name in extra_failed:
        print(f"{name} failed", file=sys.stderr)
    text = sys.stdin.read()
    match = None
    for match in re.finditer(r"^(PASSED|FAILED) \((.*)\)\s*$", text, re.M):
        pass
    if match is None:
        print(f"{extra_passed} passed, {1 + len(extra_failed)} failed")
        print("trial printed no result line", file=sys.stderr)
        return status or 1
    counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2)))
    passed = counts.get("successes", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped = counts.get("skips", 0)
    line = f"{passed + extra_passed} passed, {failed + len(extra_failed)} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    if passed == 0:
        return 1
    if failed or extra_failed or match.group(1) == "FAILED":
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())

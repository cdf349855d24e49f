"""Turn trial's closing line into 'N passed, N failed' and the right exit code."""

import re
import sys


def main() -> int:
    status = int(sys.argv[1])
    text = sys.stdin.read()
    match = None
    for match in re.finditer(r"^(PASSED|FAILED) \((.*)\)\s*$", text, re.M):
        pass
    if match is None:
        print("0 passed, 1 failed")
        print("trial printed no result line", file=sys.stderr)
        return status or 1
    counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2)))
    passed = counts.get("successes", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped = counts.get("skips", 0)
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    if passed == 0:
        return 1
    return 1 if failed or match.group(1) == "FAILED" else status


if __name__ == "__main__":
    sys.exit(main())

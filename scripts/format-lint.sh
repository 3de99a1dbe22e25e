#!/usr/bin/env bash
# Checks the Swift sources against .swift-format with `swift format lint --strict`: every place the
# formatter would change, and every rule broken, is a finding. Prints the findings and their count;
# exits non-zero when there is any.
#
#   scripts/format-lint.sh [PATH...]      default: Sources Tests
#
# Fix findings with `swift format format --in-place --recursive PATH` (then review the diff).
set -euo pipefail
cd "$(dirname "$0")/.."
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(Sources Tests)

set +e
findings=$(swift format lint --strict --recursive --parallel "${paths[@]}" 2>&1)
rc=$?
set -e
count=$(printf '%s\n' "$findings" | grep -cE '^[^ ]+:[0-9]+:[0-9]+: (warning|error): ' || true)
if [ "$count" -gt 0 ] || [ "$rc" -ne 0 ]; then
  printf '%s\n' "$findings"
  echo "format-lint: $count finding(s) in ${paths[*]}"
  exit 1
fi
echo "format-lint: no findings in ${paths[*]}"

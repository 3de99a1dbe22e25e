#!/usr/bin/env bash
# The unit and EmbeddedChannel suites (everything `swift test` runs: codecs, state machine, glue
# handlers, port pool, gateway start/reload/drain on loopback, config, fuzz regressions) under
# AddressSanitizer and under ThreadSanitizer, each in its own build folder.
#
#   scripts/sanitizers.sh [address|thread|all]     (default all)
#
# Each sanitizer needs a full instrumented build of the package and its dependencies: about
# 8-12 minutes per sanitizer on 2 cores, which is why CI (scripts/test.sh) does not run it.
# Logs: test-output/sanitize-<name>.log. Exits non-zero on a build failure, a failing test or a
# sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
case "$which" in
  all) sanitizers=(address thread) ;;
  address | thread) sanitizers=("$which") ;;
  *) echo "usage: scripts/sanitizers.sh [address|thread|all]" >&2; exit 2 ;;
esac
mkdir -p test-output
status=0
summary=()
for sanitizer in "${sanitizers[@]}"; do
  log="test-output/sanitize-$sanitizer.log"
  scratch=".build-$sanitizer"
  echo "== $sanitizer sanitizer: building ($scratch)"
  started=$(date +%s)
  if ! swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" >"$log" 2>&1; then
    tail -30 "$log"; summary+=("$sanitizer: BUILD FAILED"); status=1; continue
  fi
  built=$(date +%s)
  echo "== $sanitizer sanitizer: swift test (built in $((built - started)) s)"
  set +e
  # halt_on_error: the first report fails the run; TSan's second_deadlock_stack for useful reports.
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1" TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
    swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" >>"$log" 2>&1
  rc=$?
  set -e
  result=$(grep -E "Test run with [0-9]+ tests" "$log" | tail -1 || true)
  reports=$(grep -cE "^(==[0-9]+==ERROR: AddressSanitizer|WARNING: ThreadSanitizer)" "$log" || true)
  if [ $rc -ne 0 ] || [ "$reports" != 0 ]; then
    grep -E -A30 "^(==[0-9]+==ERROR: AddressSanitizer|WARNING: ThreadSanitizer)" "$log" | head -60 || true
    tail -20 "$log"
    summary+=("$sanitizer: FAILED (exit $rc, $reports sanitizer reports): $result")
    status=1
  else
    summary+=("$sanitizer: $result; no sanitizer report (build $((built - started)) s, tests $(($(date +%s) - built)) s)")
  fi
done
echo
echo "== sanitizer summary"
printf '%s\n' "${summary[@]}"
exit $status

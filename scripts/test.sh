#!/usr/bin/env bash
# The whole test suite, as the README's test command and CI (.ci/run) run it:
# dependencies, layering checks, swift-format lint, a warnings-free build, unit tests, a fuzz smoke run (30 s for each
# of the three libFuzzer targets), the Debian package (release build, lintian, install, checks,
# purge), and the interop tests against a real Samba AD DC with impacket and rpcclient, the demo
# included (needs root: network namespaces, port 135, dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
step() { printf '\n=== %s\n' "$*"; }

# Runs "$@" with its output in LOG and, filtered by the extended regex FILTER (lines matching it
# are hidden), on the terminal; returns the command's own exit status. (`cmd | tee | grep || true`
# would hide it: under pipefail the `|| true` resets PIPESTATUS.)
logged() { # LOG FILTER COMMAND...
  local log=$1 filter=$2 status
  shift 2
  set +e
  "$@" 2>&1 | tee "$log" | { grep -vE "$filter" || true; }
  status=${PIPESTATUS[0]}
  set -e
  return "$status"
}

step "test dependencies (apt, idempotent)"
scripts/install-test-deps.sh

step "layering"
scripts/check-layering.sh

step "format (swift format lint --strict over Sources and Tests)"
scripts/format-lint.sh

step "build"
logged test-output/build.log '^\[[0-9]+/[0-9]+\]' swift build --build-tests || { echo "build failed"; exit 1; }
if grep -E "^$PWD/(Sources|Tests)/.*(warning|error):" test-output/build.log; then
  echo "build: our sources must build without warnings"; exit 1
fi

step "unit tests"
# Per-test lines go to the log only; failures, suite results and the closing summary are shown.
logged test-output/unit.log '^(◇|↳|✔ Suite )|^✔ Test ("|[A-Za-z0-9_]+\()' swift test --skip-build \
  || { echo "unit tests failed"; exit 1; }

step "fuzz smoke run"
# The wire codec (framer, bind parser, EPM rewriter) for 60 s; the whole pipeline and the config
# loader for 30 s each. Each run fails on a crash and leaves the reproducer in fuzz-artifacts/.
scripts/fuzz.sh "${RPCGATE_FUZZ_SECONDS:-60}" RPCWireFuzz
scripts/fuzz.sh "${RPCGATE_FUZZ_PIPELINE_SECONDS:-30}" RPCGatewayFuzz
scripts/fuzz.sh "${RPCGATE_FUZZ_PIPELINE_SECONDS:-30}" RPCConfigFuzz

step "Debian package (release build, lintian, dpkg -i, checks, dpkg --purge)"
# The release build has its own scratch path (.build-release): ~8 min cold on 2 idle cores, ~1.5 min
# after a commit (the embedded commit recompiles the CLI); then lintian and dpkg take ~45 s.
scripts/test-deb.sh

step "interop tests (Samba AD DC, impacket, rpcclient)"
scripts/interop-tests.sh

echo
echo "all tests passed"

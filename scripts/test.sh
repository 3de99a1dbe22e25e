#!/usr/bin/env bash
# The whole test suite, as the README's test command and CI (.ci/run) run it:
# dependencies, layering checks, a warnings-free build, unit tests, a fuzz smoke run (30 s for each
# of the three libFuzzer targets), the Debian package (release build, lintian, install, checks,
# purge), and the interop tests against a real Samba AD DC with impacket and rpcclient, the demo
# included (needs root: network namespaces, port 135, dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
step() { printf '\n=== %s\n' "$*"; }

step "test dependencies (apt, idempotent)"
scripts/install-test-deps.sh

step "layering"
scripts/check-layering.sh

step "build"
swift build --build-tests 2>&1 | tee test-output/build.log | grep -vE '^\[[0-9]+/[0-9]+\]' || true
if [ "${PIPESTATUS[0]}" != 0 ]; then echo "build failed"; exit 1; fi
if grep -E "^$PWD/(Sources|Tests)/.*(warning|error):" test-output/build.log; then
  echo "build: our sources must build without warnings"; exit 1
fi

step "unit tests"
# Per-test lines go to the log only; failures, suite results and the closing summary are shown.
swift test --skip-build 2>&1 | tee test-output/unit.log | grep -vE '^(◇|↳|✔ Suite )|^✔ Test ("|[A-Za-z0-9_]+\()' || true
if [ "${PIPESTATUS[0]}" != 0 ]; then echo "unit tests failed"; exit 1; fi

step "fuzz smoke run"
# The wire codec (framer, bind parser, EPM rewriter) for 60 s; the whole pipeline and the config
# loader for 30 s each. Each run fails on a crash and leaves the reproducer in fuzz-artifacts/.
scripts/fuzz.sh "${RPCGATE_FUZZ_SECONDS:-60}" RPCWireFuzz
scripts/fuzz.sh "${RPCGATE_FUZZ_PIPELINE_SECONDS:-30}" RPCGatewayFuzz
scripts/fuzz.sh "${RPCGATE_FUZZ_PIPELINE_SECONDS:-30}" RPCConfigFuzz

step "Debian package (release build, lintian, dpkg -i, checks, dpkg --purge)"
# The release build has its own scratch path (.build-release): ~8 min cold on 2 cores, seconds
# when nothing changed.
scripts/test-deb.sh

step "interop tests (Samba AD DC, impacket, rpcclient)"
scripts/interop-tests.sh

echo
echo "all tests passed"

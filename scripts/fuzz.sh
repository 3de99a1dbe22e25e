#!/usr/bin/env bash
# Runs the RPCWire libFuzzer target (framer, PDU parser/round trip, endpoint-mapper rewriter).
#   scripts/fuzz.sh [SECONDS]        default 60; CI runs the default, long runs pass e.g. 600
# Exits non-zero when libFuzzer finds a crash; the reproducer is left in fuzz-artifacts/.
# Replay a crash with: .build-fuzz/debug/RPCWireFuzz fuzz-artifacts/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
scratch=.build-fuzz
corpus="$scratch/corpus"
artifacts=fuzz-artifacts
mkdir -p "$corpus" "$artifacts"

echo "== building RPCWireFuzz with libFuzzer instrumentation"
RPCGATE_FUZZ=1 swift build --scratch-path "$scratch" --product RPCWireFuzz --sanitize=fuzzer -c debug 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
binary="$scratch/debug/RPCWireFuzz"
[ -x "$binary" ] || { echo "fuzz build failed"; exit 1; }

# Seed corpus: every captured or spec-built fixture, as binary, plus whole captured streams.
python3 - "$corpus" Tests/RPCWireTests/Fixtures <<'PY'
import pathlib, sys, hashlib
out, src = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
n = 0
for f in sorted(src.glob("*.hex")):
    hexdigits = "".join(l.strip() for l in f.read_text().splitlines() if not l.startswith("#"))
    data = bytes.fromhex("".join(hexdigits.split()))
    (out / ("seed-" + f.stem)).write_bytes(data)
    n += 1
print(f"seeded {n} fixtures")
PY

echo "== fuzzing for ${seconds}s"
log="$scratch/fuzz.log"
set +e
SWIFT_BACKTRACE=enable=no "$binary" "$corpus" -max_total_time="$seconds" -max_len=16384 -timeout=10 \
  -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
status=$?
set -e
grep -E '^#[0-9]+ +(DONE|pulse)|stat::number_of_executed_units|stat::average_exec_per_sec|cov:' "$log" | tail -4
if [ $status -ne 0 ]; then
  echo "FUZZ FAILURE (exit $status): see $log and $artifacts/"
  tail -40 "$log"
  exit 1
fi
echo "fuzz: no crash in ${seconds}s"

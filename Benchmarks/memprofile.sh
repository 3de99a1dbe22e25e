#!/usr/bin/env bash
# Heap profile of idle proxied connections with valgrind massif (bytes, so independent of the
# machine's load): the gateway (release, one event loop) runs under massif while the bench client
# opens CONNECTIONS connections through it (endpoint-mapper look-up, bind, one call each... then
# held); massif's peak snapshot (all connections held) is printed per connection, with the
# allocation sites that hold the most, demangled.
#
#   bash Benchmarks/memprofile.sh                       # 1,000 idle bound connections
#   CONNECTIONS=0 bash Benchmarks/memprofile.sh         # the baseline (no connection)
#
# Environment: SCRATCH_PATH [.build-release] SKIP_BUILD [0] CONNECTIONS [1000] HOLD [4]
#   BASE_PORT [21600] OUT [test-output/memprofile] DEPTH [40] CONCURRENCY [8] (client connects in flight)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCRATCH_PATH=${SCRATCH_PATH:-.build-release}
SKIP_BUILD=${SKIP_BUILD:-0}
CONNECTIONS=${CONNECTIONS:-1000}
HOLD=${HOLD:-4}
BASE_PORT=${BASE_PORT:-21600}
OUT=${OUT:-$ROOT/test-output/memprofile}
DEPTH=${DEPTH:-40}
CONCURRENCY=${CONCURRENCY:-8}
mkdir -p "$OUT"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
# The shipped build's flags (README, deploy/Dockerfile, scripts/build-deb.sh): Swift's dynamic
# exclusivity checks off in every module, SwiftNIO's included (docs/PERFORMANCE.md: the trade-off
# and what it saves); RPCGATE_EXCLUSIVITY_CHECKS=1 keeps them.
RELEASE_FLAGS=(-Xswiftc -enforce-exclusivity=unchecked)
if [ -n "${RPCGATE_EXCLUSIVITY_CHECKS:-}" ]; then RELEASE_FLAGS=(); fi
if [ "$SKIP_BUILD" != 1 ]; then
  swift build -c release "${RELEASE_FLAGS[@]}" --scratch-path "$SCRATCH_PATH" --product rpcgate-callgrind-host >"$OUT/build.log" 2>&1
  swift build -c release "${RELEASE_FLAGS[@]}" --scratch-path "$SCRATCH_PATH" --product rpcgate-bench >>"$OUT/build.log" 2>&1
fi
BIN=$(swift build -c release --scratch-path "$SCRATCH_PATH" --show-bin-path)

SERVER_EPM=$((BASE_PORT + 135)); SERVER_DATA=$((BASE_PORT + 136)); GATE_EPM=$((BASE_PORT + 235))
SERVER_PID=""; GATE_PID=""
stop_pid() {
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done   # massif writes on exit
  kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}
trap 'stop_pid "$GATE_PID"; stop_pid "$SERVER_PID"' EXIT
wait_listen() {
  for _ in $(seq 1 600); do
    ss -Hltn "src $1 and sport = :$2" | grep -q . && return 0
    kill -0 "$3" 2>/dev/null || { echo "process $3 died"; return 1; }
    sleep 0.1
  done
  echo "nothing listens on $1:$2"; return 1
}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cat >"$OUT/rpcgate.yaml" <<EOF
routes:
  - name: bench
    listen: 127.0.0.1
    epm_port: $GATE_EPM
    upstream: 127.0.0.1
    upstream_epm_port: $SERVER_EPM
    ports: $((BASE_PORT + 240))-$((BASE_PORT + 249))
    policy: bench
    max_connections: 30000
policies:
  bench:
    default: deny
    rules:
      - { action: deny, interfaces: [drsuapi], opnums: [3] }
      - action: allow
        interfaces: ["a0b1c2d3-0000-4000-8000-00000000beef@1.0"]
limits:
  max_connections: 30000
  max_connections_per_source: 30000
  new_connections_per_second_per_source: 1000000
timeouts:
  idle: 15m
EOF

"$BIN/rpcgate-bench" server --listen 127.0.0.1 --epm-port "$SERVER_EPM" --data-port "$SERVER_DATA" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
wait_listen 127.0.0.1 "$SERVER_EPM" "$SERVER_PID"
rm -f "$OUT"/massif.out.*
# Same host and reasons as profile.sh (no async main under valgrind, no DWARF 5).
objcopy --strip-debug "$BIN/rpcgate-callgrind-host" "$OUT/rpcgate-nodebug"
SWIFT_BACKTRACE=enable=no valgrind --tool=massif --depth="$DEPTH" --threshold=0.2 --peak-inaccuracy=0.5 \
  --massif-out-file="$OUT/massif.out.%p" "$OUT/rpcgate-nodebug" "$OUT/rpcgate.yaml" 1 warning >"$OUT/rpcgate.log" 2>&1 &
GATE_PID=$!
wait_listen 127.0.0.1 "$GATE_EPM" "$GATE_PID"
sleep 1
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
RSS0=$(rss_kb "$GATE_PID")
if [ "$CONNECTIONS" -gt 0 ]; then
  log "rpcgate under massif (pid $GATE_PID); opening $CONNECTIONS idle connections"
  rm -f "$OUT/ready"
  "$BIN/rpcgate-bench" client --epm "127.0.0.1:$GATE_EPM" --mode idle --connections "$CONNECTIONS" \
    --duration "$HOLD" --threads 1 --connect-concurrency "$CONCURRENCY" --ready-file "$OUT/ready" >"$OUT/client.json" 2>"$OUT/client.log" &
  CLIENT_PID=$!
  for _ in $(seq 1 3000); do [ -e "$OUT/ready" ] && break; kill -0 "$CLIENT_PID" 2>/dev/null || break; sleep 0.1; done
  sleep 1
  RSS1=$(rss_kb "$GATE_PID")
  wait "$CLIENT_PID" || true
  cat "$OUT/client.json"
else
  sleep "$HOLD"; RSS1=$(rss_kb "$GATE_PID")
fi
sleep 1
stop_pid "$GATE_PID"; GATE_PID=""
PROFILE=$(ls -t "$OUT"/massif.out.* | head -1)
ms_print "$PROFILE" | swift demangle --simplified >"$OUT/massif.txt"
log "profile: $PROFILE (ms_print: $OUT/massif.txt)"
python3 - "$PROFILE" "$CONNECTIONS" "$RSS0" "$RSS1" <<'PY'
import re, sys
path, n, rss0, rss1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
snaps, cur = [], None
for line in open(path):
    line = line.rstrip("\n")
    if line.startswith("snapshot="):
        cur = {"n": int(line.split("=")[1])}; snaps.append(cur)
    elif cur is not None and "=" in line and not line.startswith(" ") and not line.startswith("n"):
        k, v = line.split("=", 1)
        if k in ("mem_heap_B", "mem_heap_extra_B", "mem_stacks_B"): cur[k] = int(v)
        if k == "heap_tree": cur["tree"] = v
peak = max(snaps, key=lambda s: s.get("mem_heap_B", 0) + s.get("mem_heap_extra_B", 0))
heap, extra = peak["mem_heap_B"], peak["mem_heap_extra_B"]
print(f"peak snapshot {peak['n']}: heap {heap/1024:.0f} KiB requested + {extra/1024:.0f} KiB allocator overhead")
print(f"RSS under massif: {rss0} kB before, {rss1} kB with the connections (not comparable to a plain run)")
if n:
    print(f"per connection (whole heap / {n}, baseline included): {heap/n:.0f} B requested + {extra/n:.0f} B overhead")
PY
echo "== detailed peak snapshot: $OUT/massif.txt"

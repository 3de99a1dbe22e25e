#!/usr/bin/env bash
# Instruction-level profile of rpcgate's data path with callgrind (counts instructions, so it is
# repeatable on a busy machine): the gateway (release, one event loop) runs under valgrind while the
# bench client does a short bulk run through it; the top functions by self cost are printed,
# demangled, and the raw profile is left in OUT for callgrind_annotate / kcachegrind.
#
#   bash Benchmarks/profile.sh                       # bulk, 1 connection, 64 KiB stubs, 10 s
#   STUB=100 MODE=latency bash Benchmarks/profile.sh # the small-call path
#
# Environment: SCRATCH_PATH [.build] SKIP_BUILD [0] DURATION [10] STUB [65536] MODE [bulk]
#   CONNECTIONS [1] BASE_PORT [21500] OUT [test-output/profile] TOP [40]
#   POLICY [small] (2 rules, one with opnums; bench: compare.sh's 20 rules, Benchmarks/bench-policy.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCRATCH_PATH=${SCRATCH_PATH:-.build}
SKIP_BUILD=${SKIP_BUILD:-0}
DURATION=${DURATION:-10}
STUB=${STUB:-65536}
MODE=${MODE:-bulk}
CONNECTIONS=${CONNECTIONS:-1}
BASE_PORT=${BASE_PORT:-21500}
OUT=${OUT:-$ROOT/test-output/profile}
TOP=${TOP:-40}
POLICY=${POLICY:-small}
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
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done   # callgrind dumps on exit
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

{
  cat <<EOF
routes:
  - name: bench
    listen: 127.0.0.1
    epm_port: $GATE_EPM
    upstream: 127.0.0.1
    upstream_epm_port: $SERVER_EPM
    ports: $((BASE_PORT + 240))-$((BASE_PORT + 249))
    policy: bench
limits:
  # One client address opens every connection (MODE=churn): lift fair admission's per-source
  # caps, which would otherwise refuse part of the load once the gateway is fast enough.
  max_connections_per_source: 30000
  new_connections_per_second_per_source: 1000000
EOF
  case $POLICY in
    bench) cat "$ROOT/Benchmarks/bench-policy.yaml" ;;   # compare.sh's 20 rules
    *)
      cat <<EOF
policies:
  bench:
    default: deny
    rules:
      - { action: deny, interfaces: [drsuapi], opnums: [3] }
      - action: allow
        interfaces: ["a0b1c2d3-0000-4000-8000-00000000beef@1.0"]
EOF
      ;;
  esac
} >"$OUT/rpcgate.yaml"

"$BIN/rpcgate-bench" server --listen 127.0.0.1 --epm-port "$SERVER_EPM" --data-port "$SERVER_DATA" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
wait_listen 127.0.0.1 "$SERVER_EPM" "$SERVER_PID"
rm -f "$OUT"/callgrind.out.*
# valgrind 3.19 cannot run a Swift program whose main is async (it dies in libdispatch's
# sigsuspend), so the gateway runs in rpcgate-callgrind-host: the same GatewayServer, metrics and
# logging as `rpcgate run`, from a synchronous main. valgrind also cannot read the DWARF 5 that
# Swift 6.3 emits ("unhandled dwarf2 abbrev form"): profile a copy without debug sections; the
# symbol table still names every function.
objcopy --strip-debug "$BIN/rpcgate-callgrind-host" "$OUT/rpcgate-nodebug"
SWIFT_BACKTRACE=enable=no valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
  "$OUT/rpcgate-nodebug" "$OUT/rpcgate.yaml" 1 warning >"$OUT/rpcgate.log" 2>&1 &
GATE_PID=$!
wait_listen 127.0.0.1 "$GATE_EPM" "$GATE_PID"
# Leave start-up (dynamic linking, metadata instantiation, binding the listeners) out.
callgrind_control -z "$GATE_PID" >/dev/null
log "rpcgate under callgrind (pid $GATE_PID); $MODE run of $DURATION s"
"$BIN/rpcgate-bench" client --epm "127.0.0.1:$GATE_EPM" --mode "$MODE" --connections "$CONNECTIONS" \
  --stub-size "$STUB" --duration "$DURATION" --warmup 20 | tee "$OUT/client.json"
stop_pid "$GATE_PID"; GATE_PID=""
PROFILE=$(ls -t "$OUT"/callgrind.out.* | head -1)
log "profile: $PROFILE"
callgrind_annotate --threshold=100 "$PROFILE" 2>/dev/null | swift demangle --simplified >"$OUT/self.txt"
callgrind_annotate --inclusive=yes --threshold=100 "$PROFILE" 2>/dev/null | swift demangle --simplified >"$OUT/inclusive.txt"
echo "== top $TOP by self cost (instructions)"
grep -m1 -E '^ *[0-9,]+ .*PROGRAM TOTALS' "$OUT/self.txt" || true
awk '/file:function/ {go=1; next} go && NF && !/\( *[5-9][0-9]\.[0-9]+%\)|\(100\.0/' "$OUT/self.txt" | head -"$TOP" | cut -c1-220
echo "== full listings: $OUT/self.txt, $OUT/inclusive.txt"

#!/usr/bin/env bash
# RPCGate against a direct path and haproxy (tcp mode), on loopback, with real DCE/RPC traffic.
#
#   bash Benchmarks/compare.sh            # everything: install, build, measure, write docs/PERFORMANCE.md
#
# Paths (the client always resolves the interface through an endpoint mapper, as real clients do):
#   direct   client -> bench server EPM 127.0.0.1:SERVER_EPM, then 127.0.0.1:<port in the tower>
#   rpcgate  client -> rpcgate EPM 127.0.0.1:GATE_EPM (towers rewritten into GATE_PORTS) -> server
#   haproxy  client -> haproxy 127.0.0.2:SERVER_EPM; haproxy does not rewrite, so it also listens on
#            127.0.0.2:SERVER_DATA and the client dials the host it used plus the tower's port
#   nio      (BASELINE=nio) client -> `rpcgate-bench splice` on 127.0.0.4, as haproxy: a bare SwiftNIO
#            forwarder with rpcgate's channel settings and nothing else, the floor of a NIO proxy
# Scenarios: bulk echo of 64 KiB stubs on 1 and 16 connections (MB/s, proxy CPU-seconds per GB),
# latency of 100-byte calls (p50, p99), churn of 8 workers doing lookup+bind+call+close (per s),
# and 10,000 idle bound connections (proxy RSS per connection). Paths are interleaved, ROUNDS
# rounds, medians reported. rpcgate --threads and haproxy nbthread are set to the same number.
#
# Edge + core over mutual TLS (scenarios tls_bulk1, tls_latency): the same bulk and latency runs
# through two proxies with a TLS 1.3 hop between them, certificates from deploy/tls/make-test-ca.sh:
#   rpcgate  client -> edge rpcgate EPM 127.0.0.1:EDGE_EPM (route `via: core1`) -> TLS on one port
#            127.0.0.1:CORE_PORT -> core rpcgate (PROXY v2 header, policy) -> server
#   haproxy  client -> edge haproxy 127.0.0.3:SERVER_EPM/SERVER_DATA -> `ssl crt ... verify
#            required` -> core haproxy (`bind ... ssl verify required`, one port per service: haproxy
#            cannot carry the target inside the tunnel) -> server
# CPU and RSS of such a path are the sums over its two proxy processes.
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [4] seconds per run  THREADS [1]  EXTRA_THREADS [""] (e.g. 2: bulk x16 and
#   churn again with this many threads)  IDLE_CONNS [10000]  IDLE_HOLD [3]
#   BASE_PORT [21000]  SCRATCH_PATH [.build]  SKIP_BUILD [0]  RPCGATE_LOG_LEVEL [warning]
#   SCENARIOS ["bulk1 bulk16 latency churn idle tls_bulk1 tls_latency"]  OUT [test-output/bench]
#   PERF_DOC [docs/PERFORMANCE.md] ("" to skip writing it)  BASELINE [""] (nio: the fourth path)
#   PIN_LATENCY [0] (1: latency runs with client and server on CPU 0, proxies on CPU 1)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMMAND_LINE="bash Benchmarks/compare.sh${*:+ $*}"
for var in ROUNDS DURATION THREADS EXTRA_THREADS IDLE_CONNS IDLE_HOLD BASE_PORT SCRATCH_PATH SKIP_BUILD SCENARIOS BASELINE PIN_LATENCY; do
  if [ -n "${!var+x}" ]; then COMMAND_LINE="$var=${!var} $COMMAND_LINE"; fi
done

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
THREADS=${THREADS:-1}
EXTRA_THREADS=${EXTRA_THREADS-}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-3}
BASE_PORT=${BASE_PORT:-21000}
SCRATCH_PATH=${SCRATCH_PATH:-.build}
SKIP_BUILD=${SKIP_BUILD:-0}
RPCGATE_LOG_LEVEL=${RPCGATE_LOG_LEVEL:-warning}
SCENARIOS=${SCENARIOS:-bulk1 bulk16 latency churn idle tls_bulk1 tls_latency}
# BASELINE=nio adds a fourth path: `rpcgate-bench splice`, a bare SwiftNIO forwarder (no parsing,
# no policy), the floor of any NIO proxy, in the scenarios without TLS.
BASELINE=${BASELINE-}
# Latency on 2 shared cores is bimodal as the scheduler moves the three processes about (one run
# saw p50s of 210-240 µs and 320-390 µs for the same path, every path): take ROUNDS=5 or more for
# latency figures. PIN_LATENCY=1 pins the client and the server to CPU 0 and the proxies (every
# thread) to CPU 1 in the latency scenarios; that removes the moves but makes every proxied
# message cross CPUs (p50 about 260-300 µs for all proxies here) while the direct path stays on
# one CPU, so "added p50" then measures cross-CPU wake-ups more than the proxy.
PIN_LATENCY=${PIN_LATENCY:-0}
OUT=${OUT:-$ROOT/test-output/bench}
PERF_DOC=${PERF_DOC-$ROOT/docs/PERFORMANCE.md}

SERVER_EPM=$((BASE_PORT + 135))
SERVER_DATA=$((BASE_PORT + 136))
GATE_EPM=$((BASE_PORT + 235))
GATE_PORTS_LOW=$((BASE_PORT + 240))
GATE_PORTS_HIGH=$((BASE_PORT + 249))
HAPROXY_HOST=127.0.0.2
NIO_HOST=127.0.0.4
# Edge + core over TLS.
CORE_PORT=$((BASE_PORT + 300))
HA_CORE_EPM=$((BASE_PORT + 310))
HA_CORE_DATA=$((BASE_PORT + 311))
EDGE_EPM=$((BASE_PORT + 335))
EDGE_PORTS_LOW=$((BASE_PORT + 340))
EDGE_PORTS_HIGH=$((BASE_PORT + 349))
HA_EDGE_HOST=127.0.0.3
TLS_DIR=""
case " $SCENARIOS " in *" tls_"*) TLS_DIR=$OUT/tls ;; esac
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$OUT"
# The client's own CPU (user + system), so a CPU-bound scenario can be read as a budget of the two
# cores: client + server + proxy. GNU time, when installed; otherwise the rows are left out.
TIMED=()
if [ -x /usr/bin/time ]; then TIMED=(/usr/bin/time -f "%U %S" -o "$OUT/client.time"); fi
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
STARTED_AT=$(date +%s)

# ---------------------------------------------------------------- tools, limits, build
if ! command -v haproxy >/dev/null 2>&1; then
  log "installing haproxy"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
# 10,000 idle connections through a proxy need 20,000+ descriptors in the proxy (one per side).
# Raise the soft limit as far as the hard limit allows; where the hard limit cannot be raised
# (a container without CAP_SYS_RESOURCE), the idle scenario uses as many connections as fit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
IDLE_FIT=$(( (NOFILE - 200) / 2 ))
IDLE_REQUESTED=$IDLE_CONNS
if [ "$IDLE_CONNS" -gt "$IDLE_FIT" ]; then
  log "RLIMIT_NOFILE is $NOFILE (hard $(ulimit -Hn)): a proxy fits $IDLE_FIT idle connection pairs; idle uses $IDLE_FIT, not $IDLE_CONNS"
  IDLE_CONNS=$IDLE_FIT
fi
HAPROXY_MAXCONN=$((IDLE_CONNS + 50))
log "RLIMIT_NOFILE $NOFILE; idle connections $IDLE_CONNS; haproxy maxconn $HAPROXY_MAXCONN"

# The shipped build's flags (README, deploy/Dockerfile, scripts/build-deb.sh): Swift's dynamic
# exclusivity checks off in every module, SwiftNIO's included (docs/PERFORMANCE.md: the trade-off
# and what it saves); RPCGATE_EXCLUSIVITY_CHECKS=1 keeps them.
RELEASE_FLAGS=(-Xswiftc -enforce-exclusivity=unchecked)
if [ -n "${RPCGATE_EXCLUSIVITY_CHECKS:-}" ]; then RELEASE_FLAGS=(); fi
if [ "$SKIP_BUILD" != 1 ]; then
  log "building release rpcgate and rpcgate-bench (scratch path $SCRATCH_PATH)"
  swift build -c release "${RELEASE_FLAGS[@]}" --scratch-path "$SCRATCH_PATH" --product rpcgate >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  swift build -c release "${RELEASE_FLAGS[@]}" --scratch-path "$SCRATCH_PATH" --product rpcgate-bench >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
BIN=$(swift build -c release --scratch-path "$SCRATCH_PATH" --show-bin-path)
for exe in rpcgate rpcgate-bench; do
  [ -x "$BIN/$exe" ] || { echo "missing $BIN/$exe (build first or unset SKIP_BUILD)"; exit 1; }
done

# ---------------------------------------------------------------- processes we start
SERVER_PID=""
RPCGATE_PID=""
HAPROXY_PID=""
NIO_PID=""
CLIENT_PID=""
EDGE_PID=""
CORE_PID=""
HA_EDGE_PID=""
HA_CORE_PID=""
stop_pid() {  # stop one process we started, by PID; bounded wait
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$CLIENT_PID"; stop_pid "$RPCGATE_PID"; stop_pid "$HAPROXY_PID"; stop_pid "$NIO_PID"; stop_pid "$SERVER_PID"
  stop_tls_proxies
}
trap cleanup EXIT

port_in_use() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
for port in "$SERVER_EPM" "$SERVER_DATA" "$GATE_EPM" $(seq "$GATE_PORTS_LOW" "$GATE_PORTS_HIGH") \
  "$CORE_PORT" "$HA_CORE_EPM" "$HA_CORE_DATA" "$EDGE_EPM" $(seq "$EDGE_PORTS_LOW" "$EDGE_PORTS_HIGH"); do
  if port_in_use "$port"; then echo "port $port is in use; set BASE_PORT"; exit 1; fi
done
wait_listen() {  # host port pid: until something listens, at most 20 s
  for _ in $(seq 1 200); do
    if ss -Hltn "src $1 and sport = :$2" 2>/dev/null | grep -q .; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "process $3 died before listening on $1:$2"; return 1; }
    sleep 0.1
  done
  echo "nothing listens on $1:$2 after 20 s"; return 1
}

pin() {  # cpus pid...: every thread of the processes
  local cpus=$1 pid; shift
  for pid in "$@"; do taskset -a -pc "$cpus" "$pid" >/dev/null 2>&1 || true; done
}
cpu_ticks() {  # pid...: utime+stime summed over the processes
  local pid total=0
  for pid in "$@"; do total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'))); done
  echo "$total"
}
sys_ticks() {  # pid...: stime (kernel) summed over the processes
  local pid total=0
  for pid in "$@"; do total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $13}'))); done
  echo "$total"
}
rss_kb() {  # pid...: VmRSS summed over the processes
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"))); done
  echo "$total"
}

start_server() {
  "$BIN/rpcgate-bench" server --listen 127.0.0.1 --epm-port "$SERVER_EPM" --data-port "$SERVER_DATA" \
    >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_listen 127.0.0.1 "$SERVER_EPM" "$SERVER_PID"
  wait_listen 127.0.0.1 "$SERVER_DATA" "$SERVER_PID"
}

# Inspection on (one opnum rule, so every request is checked against the policy), 20 rules, the
# bench interface allowed by the last one.
bench_policy() {
  cat "$ROOT/Benchmarks/bench-policy.yaml"
  cat <<EOF
limits:
  max_connections: 30000
  # One client address opens every connection here (haproxy has no such limits): lift the
  # per-source caps of fair admission, which would refuse churn and idle otherwise.
  max_connections_per_source: 30000
  new_connections_per_second_per_source: 1000000
timeouts:
  connect: 5s
  idle: 15m
  bind: 10s
  half_close: 30s
EOF
}

write_rpcgate_config() {
  {
    cat <<EOF
# Generated by Benchmarks/compare.sh.
routes:
  - name: bench
    listen: 127.0.0.1
    epm_port: $GATE_EPM
    upstream: 127.0.0.1
    upstream_epm_port: $SERVER_EPM
    ports: $GATE_PORTS_LOW-$GATE_PORTS_HIGH
    policy: bench
    max_connections: 30000
EOF
    bench_policy
  } >"$OUT/rpcgate.yaml"
}

start_rpcgate() {  # threads
  write_rpcgate_config
  "$BIN/rpcgate" run --config "$OUT/rpcgate.yaml" --threads "$1" --log-level "$RPCGATE_LOG_LEVEL" \
    >>"$OUT/rpcgate.log" 2>&1 &
  RPCGATE_PID=$!
  wait_listen 127.0.0.1 "$GATE_EPM" "$RPCGATE_PID"
  wait_listen 127.0.0.1 "$GATE_PORTS_HIGH" "$RPCGATE_PID"
}

haproxy_globals() {  # threads
  cat <<EOF
global
    nbthread $1
    maxconn $HAPROXY_MAXCONN
defaults
    mode tcp
    maxconn $HAPROXY_MAXCONN
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout client-fin 5s
    timeout tunnel 1h
EOF
}

start_haproxy() {  # threads
  {
    echo "# Generated by Benchmarks/compare.sh: plain TCP forwarding of the EPM and the data port."
    haproxy_globals "$1"
    cat <<EOF
frontend epm
    bind $HAPROXY_HOST:$SERVER_EPM
    default_backend epm
backend epm
    server s1 127.0.0.1:$SERVER_EPM
frontend data
    bind $HAPROXY_HOST:$SERVER_DATA
    default_backend data
backend data
    server s1 127.0.0.1:$SERVER_DATA
EOF
  } >"$OUT/haproxy.cfg"
  haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/haproxy.log" 2>&1 &
  HAPROXY_PID=$!
  wait_listen "$HAPROXY_HOST" "$SERVER_EPM" "$HAPROXY_PID"
  wait_listen "$HAPROXY_HOST" "$SERVER_DATA" "$HAPROXY_PID"
}

# ---- edge + core over mutual TLS
stop_tls_proxies() {
  stop_pid "$EDGE_PID"; EDGE_PID=""
  stop_pid "$CORE_PID"; CORE_PID=""
  stop_pid "$HA_EDGE_PID"; HA_EDGE_PID=""
  stop_pid "$HA_CORE_PID"; HA_CORE_PID=""
}

start_tls_proxies() {  # threads
  stop_tls_proxies
  [ -s "$TLS_DIR/edge.pem" ] || bash "$ROOT/deploy/tls/make-test-ca.sh" "$TLS_DIR" >"$OUT/tls-ca.log" 2>&1
  cat "$TLS_DIR/edge.pem" "$TLS_DIR/edge.key" >"$TLS_DIR/edge-bundle.pem"
  cat "$TLS_DIR/core.pem" "$TLS_DIR/core.key" >"$TLS_DIR/core-bundle.pem"
  {
    cat <<EOF
# Generated by Benchmarks/compare.sh: the core gateway (one TLS port, policy on the real client).
core:
  listen: 127.0.0.1:$CORE_PORT
  tls: { cert: $TLS_DIR/core.pem, key: $TLS_DIR/core.key, ca: $TLS_DIR/ca.pem, allow: ["edge1.example.test"] }
  upstreams: [127.0.0.1]
  upstream_epm_port: $SERVER_EPM
  policy: bench
  max_connections: 30000
EOF
    bench_policy
  } >"$OUT/rpcgate-core.yaml"
  {
    cat <<EOF
# Generated by Benchmarks/compare.sh: the edge gateway (towers point at the edge's ports; every
# connection is carried to the core).
routes:
  - name: bench
    listen: 127.0.0.1
    epm_port: $EDGE_EPM
    upstream: 127.0.0.1
    upstream_epm_port: $SERVER_EPM
    ports: $EDGE_PORTS_LOW-$EDGE_PORTS_HIGH
    policy: bench
    max_connections: 30000
    via: core1
peers:
  core1:
    address: 127.0.0.1:$CORE_PORT
    tls: { cert: $TLS_DIR/edge.pem, key: $TLS_DIR/edge.key, ca: $TLS_DIR/ca.pem, server_name: core1.example.test }
EOF
    bench_policy
  } >"$OUT/rpcgate-edge.yaml"
  "$BIN/rpcgate" run --config "$OUT/rpcgate-core.yaml" --threads "$1" --log-level "$RPCGATE_LOG_LEVEL" \
    >>"$OUT/rpcgate-core.log" 2>&1 &
  CORE_PID=$!
  wait_listen 127.0.0.1 "$CORE_PORT" "$CORE_PID"
  "$BIN/rpcgate" run --config "$OUT/rpcgate-edge.yaml" --threads "$1" --log-level "$RPCGATE_LOG_LEVEL" \
    >>"$OUT/rpcgate-edge.log" 2>&1 &
  EDGE_PID=$!
  wait_listen 127.0.0.1 "$EDGE_EPM" "$EDGE_PID"
  wait_listen 127.0.0.1 "$EDGE_PORTS_HIGH" "$EDGE_PID"

  local tls_in="ssl crt $TLS_DIR/core-bundle.pem ca-file $TLS_DIR/ca.pem verify required"
  local tls_out="ssl crt $TLS_DIR/edge-bundle.pem ca-file $TLS_DIR/ca.pem verify required verifyhost core1.example.test sni str(core1.example.test)"
  {
    echo "# Generated by Benchmarks/compare.sh: core haproxy, TLS in with client certificates required."
    haproxy_globals "$1"
    cat <<EOF
frontend epm
    bind 127.0.0.1:$HA_CORE_EPM $tls_in
    default_backend epm
backend epm
    server s1 127.0.0.1:$SERVER_EPM
frontend data
    bind 127.0.0.1:$HA_CORE_DATA $tls_in
    default_backend data
backend data
    server s1 127.0.0.1:$SERVER_DATA
EOF
  } >"$OUT/haproxy-core.cfg"
  {
    echo "# Generated by Benchmarks/compare.sh: edge haproxy, plain TCP in, TLS with its certificate out."
    haproxy_globals "$1"
    cat <<EOF
frontend epm
    bind $HA_EDGE_HOST:$SERVER_EPM
    default_backend epm
backend epm
    server core 127.0.0.1:$HA_CORE_EPM $tls_out
frontend data
    bind $HA_EDGE_HOST:$SERVER_DATA
    default_backend data
backend data
    server core 127.0.0.1:$HA_CORE_DATA $tls_out
EOF
  } >"$OUT/haproxy-edge.cfg"
  haproxy -db -f "$OUT/haproxy-core.cfg" >>"$OUT/haproxy-core.log" 2>&1 &
  HA_CORE_PID=$!
  wait_listen 127.0.0.1 "$HA_CORE_DATA" "$HA_CORE_PID"
  haproxy -db -f "$OUT/haproxy-edge.cfg" >>"$OUT/haproxy-edge.log" 2>&1 &
  HA_EDGE_PID=$!
  wait_listen "$HA_EDGE_HOST" "$SERVER_DATA" "$HA_EDGE_PID"
}

start_nio() {  # threads
  "$BIN/rpcgate-bench" splice --listen "$NIO_HOST" --ports "$SERVER_EPM,$SERVER_DATA" --upstream 127.0.0.1 \
    --threads "$1" >>"$OUT/nio.log" 2>&1 &
  NIO_PID=$!
  wait_listen "$NIO_HOST" "$SERVER_EPM" "$NIO_PID"
  wait_listen "$NIO_HOST" "$SERVER_DATA" "$NIO_PID"
}

start_proxies() {  # threads
  stop_pid "$RPCGATE_PID"; RPCGATE_PID=""
  stop_pid "$HAPROXY_PID"; HAPROXY_PID=""
  stop_pid "$NIO_PID"; NIO_PID=""
  start_rpcgate "$1"
  start_haproxy "$1"
  if [ "$BASELINE" = nio ]; then start_nio "$1"; fi
}

epm_of() {  # path scenario
  case $2:$1 in
    *:direct) echo "127.0.0.1:$SERVER_EPM" ;;
    tls_*:rpcgate) echo "127.0.0.1:$EDGE_EPM" ;;
    tls_*:haproxy) echo "$HA_EDGE_HOST:$SERVER_EPM" ;;
    *:rpcgate) echo "127.0.0.1:$GATE_EPM" ;;
    *:haproxy) echo "$HAPROXY_HOST:$SERVER_EPM" ;;
    *:nio) echo "$NIO_HOST:$SERVER_EPM" ;;
  esac
}
pid_of() {  # path scenario: the path's proxy processes
  case $2:$1 in
    *:direct) echo "" ;;
    tls_*:rpcgate) echo "$EDGE_PID $CORE_PID" ;;
    tls_*:haproxy) echo "$HA_EDGE_PID $HA_CORE_PID" ;;
    *:rpcgate) echo "$RPCGATE_PID" ;;
    *:haproxy) echo "$HAPROXY_PID" ;;
    *:nio) echo "$NIO_PID" ;;
  esac
}
paths_for_round() {  # round scenario: the paths, in an order rotated each round
  local all=(direct rpcgate haproxy) r=$1 i
  case $2 in tls_*) ;; *) if [ "$BASELINE" = nio ]; then all+=(nio); fi ;; esac
  for i in "${!all[@]}"; do printf '%s ' "${all[$(((i + r) % ${#all[@]}))]}"; done
}

# One client run: appends its JSON line, annotated, to $RESULTS.
run_one() {  # scenario threads round path -- client args...
  local scenario=$1 threads=$2 round=$3 path=$4; shift 5
  local proxy_pid server_cpu0 proxy_cpu0=0 proxy_sys0=0 json status=0 rss0=0 rss1=0 srss0 srss1
  proxy_pid=$(pid_of "$path" "$scenario")
  server_cpu0=$(cpu_ticks "$SERVER_PID")
  srss0=$(rss_kb "$SERVER_PID")
  if [ -n "$proxy_pid" ]; then proxy_cpu0=$(cpu_ticks $proxy_pid); proxy_sys0=$(sys_ticks $proxy_pid); rss0=$(rss_kb $proxy_pid); fi
  rm -f "$OUT/client.time"
  local pinned=()
  case $scenario in
    latency | tls_latency)
      if [ "$PIN_LATENCY" = 1 ] && command -v taskset >/dev/null 2>&1; then
        pinned=(taskset -c 0)
        pin 0 "$SERVER_PID"
        if [ -n "$proxy_pid" ]; then pin 1 $proxy_pid; fi
      fi
      ;;
  esac
  local load0
  load0=$(cut -d' ' -f1 /proc/loadavg)
  if [ "$scenario" = idle ]; then
    local ready=$OUT/idle.ready
    rm -f "$ready"
    timeout 300 "${TIMED[@]}" "$BIN/rpcgate-bench" client --epm "$(epm_of "$path" "$scenario")" "$@" --ready-file "$ready" \
      >"$OUT/client.json" 2>>"$OUT/client.log" &
    CLIENT_PID=$!
    for _ in $(seq 1 1200); do [ -e "$ready" ] && break; kill -0 "$CLIENT_PID" 2>/dev/null || break; sleep 0.1; done
    sleep 1
    srss1=$(rss_kb "$SERVER_PID")
    if [ -n "$proxy_pid" ]; then rss1=$(rss_kb $proxy_pid); fi
    wait "$CLIENT_PID" || status=$?
    CLIENT_PID=""
    json=$(cat "$OUT/client.json")
  else
    json=$(timeout 300 "${TIMED[@]}" "${pinned[@]}" "$BIN/rpcgate-bench" client --epm "$(epm_of "$path" "$scenario")" "$@" 2>>"$OUT/client.log") || status=$?
    if [ ${#pinned[@]} -gt 0 ]; then pin "0-$(($(nproc) - 1))" "$SERVER_PID" $proxy_pid; fi
    srss1=$(rss_kb "$SERVER_PID")
    if [ -n "$proxy_pid" ]; then rss1=$(rss_kb $proxy_pid); fi
  fi
  local proxy_cpu=0 proxy_sys=0 client_cpu=-1
  if [ -n "$proxy_pid" ]; then
    proxy_cpu=$(( $(cpu_ticks $proxy_pid) - proxy_cpu0 ))
    proxy_sys=$(( $(sys_ticks $proxy_pid) - proxy_sys0 ))
  fi
  if [ -s "$OUT/client.time" ]; then client_cpu=$(awk '{printf "%.2f", $1 + $2}' "$OUT/client.time"); fi
  local server_cpu=$(( $(cpu_ticks "$SERVER_PID") - server_cpu0 ))
  [ -n "$json" ] || json='{"errors":1,"first_error":"client printed nothing"}'
  python3 - "$json" "$scenario" "$threads" "$round" "$path" "$proxy_cpu" "$server_cpu" "$CLK_TCK" \
    "$rss0" "$rss1" "$srss0" "$srss1" "$status" "$load0" "$proxy_sys" "$client_cpu" >>"$RESULTS" <<'PY'
import json, sys
(d, scenario, threads, rnd, path, pcpu, scpu, tck, rss0, rss1, srss0, srss1, status, load0, psys, ccpu) = sys.argv[1:]
try:
    r = json.loads(d)
except ValueError:
    r = {"errors": 1, "first_error": "unparsable client output: " + d[:200]}
r.update(scenario=scenario, threads=int(threads), round=int(rnd), path=path,
         proxy_cpu_s=int(pcpu) / int(tck), server_cpu_s=int(scpu) / int(tck),
         proxy_rss_before_kb=int(rss0), proxy_rss_after_kb=int(rss1),
         server_rss_before_kb=int(srss0 or 0), server_rss_after_kb=int(srss1 or 0),
         exit_status=int(status), load1=float(load0), proxy_sys_s=int(psys) / int(tck))
if float(ccpu) >= 0:
    r.update(client_cpu_s=float(ccpu))
print(json.dumps(r))
PY
  log "$(tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["scenario"], "T%d" % r["threads"], "round", r["round"], r["path"], {k: r.get(k) for k in ("mb_per_s","p50_us","p99_us","sequences_per_s","established","held","errors") if k in r}, "proxy cpu %.2fs" % r["proxy_cpu_s"])')"
}

scenario_args() {  # scenario -> client arguments
  case $1 in
    bulk1) echo "--mode bulk --connections 1 --stub-size 65536 --duration $DURATION" ;;
    bulk16) echo "--mode bulk --connections 16 --stub-size 65536 --duration $DURATION" ;;
    latency) echo "--mode latency --stub-size 100 --duration $DURATION" ;;
    churn) echo "--mode churn --connections 8 --stub-size 100 --duration $DURATION" ;;
    idle) echo "--mode idle --connections $IDLE_CONNS --duration $IDLE_HOLD" ;;
    tls_bulk1) scenario_args bulk1 ;;
    tls_latency) scenario_args latency ;;
  esac
}

run_scenario() {  # scenario threads
  local scenario=$1 threads=$2 round path
  log "scenario $scenario, proxies with $threads thread(s)"
  for round in $(seq 1 "$ROUNDS"); do
    if [ "$scenario" = idle ]; then start_proxies "$threads"; fi   # clean RSS baseline
    for path in $(paths_for_round "$round" "$scenario"); do
      if [ "$scenario" = idle ]; then stop_pid "$SERVER_PID"; start_server; fi   # and for the server
      # shellcheck disable=SC2046
      run_one "$scenario" "$threads" "$round" "$path" -- $(scenario_args "$scenario")
    done
  done
}

# ---------------------------------------------------------------- measure
start_server
start_proxies "$THREADS"
if [ -n "$TLS_DIR" ]; then start_tls_proxies "$THREADS"; fi
log "server pid $SERVER_PID, rpcgate pid $RPCGATE_PID, haproxy pid $HAPROXY_PID${NIO_PID:+, nio pid $NIO_PID}; load $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for scenario in $SCENARIOS; do run_scenario "$scenario" "$THREADS"; done
if [ -n "$EXTRA_THREADS" ] && [ "$EXTRA_THREADS" != "$THREADS" ]; then
  stop_tls_proxies
  start_proxies "$EXTRA_THREADS"
  for scenario in $SCENARIOS; do
    case $scenario in bulk16 | churn) run_scenario "$scenario" "$EXTRA_THREADS" ;; esac
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
cleanup
trap - EXIT
ELAPSED=$(( $(date +%s) - STARTED_AT ))

# ---------------------------------------------------------------- report
MACHINE=$(
  printf -- '- CPU: %s x %s (`nproc` %s)\n' "$(grep -c ^processor /proc/cpuinfo)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" "$(nproc)"
  printf -- '- Memory: %s MiB; kernel %s\n' "$(free -m | awk '/^Mem:/ {print $2}')" "$(uname -r)"
  printf -- '- %s; %s\n' "$(swift --version 2>&1 | grep -m1 'Swift version' | sed 's/^.*\(Swift version [^ ]*\).*$/\1/')" "$(haproxy -v | head -1 | cut -d' ' -f1-3)"
  printf -- '- RLIMIT_NOFILE %s (hard %s): idle scenario with %s connections (%s requested)\n' "$NOFILE" "$(ulimit -Hn)" "$IDLE_CONNS" "$IDLE_REQUESTED"
  printf -- '- Load average before %s, after %s; the run took %s s\n' "$LOAD_BEFORE" "$LOAD_AFTER" "$ELAPSED"
)
python3 - "$RESULTS" "$PERF_DOC" "$COMMAND_LINE" "$MACHINE" "$THREADS" "$EXTRA_THREADS" "$IDLE_CONNS" "$DURATION" "$ROUNDS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys, os, datetime
results_path, doc_path, command, machine, threads, extra, idle_n, duration, rounds, load_before, load_after = sys.argv[1:]
rows = [json.loads(l) for l in open(results_path) if l.strip()]
PATHS = ["direct", "rpcgate", "haproxy"]
# BASELINE=nio: the bare SwiftNIO forwarder as a fourth column, and rpcgate/nio.
NIO = any(r["path"] == "nio" for r in rows)
if NIO:
    PATHS.append("nio")

def values(scenario, t, path, fn):
    out = []
    for r in rows:
        if r["scenario"] == scenario and r["threads"] == t and r["path"] == path:
            v = fn(r)
            if v is not None:
                out.append(v)
    return out

def med(vs):
    return statistics.median(vs) if vs else None

def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"

def cell(vs, digits=0):
    if not vs:
        return "–"
    m = med(vs)
    if len(vs) > 1:
        return f"{fmt(m, digits)} ({fmt(min(vs), digits)}–{fmt(max(vs), digits)})"
    return fmt(m, digits)

def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.{digits}f}"

def gb(r):  # stub bytes forwarded, both directions
    return 2 * r.get("stub_bytes_each_way", 0) / 1e9

def cpu_per_gb(r):
    return r["proxy_cpu_s"] / gb(r) if r["path"] != "direct" and gb(r) > 0 else None

def per_seq(r, cpu_s):
    n = r.get("sequences") or 0
    return cpu_s * 1e6 / n if cpu_s is not None and n > 0 else None

def ok(r):
    return r.get("errors", 1) == 0 and r.get("exit_status", 1) == 0

if NIO:
    table = ["| Scenario | Metric | direct | rpcgate | haproxy | bare NIO | rpcgate/haproxy | rpcgate/direct | rpcgate/NIO |",
             "|---|---|---|---|---|---|---|---|---|"]
else:
    table = ["| Scenario | Metric | direct | rpcgate | haproxy | rpcgate/haproxy | rpcgate/direct |",
             "|---|---|---|---|---|---|---|"]
problems = []
for r in rows:
    if not ok(r) and r["scenario"] != "churn":
        problems.append(f'{r["scenario"]} T{r["threads"]} round {r["round"]} {r["path"]}: errors {r.get("errors")}, exit {r.get("exit_status")}: {r.get("first_error")}')
    if r["scenario"] == "churn" and r.get("errors", 0) > 0:
        problems.append(f'churn T{r["threads"]} round {r["round"]} {r["path"]}: {r.get("errors")} failed sequences of {r.get("sequences")}: {r.get("first_error")}')

def row(label, metric, shown, m, ratio_paths=True, direct_ratio=True):
    """One table row: each path's cell as shown, then the ratios of the medians `m`."""
    cells = [label, metric] + [shown[p] for p in PATHS]
    cells += [
        ratio(m["rpcgate"], m["haproxy"]) if ratio_paths else "–",
        ratio(m["rpcgate"], m["direct"]) if (ratio_paths and direct_ratio) else "–",
    ]
    if NIO:
        cells.append(ratio(m["rpcgate"], m["nio"]) if ratio_paths else "–")
    table.append("| " + " | ".join(cells) + " |")

def line(label, metric, scenario, t, fn, digits=0, ratio_paths=True, direct=True):
    vs = {p: values(scenario, t, p, fn) for p in PATHS}
    if not any(vs.values()):
        return
    shown = {p: cell(vs[p], digits) for p in PATHS}
    if not direct:
        shown["direct"] = "–"
    row(label, metric, shown, {p: med(vs[p]) for p in PATHS}, ratio_paths, direct_ratio=direct)

def latency_lines(label, scenario, t):
    line(label, "p50 µs", scenario, t, lambda r: r.get("p50_us"), 0)
    line(label, "p99 µs", scenario, t, lambda r: r.get("p99_us"), 0)
    # Added latency: each path's median p50 minus the direct median p50.
    dm = med(values(scenario, t, "direct", lambda r: r.get("p50_us")))
    if dm is not None:
        am = {p: med(values(scenario, t, p, lambda r: r.get("p50_us"))) for p in PATHS}
        add = {p: (am[p] - dm if am[p] is not None else None) for p in PATHS}
        shown = {p: fmt(add[p]) for p in PATHS}
        shown["direct"] = "0"
        row(label, "added p50 µs (vs direct)", shown, add, direct_ratio=False)

thread_sets = [int(threads)] + ([int(extra)] if extra and extra != threads else [])
for t in thread_sets:
    tl = f"T={t}"
    line(f"bulk 64 KiB, 1 conn ({tl})", "MB/s each way", "bulk1", t, lambda r: r.get("mb_per_s"), 0)
    line(f"bulk 64 KiB, 1 conn ({tl})", "proxy CPU-s per GB", "bulk1", t, cpu_per_gb, 2, direct=False)
    line(f"bulk 64 KiB, 16 conns ({tl})", "MB/s each way", "bulk16", t, lambda r: r.get("mb_per_s"), 0)
    line(f"bulk 64 KiB, 16 conns ({tl})", "proxy CPU-s per GB", "bulk16", t, cpu_per_gb, 2, direct=False)
    latency_lines(f"latency 100 B ({tl})", "latency", t)
    line(f"churn, 8 workers ({tl})", "sequences/s (lookup+bind+call+close)", "churn", t, lambda r: r.get("sequences_per_s"), 0)
    # CPU per sequence: churn saturates both cores, so sequences/s is 2 cores over the sum of
    # these (client + server + proxy); the proxy's kernel part is its sockets' work.
    line(f"churn, 8 workers ({tl})", "proxy CPU µs per sequence (user+sys)", "churn", t,
         lambda r: per_seq(r, r["proxy_cpu_s"]) if r["path"] != "direct" else None, 0, direct=False)
    line(f"churn, 8 workers ({tl})", "of which kernel (sys) µs", "churn", t,
         lambda r: per_seq(r, r.get("proxy_sys_s")) if r["path"] != "direct" else None, 0, direct=False)
    line(f"churn, 8 workers ({tl})", "client + server CPU µs per sequence", "churn", t,
         lambda r: per_seq(r, r["server_cpu_s"] + r["client_cpu_s"]) if "client_cpu_s" in r else None, 0, ratio_paths=False)
    line(f"idle {int(idle_n):,} conns ({tl})", "held / requested", "idle", t, lambda r: r.get("held"), 0)
    line(f"idle {int(idle_n):,} conns ({tl})", "proxy RSS kB per conn", "idle", t,
         lambda r: (r["proxy_rss_after_kb"] - r["proxy_rss_before_kb"]) / max(1, r.get("held", 0) or 1) if r["path"] != "direct" else None, 2, direct=False)
    line(f"idle {int(idle_n):,} conns ({tl})", "server RSS kB per conn (reference)", "idle", t,
         lambda r: (r["server_rss_after_kb"] - r["server_rss_before_kb"]) / max(1, r.get("held", 0) or 1), 2, ratio_paths=False)
    line(f"idle {int(idle_n):,} conns ({tl})", "time to open and bind all (s)", "idle", t, lambda r: r.get("open_s"), 1)
    line(f"idle {int(idle_n):,} conns ({tl})", "proxy CPU µs per connection (open, bind, hold)", "idle", t,
         lambda r: r["proxy_cpu_s"] * 1e6 / r["held"] if r["path"] != "direct" and r.get("held") else None, 0, direct=False)
    line(f"edge+core mTLS, bulk 64 KiB, 1 conn ({tl})", "MB/s each way", "tls_bulk1", t, lambda r: r.get("mb_per_s"), 0)
    line(f"edge+core mTLS, bulk 64 KiB, 1 conn ({tl})", "CPU-s per GB, both proxies", "tls_bulk1", t, cpu_per_gb, 2, direct=False)
    latency_lines(f"edge+core mTLS, latency 100 B ({tl})", "tls_latency", t)

text = "\n".join(table)
print("\n" + text + "\n")
if problems:
    print("Problems:\n" + "\n".join("- " + p for p in problems))

# One machine-readable line with every ratio (rpcgate/haproxy of the medians unless the name ends in
# _direct: rpcgate/direct), for scripts: `ratios: churn=0.70 idle_rss=2.43 ...`. Ratios of the
# extra thread count carry a _T<n> suffix; a ratio that was not measured is left out. Higher is
# better for throughput ratios (bulk1, bulk16, tls_bulk1, churn); lower is better for the others
# (cpu, rss, time, latency).
def summary_ratios():
    out = []
    def add(name, scenario, t, fn, base="haproxy", path="rpcgate"):
        a = med(values(scenario, t, path, fn))
        b = med(values(scenario, t, base, fn))
        if a is not None and b not in (None, 0):
            out.append((name, a / b))
    def add_latency(name, scenario, t, path="rpcgate", p50_ratio=True):
        d = med(values(scenario, t, "direct", lambda r: r.get("p50_us")))
        a = med(values(scenario, t, path, lambda r: r.get("p50_us")))
        h = med(values(scenario, t, "haproxy", lambda r: r.get("p50_us")))
        if None not in (d, a, h) and h - d != 0:
            out.append((name, (a - d) / (h - d)))
        if p50_ratio and a is not None and h:
            out.append((name.replace("added_", ""), a / h))  # the p50 ratio itself
    def idle_rss(r):
        if r["path"] == "direct":
            return None
        return (r["proxy_rss_after_kb"] - r["proxy_rss_before_kb"]) / max(1, r.get("held", 0) or 1)
    for i, t in enumerate(thread_sets):
        sfx = "" if i == 0 else f"_T{t}"
        mbs = lambda r: r.get("mb_per_s")
        add("churn" + sfx, "churn", t, lambda r: r.get("sequences_per_s"))
        add("churn_direct" + sfx, "churn", t, lambda r: r.get("sequences_per_s"), base="direct")
        add("idle_rss" + sfx, "idle", t, idle_rss)
        add("idle_bind_time" + sfx, "idle", t, lambda r: r.get("open_s"))
        add("idle_bind_time_direct" + sfx, "idle", t, lambda r: r.get("open_s"), base="direct")
        add_latency("added_p50" + sfx, "latency", t)
        add("bulk1" + sfx, "bulk1", t, mbs)
        add("bulk16" + sfx, "bulk16", t, mbs)
        add("bulk1_cpu" + sfx, "bulk1", t, cpu_per_gb)
        add("bulk16_cpu" + sfx, "bulk16", t, cpu_per_gb)
        add("tls_bulk1" + sfx, "tls_bulk1", t, mbs)
        add("tls_bulk1_cpu" + sfx, "tls_bulk1", t, cpu_per_gb)
        add_latency("tls_added_p50" + sfx, "tls_latency", t)
        if NIO:
            # The floor: the bare NIO forwarder against haproxy (nio_*), and rpcgate against it (*_vs_nio).
            seqs = lambda r: r.get("sequences_per_s")
            add("nio_churn" + sfx, "churn", t, seqs, path="nio")
            add("churn_vs_nio" + sfx, "churn", t, seqs, base="nio")
            add("nio_idle_rss" + sfx, "idle", t, idle_rss, path="nio")
            add("idle_rss_vs_nio" + sfx, "idle", t, idle_rss, base="nio")
            add("nio_idle_bind_time" + sfx, "idle", t, lambda r: r.get("open_s"), path="nio")
            add_latency("nio_added_p50" + sfx, "latency", t, path="nio", p50_ratio=False)
            add("nio_bulk1" + sfx, "bulk1", t, mbs, path="nio")
            add("nio_bulk16" + sfx, "bulk16", t, mbs, path="nio")
    return out

ratio_line = "ratios: " + " ".join(f"{k}={v:.2f}" for k, v in summary_ratios())

if doc_path:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nio_note = ("\n- bare NIO (`BASELINE=nio`): `rpcgate-bench splice`, a SwiftNIO glue-handler splice with\n"
                "  rpcgate's channel options and read sizes, upstream connected at accept, nothing else; same\n"
                "  build and threads. The floor of a NIO proxy.") if NIO else ""
    generated = f"""<!-- compare.sh:begin (generated by Benchmarks/compare.sh; edit outside these markers) -->
## Gateway vs direct vs haproxy ({now})

Command: `{command}`

{machine}
- {rounds} interleaved rounds per scenario, {duration} s per run; cells are median (min–max).
- rpcgate: release build with the shipped flags (`-Xswiftc -enforce-exclusivity=unchecked`),
  `--threads T`, `--log-level warning`, inspection on (20 rules, one with opnums, so every request
  is checked), EPM towers rewritten. haproxy: `mode tcp`, `nbthread T`, no logging. All on
  loopback with the client and the bench server on the same 2 cores.{nio_note}
- MB/s counts stub bytes each way (echo: the same amount comes back). CPU-s per GB is the proxy's
  utime+stime (`/proc/PID/stat`) per GB of stub forwarded in both directions.
- edge+core mTLS rows: two proxies per path with TLS 1.3 and client certificates between them
  (rpcgate: one TLS port, PROXY v2 header, the policy on both; haproxy: `ssl ... verify required`
  on one port per service); CPU is the sum of both proxy processes; direct is the same direct run
  as in the other rows' scenario, measured again in these rounds.

{text}
"""
    if problems:
        generated += "\nProblems during the run:\n" + "\n".join("- " + p for p in problems) + "\n"
    generated += "<!-- compare.sh:end -->\n"
    if os.path.exists(doc_path):
        old = open(doc_path).read()
        b, e = old.find("<!-- compare.sh:begin"), old.find("<!-- compare.sh:end -->")
        if b >= 0 and e >= 0:
            new = old[:b] + generated + old[e + len("<!-- compare.sh:end -->\n"):]
        else:
            new = old.rstrip("\n") + "\n\n" + generated
    else:
        new = "# RPCGate performance\n\n" + generated
    os.makedirs(os.path.dirname(doc_path), exist_ok=True)
    open(doc_path, "w").write(new)
    print(f"written to {doc_path}")
print(f"load average before {load_before}, after {load_after}")
print(ratio_line)
PY
log "raw results: $RESULTS"
# The last line of the output is the ratio summary (printed above by the report); repeat it last.
grep -h '^ratios: ' "$OUT/summary.txt" 2>/dev/null | tail -1 || true

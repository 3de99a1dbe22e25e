#!/usr/bin/env bash
# Runs the libFuzzer targets, each for SECONDS with its own corpus:
#   RPCWireFuzz     framer, PDU parser/round trip, endpoint-mapper rewriter and stubs
#   RPCGatewayFuzz  the whole per-connection pipeline (framers, glue handlers, state machine,
#                   EPM rewriting, port pool, timers) in EmbeddedChannels, bytes from both sides
#   RPCConfigFuzz   the YAML configuration loader
#
#   scripts/fuzz.sh [SECONDS] [TARGET|all]     SECONDS per target (default 60), TARGET default all
#
# CI (scripts/test.sh) runs `scripts/fuzz.sh 30`: 30 s per target. Long runs pass e.g. 600.
# Exits non-zero when libFuzzer finds a crash in any target (every target still runs); the
# reproducer is left in fuzz-artifacts/<TARGET>/. Replay one with
#   .build-fuzz/debug/<TARGET> fuzz-artifacts/<TARGET>/crash-...
# (or, without instrumentation, `swift run <TARGET> FILE`), then add it as a regression test
# (Tests/RPCFuzzRegressionTests).
# Corpora grow across runs in .build-fuzz/corpus/<TARGET>/ (seeded from the fixtures every run).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
which="${2:-all}"
all_targets=(RPCWireFuzz RPCGatewayFuzz RPCConfigFuzz)
scratch=.build-fuzz

case "$which" in
  all) targets=("${all_targets[@]}") ;;
  RPCWireFuzz|RPCGatewayFuzz|RPCConfigFuzz) targets=("$which") ;;
  *) echo "usage: scripts/fuzz.sh [SECONDS] [all|${all_targets[*]// /|}]" >&2; exit 2 ;;
esac
[[ $seconds =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number, got '$seconds'" >&2; exit 2; }

# Seeds: the captured fixtures as they are (wire), as two-sided conversations in the gateway
# harness's chunk format (gateway), and every YAML text we have (config).
seed() { # target corpus-dir
  python3 - "$1" "$2" <<'PY'
import pathlib, re, struct, sys, textwrap
target, out = sys.argv[1], pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
fixtures = pathlib.Path("Tests/RPCWireTests/Fixtures")

def fixture(name):
    f = fixtures / (name + ".hex")
    return bytes.fromhex("".join("".join(l.strip() for l in f.read_text().splitlines() if not l.startswith("#")).split()))

def write(name, data):
    (out / ("seed-" + name)).write_bytes(data)

n = 0
if target == "RPCWireFuzz":
    for f in sorted(fixtures.glob("*.hex")):
        write(f.stem, fixture(f.stem)); n += 1
    # Synthetic Kerberos tokens (no capture has one over TCP here): a GSS-wrapped AP-REQ inside a
    # SPNEGO negTokenInit, and the bare AP-REQ, for AuthIdentity's DER paths.
    def der(tag, body):
        n_ = len(body)
        head = bytes([n_]) if n_ < 0x80 else (bytes([0x81, n_]) if n_ < 0x100 else bytes([0x82, n_ >> 8, n_ & 0xFF]))
        return bytes([tag]) + head + body
    gs = lambda t: der(0x1B, t.encode())
    sname = der(0x30, der(0xA0, der(0x02, b"\x02")) + der(0xA1, der(0x30, gs("host") + gs("dc1.example.test"))))
    ticket = der(0x61, der(0x30, der(0xA0, der(0x02, b"\x05")) + der(0xA1, gs("EXAMPLE.TEST")) + der(0xA2, sname)
                        + der(0xA3, der(0x30, der(0xA0, der(0x02, b"\x12")) + der(0xA2, der(0x04, b"\xee" * 32))))))
    ap_req = der(0x6E, der(0x30, der(0xA0, der(0x02, b"\x05")) + der(0xA1, der(0x02, b"\x0e"))
                          + der(0xA2, der(0x03, b"\x00\x20\x00\x00\x00")) + der(0xA3, ticket)
                          + der(0xA4, der(0x30, der(0xA0, der(0x02, b"\x12")) + der(0xA2, der(0x04, b"\xaa" * 16))))))
    krb5_oid = bytes.fromhex("2a864886f712010202")
    gss = der(0x60, der(0x06, krb5_oid) + b"\x01\x00" + ap_req)
    spnego = der(0x60, der(0x06, bytes.fromhex("2b0601050502"))
                 + der(0xA0, der(0x30, der(0xA0, der(0x30, der(0x06, krb5_oid))) + der(0xA2, der(0x04, gss)))))
    write("kerberos-ap-req", ap_req); write("kerberos-gss", gss); write("spnego-kerberos", spnego); n += 3
    # PROXY v2 headers as an edge sends them to a core (IPv4 and IPv6 clients, the RPCGate target
    # TLV 0xE0: kind, server IPv4, port), followed by a bind: libFuzzer does not find the 12-byte
    # signature on its own (coverage of ProxyHeader.swift was 16 % before these seeds).
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    def proxy_v2(family, addresses, tlvs):
        body = addresses + b"".join(bytes([t]) + struct.pack(">H", len(v)) + v for t, v in tlvs)
        return signature + bytes([0x21, family]) + struct.pack(">H", len(body)) + body
    target_epm = (0xE0, bytes([1, 10, 99, 0, 2]) + struct.pack(">H", 135))
    target_mapped = (0xE0, bytes([2, 10, 99, 0, 2]) + struct.pack(">H", 49153))
    v4 = bytes([10, 1, 0, 7, 10, 99, 0, 1]) + struct.pack(">HH", 50123, 135)
    v6 = bytes.fromhex("fd000000000000000000000000000007" "fd000000000000000000000000000001") + struct.pack(">HH", 50124, 135)
    bind = fixture("ept_bind") if (fixtures / "ept_bind.hex").exists() else b""
    write("proxy-v2-ipv4-epm", proxy_v2(0x11, v4, [target_epm]) + bind)
    write("proxy-v2-ipv6-mapped", proxy_v2(0x21, v6, [target_mapped, (0x04, b"\x00\x00")]) + bind)
    write("proxy-v2-local", signature + bytes([0x20, 0x00, 0x00, 0x00])); n += 3
elif target == "RPCGatewayFuzz":
    # GatewayHarness: selector byte, then [op u8][n u16 le][data]; op 0 client, 3 server, 6 clock.
    def chunk(op, data=b"", n=None):
        return bytes([op]) + struct.pack("<H", len(data) if n is None else n) + data
    C, S = 0, 3
    conversations = {
        "epm-map": (1, [(C, "ept_bind"), (S, "ept_bind_ack"), (C, "ept_map_request"), (S, "ept_map_response")]),
        "epm-map-not-registered": (1, [(C, "ept_bind"), (S, "ept_bind_ack"), (C, "ept_map_request"), (S, "ept_map_not_registered_response")]),
        "epm-map-rpcclient": (1, [(C, "ept_bind"), (S, "ept_bind_ack"), (C, "rpcclient_ept_map_request"), (S, "rpcclient_ept_map_response")]),
        "epm-lookup": (1, [(C, "ept_lookup_bind"), (S, "ept_lookup_bind_ack"), (C, "ept_lookup_request"),
                           (S, "ept_lookup_response_frag1"), (S, "ept_lookup_response_frag2"),
                           (S, "ept_lookup_response_frag3"), (S, "ept_lookup_response_frag4")]),
        "epm-ndr64": (1, [(C, "ept_bind"), (S, "ept_bind_ack"), (C, "ept_map_request"), (S, "ndr64_ept_map_response")]),
        "mapped-three-contexts": (0, [(C, "bind_three_contexts_samr"), (S, "bind_ack_three_contexts_samr")]),
        "mapped-ntlm-signed": (0, [(C, "ntlm_bind"), (S, "ntlm_bind_ack"), (C, "ntlm_auth3"), (C, "signed_request"), (S, "signed_response")]),
        "mapped-sealed": (0, [(C, "sealed_bind"), (S, "ntlm_bind_ack"), (C, "sealed_request"), (S, "sealed_response")]),
        "mapped-spnego": (0, [(C, "spnego_bind"), (S, "spnego_bind_ack"), (C, "spnego_alter_context"),
                              (S, "spnego_alter_context_resp"), (C, "spnego_sealed_request")]),
        "mapped-alter-drsuapi": (0, [(C, "bind_three_contexts"), (S, "bind_ack_three_contexts"),
                                     (C, "alter_context_drsuapi"), (S, "alter_context_resp_drsuapi")]),
        "mapped-fault": (0, [(C, "bind_three_contexts_samr"), (S, "bind_ack_three_contexts_samr"), (S, "fault_op_rng_error")]),
    }
    for name, (selector, steps) in conversations.items():
        body = b"".join(chunk(op, fixture(f)) for op, f in steps)
        for extra in (0, 2, 8):
            write("%s-%d" % (name, selector | extra), bytes([selector | extra]) + body); n += 1
        # then the clock runs past every timeout, and the client half-closes
        write("%s-timeouts" % name, bytes([selector]) + body + chunk(6, n=40) + chunk(7, n=0) + chunk(6, n=1000)); n += 1
    for f in sorted(fixtures.glob("*.hex")):
        for selector in (0, 1):
            for op in (C, S):
                write("%s-%d-%d" % (f.stem, selector, op), bytes([selector]) + chunk(op, fixture(f.stem))); n += 1
elif target == "RPCConfigFuzz":
    for f in sorted(pathlib.Path("config").glob("*.yaml")):
        write(f.name, f.read_bytes()); n += 1
    # every multi-line string literal in the config tests (valid and broken configurations)
    for f in sorted(pathlib.Path("Tests/RPCGatewayConfigTests").glob("*.swift")):
        for i, m in enumerate(re.finditer(r'"""\n(.*?)\n([ \t]*)"""', f.read_text(), re.S)):
            text, indent = m.group(1), m.group(2)
            lines = [l[len(indent):] if l.startswith(indent) else l.lstrip() for l in m.group(1).split("\n")]
            write("%s-%d.yaml" % (f.stem, i), ("\n".join(lines) + "\n").encode()); n += 1
print("%s: seeded %d inputs" % (target, n))
PY
}

# A libFuzzer dictionary of the configuration keys and value shapes (RPCConfigFuzz).
config_dict() { # file
  {
    { grep -hoE 'static let [a-zA-Z]+Keys = \[[^]]*\]' Sources/RPCGatewayConfig/*.swift
      grep -hoE 'fields\["[a-z_]+"\]' Sources/RPCGatewayConfig/*.swift; } | grep -oE '"[a-z_]+"' | sort -u
    printf '"%s"\n' ': ' '- ' '\x0A' '\x0A  - ' '  ' '[' ']' '{' '}' '#' '&a' '*a' '!!str' '---' '...' '|' '>' \
      '50000-50099' '127.0.0.1' '10.0.0.0/8' 'fd00::/8' '[::1]:9135' '500ms' '10m' '1h' 'samr' 'drsuapi' \
      'epmapper' 'allow' 'deny' 'audit' 'privacy' 'integrity' '12345778-1234-abcd-ef00-0123456789ac@1.0'
  } >"$1"
}

status=0
summary=()
for target in "${targets[@]}"; do
  echo "== building $target with libFuzzer instrumentation"
  RPCGATE_FUZZ=1 swift build --scratch-path "$scratch" --product "$target" --sanitize=fuzzer -c debug 2>&1 \
    | grep -vE '^\[[0-9]+/[0-9]+\]' || true
  binary="$scratch/debug/$target"
  [ -x "$binary" ] || { echo "fuzz build of $target failed"; status=1; summary+=("$target: BUILD FAILED"); continue; }

  corpus="$scratch/corpus/$target"
  artifacts="fuzz-artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  seed "$target" "$corpus"
  extra=(-max_len=16384)
  if [ "$target" = RPCConfigFuzz ]; then
    config_dict "$scratch/config.dict"
    extra=(-max_len=8192 -dict="$scratch/config.dict")
  fi

  echo "== fuzzing $target for ${seconds}s"
  log="$scratch/$target.log"
  set +e
  SWIFT_BACKTRACE=enable=no "$binary" "$corpus" -max_total_time="$seconds" "${extra[@]}" -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^#[0-9]+ +(DONE|pulse)|cov:' "$log" | tail -2 || true
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
  speed=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
  if [ $rc -ne 0 ]; then
    echo "FUZZ FAILURE in $target (exit $rc): see $log and $artifacts/"
    tail -40 "$log"
    status=1
    summary+=("$target: CRASH (exit $rc) after $runs runs; reproducer in $artifacts/")
  else
    summary+=("$target: no crash in ${seconds}s, $runs runs, $speed exec/s")
  fi
done

echo
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $status

#!/usr/bin/env bash
# Runs the libFuzzer targets, each for SECONDS with its own corpus:
#   RPCWireFuzz     framer, PDU parser/round trip, endpoint-mapper rewriter and stubs, DCOM parsers
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

# Synthetic DCOM messages (MS-DCOM 2.2; captures stay outside the project), NDR32 little-endian:
# activation request and reply stubs, and PDUs around them, for the DCOM parsers and the SCM path.
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def pad(b, n): return b + b"\0" * (-len(b) % n)
def guid(text):
    import uuid as _u
    return _u.UUID(text).bytes_le
def dsa_units(addresses, principal="host/dc1"):
    u = []
    for a in addresses:
        u += [7] + [ord(c) for c in a] + [0]
    u.append(0); off = len(u)
    u += [0x0A, 0xFFFF] + [ord(c) for c in principal] + [0, 0]
    return u, off
def units_bytes(u): return b"".join(u16(x) for x in u)
def ndr_dsa(addresses):
    u, off = dsa_units(addresses)
    return u32(len(u)) + u16(len(u)) + u16(off) + units_bytes(u)
def type_serialized(body):
    body = pad(body, 8)
    return bytes([1, 0x10, 8, 0]) + u32(0xCCCCCCCC) + u32(len(body)) + u32(0) + body
def activation_blob(props):
    n_ = len(props)
    def header(total, size):
        h = u32(total) + u32(size) + u32(0) + u32(2) + u32(n_) + b"\0" * 16 + u32(0x20000) + u32(0x20004) + u32(0)
        h += u32(n_) + b"".join(guid(c) for c, _ in props) + u32(n_) + b"".join(u32(len(b)) for _, b in props)
        return type_serialized(h)
    size = len(header(0, 0))
    total = size + sum(len(b) for _, b in props)
    return u32(total) + u32(0) + header(total, size) + b"".join(b for _, b in props)
def objref_custom(iid, clsid, data):
    return u32(0x574F454D) + u32(4) + guid(iid) + guid(clsid) + u32(0) + u32(len(data) + 8) + data
def objref_standard(iid, oxid, ipid, addresses):
    u, off = dsa_units(addresses)
    return (u32(0x574F454D) + u32(1) + guid(iid) + u32(0) + u32(5) + struct.pack("<QQ", oxid, 0x1234) + guid(ipid)
            + u16(len(u)) + u16(off) + units_bytes(u))
def interface_pointer(objref): return pad(u32(len(objref)) + u32(len(objref)) + objref, 4)
IDISPATCH = "00020400-0000-0000-c000-000000000046"
def activation_request(clsid, create=True):
    info = guid(clsid) + u32(0x14) + u32(0) + u32(0) + u32(1) + u32(0) + u32(0x20000) + u32(0) + u16(5) + u16(7)
    info += u32(1) + guid(IDISPATCH)
    blob = activation_blob([("000001ab-0000-0000-c000-000000000046", type_serialized(info))])
    objref = objref_custom("000001a2-0000-0000-c000-000000000046", "00000338-0000-0000-c000-000000000046", blob)
    this = u16(5) + u16(7) + u32(0) + u32(0) + guid("fd7ed21b-dac9-49d2-aadd-65b0c706fc49") + u32(0)
    return this + (u32(0) if create else b"") + u32(0x20000) + interface_pointer(objref)
def activation_reply(port):
    scm = u32(0) + u32(0x20000) + struct.pack("<Q", 0x0537735075213667) + u32(0x20004)
    scm += guid("0000c000-0530-0000-7d85-2faeeac5c880") + u32(4) + u16(5) + u16(7)
    scm += ndr_dsa(["dc1[%d]" % port, "10.0.0.5[%d]" % port])
    std = objref_standard(IDISPATCH, 0x0537735075213667, "00014006-0530-0000-0333-997691ea98ab", ["dc1", "10.0.0.5"])
    props = u32(1) + u32(0x20000) + u32(0x20004) + u32(0x20008) + u32(1) + guid(IDISPATCH) + u32(1) + u32(0)
    props += u32(1) + u32(0x2000C) + interface_pointer(std)
    blob = activation_blob([("00000339-0000-0000-c000-000000000046", type_serialized(props)),
                            ("000001b6-0000-0000-c000-000000000046", type_serialized(scm))])
    objref = objref_custom("000001a3-0000-0000-c000-000000000046", "00000339-0000-0000-c000-000000000046", blob)
    return u32(1) + u32(0) + u32(0x20000) + interface_pointer(objref) + u32(0)
def co_pdu(ptype, body, call_id, flags=3):
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, flags, b"\x10\0\0\0", 16 + len(body), 0, call_id) + body
NDR32 = guid("8a885d04-1ceb-11c9-9fe8-08002b104860") + u32(2)
ACTIVATOR = guid("000001a0-0000-0000-c000-000000000046") + u32(0)
dcom_bind = co_pdu(11, u16(4280) + u16(4280) + u32(0) + struct.pack("<B3x", 1) + u16(0) + bytes([1, 0]) + ACTIVATOR + NDR32, 1)
dcom_bind_ack = co_pdu(12, pad(u16(4280) + u16(4280) + u32(0x1234) + u16(4) + b"135\0", 4)
                       + struct.pack("<B3x", 1) + u16(0) + u16(0) + NDR32, 1)
def dcom_request(stub, opnum=4, call_id=2): return co_pdu(0, u32(len(stub)) + u16(0) + u16(opnum) + stub, call_id)
def dcom_response(stub, call_id=2): return co_pdu(2, u32(len(stub)) + u16(0) + bytes([0, 0]) + stub, call_id)

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
    # DCOM stubs and PDUs (see the builders above).
    guid16 = bytes(range(16))
    alive = u16(5) + u16(7) + u32(0x20000) + pad(ndr_dsa(["WORKSTATION6", "172.18.39.6"]), 4) + u32(0) + u32(0)
    resolve = u32(0x20000) + pad(ndr_dsa(["ws6[65082]", "172.18.39.6[65082]"]), 4) + guid16 + u32(4) + u16(5) + u16(7) + u32(0)
    objref = objref_standard(IDISPATCH, 0x0537, "00014006-0530-0000-0333-997691ea98ab", ["dc1[49670]"])
    mmc20 = activation_request("49b2791a-b1ae-4c90-9b8e-e860ba07f889")
    reply = activation_reply(49670)
    for name_, data in [("dcom-serveralive2-reply", alive), ("dcom-resolveoxid2-reply", resolve), ("dcom-objref", objref),
                        ("dcom-activation-request", mmc20), ("dcom-activation-reply", reply),
                        ("dcom-activation-pdus", dcom_bind + dcom_bind_ack + dcom_request(mmc20) + dcom_response(reply))]:
        write(name_, data); n += 1
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
    # GatewayHarness: selector byte, then [op u8][n u16 le][data]; op 0 client, 3 server, 6 clock
    # (selector bit 5: RoutingHarness, whose ops 5-7 answer the machine; see its doc comment).
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
    # DCOM on the endpoint-mapper listener: activator bind, an activation and its reply. The
    # harness's policies do not allow the activator, so this reaches the SCM bind decision and its
    # refusal (the allowed path is covered by the unit tests and test_dcom.py).
    dcom = (chunk(C, dcom_bind) + chunk(S, dcom_bind_ack)
            + chunk(C, dcom_request(activation_request("8bc3f05e-d86b-11d0-a075-00c04fb68820")))
            + chunk(S, dcom_response(activation_reply(49670))))
    for extra in (0, 2, 8):
        write("dcom-activation-%d" % (1 | extra), bytes([1 | extra]) + dcom); n += 1
    # First-bind routing (selector bit 5, RoutingHarness): op 5 answers the resolution (n % 4 == 0:
    # that port), 6 the upstream connect, 7 the endpoints known for an alter_context.
    RESOLVE, CONNECTED, ENDPOINTS = 5, 6, 7
    routed = {
        "routed-samr": [chunk(C, fixture("bind_three_contexts_samr")), chunk(RESOLVE, n=49152), chunk(CONNECTED),
                        chunk(S, fixture("bind_ack_three_contexts_samr")), chunk(C, fixture("signed_request"))],
        "routed-not-registered": [chunk(C, fixture("bind_three_contexts_samr")), chunk(RESOLVE, n=1),
                                  chunk(C, fixture("bind_three_contexts_samr")), chunk(RESOLVE, n=49152)],
        "routed-alter": [chunk(C, fixture("bind_three_contexts")), chunk(RESOLVE, n=49152), chunk(CONNECTED),
                         chunk(S, fixture("bind_ack_three_contexts")), chunk(C, fixture("alter_context_drsuapi")),
                         chunk(ENDPOINTS, n=0), chunk(S, fixture("alter_context_resp_drsuapi"))],
        "routed-not-a-bind": [chunk(C, fixture("signed_request")), chunk(CONNECTED)],
    }
    for name, chunks in routed.items():
        for selector in (32, 34, 40, 96):
            write("%s-%d" % (name, selector), bytes([selector]) + b"".join(chunks)); n += 1
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

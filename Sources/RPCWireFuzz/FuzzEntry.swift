import NIOCore
import RPCWire

// libFuzzer entry point. Build with `RPCGATE_FUZZ=1 swift build --product RPCWireFuzz --sanitize=fuzzer`
// (see scripts/fuzz.sh). Any trap here or in RPCWire is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func rpcWireFuzzTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOneInput(ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Runs every wire-facing decoder over `input`.
///
/// 1. The framer splits the input as a byte stream; every PDU is parsed, and a parsed PDU must
///    re-serialize to bytes that parse to the same value (a round-trip invariant, checked by trapping).
/// 2. The PDUs are offered to the endpoint-mapper reply rewriter as the fragments of one call.
/// 3. The input is also parsed directly as ept_map/ept_lookup stubs in NDR32 and NDR64.
/// 4. The input is decoded as a PROXY v2 header; a decoded header must re-encode to bytes that
///    decode to the same value.
/// 5. The input is fed to ``PDUStream`` (the glue handlers' framing) in pieces whose sizes come
///    from the input itself: it must yield exactly the framer's PDUs, and fail where it fails.
/// 6. The input, and the `auth_value` of every parsed PDU, is read as an NTLM, SPNEGO and Kerberos
///    token by ``AuthIdentity``; every name it returns must respect the limits.
/// 7. The framed PDUs go through fragment reassembly, the request and security-trailer peeks
///    (checked against the full parse), the secondary-address rewrite and the refusals answering them (``fuzzFragmentAssembly(_:limits:)`` and its siblings).
func fuzzOneInput(_ input: ByteBuffer) {
    let limits = WireLimits(maximumFragmentLength: 65535, maximumReassembledStubLength: 256 * 1024, maximumTowers: 512)
    var stream = input
    var framer = PDUFramer(limits: limits)
    var fragments: [RawPDU] = []
    var framerFailed = false
    var parsed: [PDU] = []
    while true {
        let next: RawPDU?
        do {
            next = try framer.decode(buffer: &stream)
        } catch {
            framerFailed = true
            break
        }
        guard let raw = next else { break }
        fragments.append(raw)
        guard let pdu = try? raw.parse(limits: limits) else { continue }
        parsed.append(pdu)
        checkRoundTrip(pdu, limits: limits)
        if let verifier = pdu.authVerifier {
            fuzzAuthIdentity(verifier.value, limits: limits)
        }
    }
    checkStream(input, expected: fragments, framerFailed: framerFailed, limits: limits)
    fuzzFragmentAssembly(fragments, limits: limits)
    fuzzPeeks(fragments, limits: limits)
    fuzzSecondaryAddressRewrite(parsed, limits: limits)
    fuzzRefusals(parsed, limits: limits)
    fuzzEndpointMapper(input: input, fragments: fragments, limits: limits)
    fuzzProxyHeader(input)
    fuzzAuthIdentity(input, limits: limits)
}

/// Parses `token` under each auth type that carries names; what comes out must be within limits.
private func fuzzAuthIdentity(_ token: ByteBuffer, limits: WireLimits) {
    for type in [AuthType.ntlm, .spnego, .kerberos] {
        guard let identity = try? AuthIdentity.parse(authType: type, token: token, limits: limits) else { continue }
        switch identity {
        case .ntlm(let ntlm):
            // UTF-16 never grows beyond 3 UTF-8 bytes per 2 input bytes; OEM stays 1:1.
            for name in [ntlm.user, ntlm.domain, ntlm.workstation]
            where name.utf8.count > limits.maximumIdentityNameLength * 3 / 2 {
                fatalError("NTLM name of \(name.utf8.count) bytes over the limit")
            }
        case .kerberos(let service):
            guard service.serviceName.count <= limits.maximumPrincipalComponents,
                service.realm.utf8.count <= limits.maximumIdentityNameLength,
                service.serviceName.allSatisfy({ $0.utf8.count <= limits.maximumIdentityNameLength })
            else {
                fatalError("Kerberos names over the limits: \(service)")
            }
        }
    }
}

/// Splits `input` into pieces of 1 to 256 bytes, sizes taken cyclically from its own bytes.
private func checkStream(_ input: ByteBuffer, expected: [RawPDU], framerFailed: Bool, limits: WireLimits) {
    var stream = PDUStream(limits: limits)
    var rest = input
    var sizes = input.readableBytesView.makeIterator()
    var framed: [RawPDU] = []
    var failed = false
    feeding: while rest.readableBytes > 0 {
        let size = Int(sizes.next() ?? 0) + 1
        guard let piece = rest.readSlice(length: min(size, rest.readableBytes)) else { break }
        stream.append(piece)
        while true {
            do {
                guard let pdu = try stream.nextPDU() else { break }
                framed.append(pdu)
            } catch {
                failed = true
                break feeding
            }
        }
    }
    guard framed == expected else {
        fatalError("PDUStream framed \(framed.count) PDUs where the framer framed \(expected.count)")
    }
    guard failed == framerFailed else {
        fatalError(
            "PDUStream \(failed ? "failed" : "did not fail") where the framer \(framerFailed ? "failed" : "did not")"
        )
    }
    if !failed {
        let consumed = expected.reduce(0) { $0 + $1.bytes.readableBytes }
        guard stream.bufferedBytes == input.readableBytes - consumed else {
            fatalError("PDUStream kept \(stream.bufferedBytes) bytes, expected \(input.readableBytes - consumed)")
        }
    }
}

private func fuzzProxyHeader(_ input: ByteBuffer) {
    var bytes = input
    guard let header = try? bytes.readProxyHeader() else { return }
    var encoded = ByteBuffer()
    encoded.writeProxyHeader(header)
    guard let again = try? encoded.readProxyHeader(), again == header, encoded.readableBytes == 0 else {
        fatalError("PROXY v2 round trip changed the header: \(header)")
    }
    // The core routes a tunnelled connection by this TLV alone.
    if let target = header.rpcGateTarget, RPCGateTarget(tlvValue: target.tlv.value) != target {
        fatalError("RPCGate target TLV round trip changed \(target)")
    }
}

private func checkRoundTrip(_ pdu: PDU, limits: WireLimits) {
    guard var bytes = try? pdu.serialized() else { return }
    guard let raw = try? bytes.readRawPDU(limits: limits), let again = try? raw.parse(limits: limits) else {
        fatalError("a parsed PDU did not re-parse after serialization: \(pdu)")
    }
    var normalized = again
    normalized.header.fragmentLength = pdu.header.fragmentLength
    normalized.header.authLength = pdu.header.authLength
    guard normalized == pdu else {
        fatalError("round trip changed the PDU:\n\(pdu)\n\(again)")
    }
}

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
func fuzzOneInput(_ input: ByteBuffer) {
    let limits = WireLimits(maximumFragmentLength: 65535, maximumReassembledStubLength: 256 * 1024, maximumTowers: 512)
    var stream = input
    var framer = PDUFramer(limits: limits)
    var fragments: [RawPDU] = []
    while true {
        let next: RawPDU?
        do {
            next = try framer.decode(buffer: &stream)
        } catch {
            break
        }
        guard let raw = next else { break }
        fragments.append(raw)
        guard let pdu = try? raw.parse(limits: limits) else { continue }
        checkRoundTrip(pdu, limits: limits)
    }
    fuzzEndpointMapper(input: input, fragments: fragments, limits: limits)
    fuzzProxyHeader(input)
}

private func fuzzProxyHeader(_ input: ByteBuffer) {
    var bytes = input
    guard let header = try? bytes.readProxyHeader() else { return }
    var encoded = ByteBuffer()
    encoded.writeProxyHeader(header)
    guard let again = try? encoded.readProxyHeader(), again == header, encoded.readableBytes == 0 else {
        fatalError("PROXY v2 round trip changed the header: \(header)")
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

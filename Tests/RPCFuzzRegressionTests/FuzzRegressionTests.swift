import NIOCore
import RPCPolicy
import RPCWire
import Testing

@testable import RPCConfigFuzz
@testable import RPCGatewayFuzz

/// Inputs that made a fuzz target trap or hang (or, fed to the code before a fix, would have),
/// replayed through the same harness. Each must only finish without trapping: the harnesses check
/// their invariants themselves.
///
/// To add a finding: `base64 -w0 fuzz-artifacts/<TARGET>/crash-…`, a case below with one line
/// saying what it found, and the fix.
@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    // MARK: - RPCGatewayFuzz (chunk format: see GatewayHarness)

    static func chunk(_ op: UInt8, _ bytes: ByteBuffer = ByteBuffer(), count: UInt16? = nil) -> [UInt8] {
        let length = count ?? UInt16(bytes.readableBytes)
        return [op, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(bytes.readableBytesView)
    }

    static func pdu(_ pdu: PDU) -> ByteBuffer {
        (try? pdu.serialized()) ?? ByteBuffer()
    }

    static let samr = InterfaceCatalog.named("samr")!.syntax

    static func bind(_ interface: SyntaxID, callID: UInt32 = 1) -> ByteBuffer {
        let body = BindPDU(
            maxTransmitFragment: 4280,
            maxReceiveFragment: 4280,
            associationGroupID: 0,
            contexts: [PresentationContext(contextID: 0, abstractSyntax: interface, transferSyntaxes: [.ndr])]
        )
        return pdu(PDU(header: PDUHeader(packetType: .bind, callID: callID), body: .bind(body)))
    }

    static func bindAck(callID: UInt32 = 1) -> ByteBuffer {
        let body = BindAckPDU(
            maxTransmitFragment: 4280,
            maxReceiveFragment: 4280,
            associationGroupID: 1,
            secondaryAddress: BindAckPDU.secondaryAddress(port: 49154),
            results: [PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr)]
        )
        return pdu(PDU(header: PDUHeader(packetType: .bindAck, callID: callID), body: .bindAck(body)))
    }

    static func request(callID: UInt32, flags: PFCFlags, opnum: UInt16 = 0) -> ByteBuffer {
        let body = RequestPDU(allocationHint: 4, contextID: 0, opnum: opnum, stub: ByteBuffer(bytes: [0, 0, 0, 0]))
        return pdu(PDU(header: PDUHeader(packetType: .request, flags: flags, callID: callID), body: .request(body)))
    }

    static func response(callID: UInt32, stub: ByteBuffer) -> ByteBuffer {
        let body = ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: 0, stub: stub)
        return pdu(PDU(header: PDUHeader(packetType: .response, callID: callID), body: .response(body)))
    }

    static let gatewayCases: [(name: String, input: [UInt8])] = [
        // Harness hang (found by RPCGatewayFuzz): a bind, then the clock advanced 65535 s. The
        // IdleStateHandler measures idleness on the wall clock and rescheduled itself at the same
        // past virtual deadline forever; the harness now fires the idle event itself.
        ("clock far ahead after a bind", [0] + chunk(0, bind(samr)) + chunk(6, count: 65535)),
        // Found by the adversarial interop suite: a request fragment without FIRST_FRAG, before
        // any bind, was forwarded to the server (the harness traps on that).
        ("fragment without FIRST_FRAG before a bind", [0] + chunk(0, request(callID: 1, flags: []))),
        // ... and after a bind.
        (
            "fragment without FIRST_FRAG after a bind",
            [0] + chunk(0, bind(samr)) + chunk(3, bindAck()) + chunk(0, request(callID: 2, flags: .lastFragment))
        ),
        // ... and a call interleaved in a fragmented one.
        (
            "interleaved call",
            [2] + chunk(0, bind(samr)) + chunk(3, bindAck())
                + chunk(0, request(callID: 2, flags: .firstFragment)) + chunk(0, request(callID: 3, flags: .singleFragment))
        ),
        // Found by the adversarial interop suite: on the endpoint-mapper listener a response to a
        // call never asked was forwarded unrewritten.
        (
            "unsolicited endpoint-mapper response",
            [1] + chunk(0, bind(.endpointMapper)) + chunk(3, bindAck())
                + chunk(3, response(callID: 99, stub: ByteBuffer(repeating: 0, count: 28)))
        ),
        // Every close path one after the other, then the idle event on a closed connection.
        ("every event", [0] + (0..<8).flatMap { chunk(7, count: $0) } + chunk(6, count: 40)),
    ]

    @Test(arguments: Self.gatewayCases.indices)
    func gateway(_ index: Int) {
        GatewayHarness.run(ByteBuffer(bytes: Self.gatewayCases[index].input))
    }

    // MARK: - RPCConfigFuzz

    static let configCases: [(name: String, text: String)] = [
        ("empty", ""),
        ("not a mapping", "- routes"),
        ("a bad port range", "routes:\n  - name: r\n    listen: 127.0.0.1\n    upstream: h\n    ports: 2-1\n    policy: p\n"),
        ("a CR line break", "routes:\r  - name: r\r    ports: 1-2\r"),
        ("an anchor loop", "a: &a [*a]\n"),
        ("invalid UTF-8 decoded lossily", String(decoding: [0x72, 0x6F, 0xFF, 0x3A, 0x0A], as: UTF8.self)),
    ]

    @Test(arguments: Self.configCases.indices)
    func config(_ index: Int) {
        ConfigHarness.run(Array(Self.configCases[index].text.utf8))
    }
}

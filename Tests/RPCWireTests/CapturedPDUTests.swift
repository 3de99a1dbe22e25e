import NIOCore
import RPCWire
import Testing

/// Real traffic captured from a Samba 4.17 AD DC with impacket 0.10 and rpcclient 4.17
/// (Fixtures/README.md says how). Each PDU must frame, parse, and re-serialize byte-for-byte.
@Suite("Captured PDUs")
struct CapturedPDUTests {
    static let pduFixtures = Fixture.names(withPrefix: "").filter { !$0.contains("stream") && !$0.hasPrefix("ndr64") }

    @Test(arguments: pduFixtures)
    func parsesAndReserializesByteForByte(name: String) throws {
        var bytes = try Fixture.buffer(name)
        let original = bytes
        let raw = try #require(try bytes.readRawPDU(limits: WireLimits()), "\(name) does not frame")
        #expect(bytes.readableBytes == 0, "\(name) holds exactly one PDU")
        let pdu = try raw.parse()
        #expect(try pdu.serialized() == original, "\(name) re-serializes byte-for-byte")
    }

    private func parse(_ name: String) throws -> PDU {
        var bytes = try Fixture.buffer(name)
        return try #require(try bytes.readRawPDU(limits: WireLimits())).parse()
    }

    @Test func ntlmHandshake() throws {
        let bind = try parse("ntlm_bind")
        guard case .bind(let body) = bind.body else {
            Issue.record("not a bind")
            return
        }
        #expect(body.contexts.count == 1)
        #expect(bind.authVerifier?.authType == .ntlm)
        #expect(bind.authVerifier?.authLevel == .integrity)
        let ack = try parse("ntlm_bind_ack")
        guard case .bindAck(let ackBody) = ack.body else {
            Issue.record("not a bind_ack")
            return
        }
        #expect(ackBody.results.first?.result == .acceptance)
        #expect(ackBody.results.first?.transferSyntax == .ndr)
        let auth3 = try parse("ntlm_auth3")
        #expect(auth3.packetType == .auth3)
        #expect(auth3.authVerifier?.value.readableBytes == 320)
    }

    @Test func spnegoAlterContext() throws {
        let alter = try parse("spnego_alter_context")
        guard case .alterContext = alter.body else {
            Issue.record("not an alter_context")
            return
        }
        #expect(alter.authVerifier?.authType == .spnego)
        let bind = try parse("spnego_bind")
        #expect(bind.header.flags.contains(.pendingCancelOrSupportHeaderSign))
    }

    @Test func sealedRequestKeepsOpnumAndContextInTheClear() throws {
        let request = try parse("sealed_request")
        guard case .request(let body) = request.body else {
            Issue.record("not a request")
            return
        }
        #expect(request.authVerifier?.authLevel == .privacy)
        #expect(body.opnum == 0)  // SamrConnect
        #expect(body.contextID == 0)
    }

    @Test func windowsStyleThreeContextBind() throws {
        let bind = try parse("bind_three_contexts")
        guard case .bind(let body) = bind.body else {
            Issue.record("not a bind")
            return
        }
        #expect(
            body.contexts.map { $0.transferSyntaxes[0].transferSyntaxKind } == [
                .ndr, .ndr64, .bindTimeFeatureNegotiation,
            ]
        )
        #expect(body.contexts.map(\.isBindTimeFeatureNegotiation) == [false, false, true])
        let ack = try parse("bind_ack_three_contexts")
        guard case .bindAck(let ackBody) = ack.body else {
            Issue.record("not a bind_ack")
            return
        }
        #expect(ackBody.results.map(\.result) == [.acceptance, .providerRejection, .negotiateAck])
    }

    @Test func capturedLookupStreamFramesIntoFragments() throws {
        var stream = try Fixture.buffer("ept_lookup_response_stream")
        var framer = PDUFramer()
        var flags: [PFCFlags] = []
        while let pdu = try framer.decode(buffer: &stream) {
            flags.append(pdu.header.flags.intersection(.singleFragment))
        }
        #expect(flags.count == 4)
        #expect(flags.first == .firstFragment)
        #expect(flags.last == .lastFragment)
        #expect(stream.readableBytes == 0)
    }
}

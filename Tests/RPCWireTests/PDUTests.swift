import NIOCore
import RPCWire
import Testing

@Suite("Typed PDUs")
struct PDUTests {
    private func roundTrip(_ pdu: PDU, limits: WireLimits = WireLimits()) throws -> PDU {
        var bytes = try pdu.serialized()
        let original = bytes
        let raw = try #require(try bytes.readRawPDU(limits: limits))
        let parsed = try raw.parse(limits: limits)
        #expect(try parsed.serialized() == original, "re-serialization must be byte-for-byte")
        return parsed
    }

    @Test(arguments: [DataRepresentation.littleEndian, .bigEndian])
    func bindRoundTripsInBothByteOrders(drep: DataRepresentation) throws {
        let parsed = try roundTrip(
            TestPDUs.windowsBind(drep: drep, auth: TestPDUs.ntlmVerifier(level: .connect, valueLength: 40))
        )
        guard case .bind(let bind) = parsed.body else {
            Issue.record("not a bind")
            return
        }
        #expect(bind.contexts.count == 3)
        #expect(bind.contexts[0].abstractSyntax == TestPDUs.samr)
        #expect(bind.contexts[1].transferSyntaxes == [.ndr64])
        #expect(bind.contexts[2].isBindTimeFeatureNegotiation)
        #expect(!bind.contexts[0].isBindTimeFeatureNegotiation)
        #expect(bind.contexts[2].transferSyntaxes[0].bindTimeFeatureFlags == 0x03)
        #expect(parsed.authVerifier?.authType == .ntlm)
        #expect(parsed.authVerifier?.value.readableBytes == 40)
    }

    @Test func uuidAndVersionFollowDataRepresentation() throws {
        let little = try TestPDUs.windowsBind(drep: .littleEndian).serialized()
        let big = try TestPDUs.windowsBind(drep: .bigEndian).serialized()
        // samr 12345778-1234-abcd-...: time_low little-endian is 78 57 34 12, big-endian 12 34 57 78.
        #expect(little.getBytes(at: 32, length: 4) == [0x78, 0x57, 0x34, 0x12])
        #expect(big.getBytes(at: 32, length: 4) == [0x12, 0x34, 0x57, 0x78])
        // Version u32: major 1 in the low half. LE: 01 00 00 00; BE: 00 00 00 01.
        #expect(little.getBytes(at: 48, length: 4) == [1, 0, 0, 0])
        #expect(big.getBytes(at: 48, length: 4) == [0, 0, 0, 1])
    }

    @Test func requestWithObjectUUIDAndSealedStub() throws {
        var pdu = TestPDUs.request(callID: 7, contextID: 1, opnum: 3, stub: Array(repeating: 0x5A, count: 37))
        pdu.header.flags.insert(.objectUUID)
        if case .request(var request) = pdu.body {
            request.objectUUID = DCEUUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa")
            pdu.body = .request(request)
        }
        pdu.authVerifier = TestPDUs.ntlmVerifier(level: .privacy, padding: 11)
        let parsed = try roundTrip(pdu)
        guard case .request(let request) = parsed.body else {
            Issue.record("not a request")
            return
        }
        #expect(request.opnum == 3)
        #expect(request.contextID == 1)
        #expect(request.objectUUID == DCEUUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa"))
        #expect(request.stub.readableBytes == 37)
        #expect(parsed.authVerifier?.padding.readableBytes == 11)
        #expect(parsed.authVerifier?.authLevel == .privacy)
    }

    @Test func everyOtherPDUTypeRoundTrips() throws {
        let response = PDU(
            header: PDUHeader(packetType: .response, callID: 5),
            body: .response(ResponsePDU(allocationHint: 4, contextID: 0, stub: ByteBuffer(bytes: [0, 0, 0, 0])))
        )
        let ack = PDU(
            header: PDUHeader(packetType: .bindAck, callID: 2),
            body: .bindAck(
                BindAckPDU(
                    maxTransmitFragment: 5840,
                    maxReceiveFragment: 5840,
                    associationGroupID: 0x1234,
                    secondaryAddress: BindAckPDU.secondaryAddress(port: 49154),
                    results: [
                        PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr),
                        PresentationResult(
                            result: .providerRejection,
                            reason: .proposedTransferSyntaxesNotSupported,
                            transferSyntax: PresentationResult.nullSyntax
                        ),
                        PresentationResult(
                            result: .negotiateAck,
                            reason: ProviderReason(rawValue: 3),
                            transferSyntax: PresentationResult.nullSyntax
                        ),
                    ]
                )
            ),
            authVerifier: TestPDUs.ntlmVerifier(level: .integrity, valueLength: 200)
        )
        let alterResp = PDU(
            header: PDUHeader(packetType: .alterContextResponse, callID: 3),
            body: .alterContextResponse(
                BindAckPDU(
                    maxTransmitFragment: 4280,
                    maxReceiveFragment: 4280,
                    associationGroupID: 1,
                    secondaryAddress: [],
                    results: []
                )
            )
        )
        let auth3 = PDU(
            header: PDUHeader(packetType: .auth3, callID: 2),
            body: .auth3(Auth3PDU()),
            authVerifier: TestPDUs.ntlmVerifier(valueLength: 300)
        )
        let cancel = PDU(header: PDUHeader(packetType: .coCancel, callID: 2), body: .coCancel(ByteBuffer()))
        let orphaned = PDU(header: PDUHeader(packetType: .orphaned, callID: 2), body: .orphaned(ByteBuffer()))
        let alter = PDU(
            header: PDUHeader(packetType: .alterContext, callID: 4),
            body: .alterContext(
                BindPDU(
                    maxTransmitFragment: 5840,
                    maxReceiveFragment: 5840,
                    associationGroupID: 7,
                    contexts: [
                        PresentationContext(contextID: 1, abstractSyntax: TestPDUs.lsarpc, transferSyntaxes: [.ndr])
                    ]
                )
            ),
            authVerifier: AuthVerifier(
                authType: .spnego,
                authLevel: .privacy,
                contextID: 1,
                value: ByteBuffer(repeating: 0x60, count: 90)
            )
        )
        for pdu in [
            response, ack, alterResp, auth3, cancel, orphaned, alter, PDU.bindNak(callID: 1, reason: .invalidAuthType),
        ] {
            let parsed = try roundTrip(pdu)
            #expect(parsed.packetType == pdu.packetType)
        }
        if case .bindAck(let parsedAck) = try roundTrip(ack).body {
            #expect(parsedAck.secondaryAddress == Array("49154".utf8) + [0])
            #expect(parsedAck.results.map(\.result) == [.acceptance, .providerRejection, .negotiateAck])
        } else {
            Issue.record("not a bind_ack")
        }
    }

    // MARK: - Refusals the gateway builds

    @Test func bindRejectionAnswersEveryContextPositionally() throws {
        let bind = TestPDUs.windowsBind(callID: 42, auth: TestPDUs.ntlmVerifier())
        let rejection = try #require(
            PDU.bindRejection(answering: bind, secondaryAddress: BindAckPDU.secondaryAddress(port: 50001))
        )
        let parsed = try roundTrip(rejection)
        #expect(parsed.header.callID == 42)
        #expect(parsed.packetType == .bindAck)
        #expect(parsed.authVerifier == nil)
        guard case .bindAck(let ack) = parsed.body else {
            Issue.record("not a bind_ack")
            return
        }
        #expect(ack.results.count == 3)
        #expect(ack.results.allSatisfy { $0.result == .providerRejection })
        #expect(
            ack.results.map(\.reason) == [
                .abstractSyntaxNotSupported, .abstractSyntaxNotSupported, .proposedTransferSyntaxesNotSupported,
            ]
        )
        #expect(ack.maxTransmitFragment == 5840)

        var alter = bind
        if case .bind(let body) = bind.body { alter.body = .alterContext(body) }
        #expect(PDU.bindRejection(answering: alter)?.packetType == .alterContextResponse)
        #expect(PDU.bindRejection(answering: PDU.fault(callID: 1, contextID: 0, status: .accessDenied)) == nil)
    }

    @Test func faultMatchesTheSpecLayout() throws {
        let fault = try PDU.fault(callID: 0x0A0B, contextID: 2, status: .operationRangeError).serialized()
        // 32 bytes: header, alloc_hint, p_cont_id, cancel_count, flags, status, reserved (C706 12.6.4.7).
        #expect(fault.readableBytes == 32)
        #expect(fault.getInteger(at: 3, as: UInt8.self) == 0x23)
        #expect(fault.getInteger(at: 12, endianness: .little, as: UInt32.self) == 0x0A0B)
        #expect(fault.getInteger(at: 20, endianness: .little, as: UInt16.self) == 2)
        #expect(fault.getInteger(at: 24, endianness: .little, as: UInt32.self) == 0x1C01_0002)
        let nak = try PDU.bindNak(callID: 9, reason: .localLimitExceeded).serialized()
        #expect(nak.readableBytes == 21)
        #expect(nak.getInteger(at: 16, endianness: .little, as: UInt16.self) == 2)
    }

    // MARK: - Malformed bodies

    private func expectParseError(_ code: RPCWireError.Code, _ bytes: [UInt8]) {
        var buffer = ByteBuffer(bytes: bytes)
        do {
            let raw = try #require(try buffer.readRawPDU(limits: WireLimits()))
            _ = try raw.parse()
            Issue.record("expected \(code)")
        } catch let error as RPCWireError {
            #expect(error.code == code, "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    /// A bind with its body replaced by `body`, lengths patched.
    private func bind(body: [UInt8], authLength: UInt16 = 0) -> [UInt8] {
        var bytes: [UInt8] = [5, 0, 11, 3, 0x10, 0, 0, 0]
        let length = UInt16(16 + body.count)
        bytes += [
            UInt8(length & 0xFF), UInt8(length >> 8), UInt8(authLength & 0xFF), UInt8(authLength >> 8), 1, 0, 0, 0,
        ]
        return bytes + body
    }

    @Test func rejectsMalformedBinds() throws {
        let fixed: [UInt8] = [0xD0, 0x16, 0xD0, 0x16, 0, 0, 0, 0]
        // Zero contexts.
        expectParseError(.noPresentationContexts, bind(body: fixed + [0, 0, 0, 0]))
        // Context count larger than the body holds.
        expectParseError(
            .truncatedBody,
            bind(body: fixed + [3, 0, 0, 0] + [0, 0, 1, 0] + [UInt8](repeating: 0, count: 40))
        )
        // More contexts than the limit.
        expectParseError(.tooManyPresentationContexts, bind(body: fixed + [255, 0, 0, 0]))
        // Context with 0 transfer syntaxes, and one claiming more than the limit.
        expectParseError(
            .noTransferSyntaxes,
            bind(body: fixed + [1, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 20))
        )
        expectParseError(
            .tooManyTransferSyntaxes,
            bind(body: fixed + [1, 0, 0, 0, 0, 0, 200, 0] + [UInt8](repeating: 0, count: 20))
        )
        // Transfer syntaxes that run past the end.
        expectParseError(
            .truncatedBody,
            bind(body: fixed + [1, 0, 0, 0, 0, 0, 2, 0] + [UInt8](repeating: 0, count: 40))
        )
        // Body shorter than the fixed part.
        expectParseError(.truncatedBody, bind(body: [0xD0, 0x16]))
        // auth_pad_length larger than the body before the trailer.
        let trailer: [UInt8] = [10, 5, 200, 0, 0, 0, 0, 0] + [UInt8](repeating: 1, count: 8)
        expectParseError(.authPaddingTooLong, bind(body: fixed + [1, 0, 0, 0] + trailer, authLength: 8))
    }

    @Test func rejectsTruncatedCallPDUs() {
        // A request with frag_length 20: too short for alloc_hint/p_cont_id/opnum.
        expectParseError(.truncatedBody, [5, 0, 0, 3, 0x10, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        // A request claiming an object UUID it does not carry.
        expectParseError(
            .truncatedBody,
            [5, 0, 0, 0x83, 0x10, 0, 0, 0, 28, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 12)
        )
        // A fault without its status.
        expectParseError(
            .truncatedBody,
            [5, 0, 3, 3, 0x10, 0, 0, 0, 24, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        )
        // A bind_nak claiming more versions than it carries.
        expectParseError(.truncatedBody, [5, 0, 13, 3, 0x10, 0, 0, 0, 21, 0, 0, 0, 1, 0, 0, 0, 0, 0, 9, 5, 0])
        // A bind_ack whose sec_addr length runs past the end.
        expectParseError(
            .truncatedBody,
            [5, 0, 12, 3, 0x10, 0, 0, 0, 28, 0, 0, 0, 1, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]
        )
    }

    @Test func uuidStringRoundTrip() {
        let text = "6cb71c2c-9812-4540-0300-000000000000"
        #expect(DCEUUID(text)?.description == text)
        #expect(DCEUUID("12345778-1234-ABCD-EF00-0123456789AC")?.description == "12345778-1234-abcd-ef00-0123456789ac")
        #expect(DCEUUID("12345778-1234-abcd-ef00-0123456789a") == nil)
        #expect(DCEUUID("12345778x1234-abcd-ef00-0123456789ac") == nil)
        #expect(DCEUUID("g2345778-1234-abcd-ef00-0123456789ac") == nil)
    }
}

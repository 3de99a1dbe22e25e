import NIOCore
import RPCWire
import Testing

@Suite("RawPDU peeks: request header and sec_trailer")
struct RawPDUPeekTests {
    private func raw(_ pdu: PDU) throws -> RawPDU {
        var bytes = try pdu.serialized()
        return try #require(try bytes.readRawPDU(limits: WireLimits()))
    }

    private func request(drep: DataRepresentation, auth: AuthVerifier?) -> PDU {
        var pdu = TestPDUs.request(
            callID: 0x0102_0304,
            contextID: 0x0a0b,
            opnum: 0x0c0d,
            stub: Array(repeating: 7, count: 21)
        )
        pdu.header.dataRepresentation = drep
        pdu.authVerifier = auth
        return pdu
    }

    @Test(arguments: [DataRepresentation.littleEndian, .bigEndian])
    func requestHeaderMatchesTheParsedRequest(drep: DataRepresentation) throws {
        let raw = try self.raw(self.request(drep: drep, auth: nil))
        let fields = try #require(raw.requestHeader)
        #expect(fields == RequestHeaderFields(allocationHint: 21, contextID: 0x0a0b, opnum: 0x0c0d))
        guard case .request(let parsed) = try raw.parse().body else {
            Issue.record("not a request")
            return
        }
        #expect(fields.contextID == parsed.contextID)
        #expect(fields.opnum == parsed.opnum)
        #expect(fields.allocationHint == parsed.allocationHint)
    }

    @Test(arguments: [DataRepresentation.littleEndian, .bigEndian])
    func securityTrailerMatchesTheParsedVerifier(drep: DataRepresentation) throws {
        let verifier = TestPDUs.ntlmVerifier(level: .privacy, padding: 11, valueLength: 16)
        let raw = try self.raw(self.request(drep: drep, auth: verifier))
        let trailer = try #require(raw.securityTrailer)
        #expect(trailer.authType == .ntlm)
        #expect(trailer.authLevel == .privacy)
        #expect(trailer.padLength == 11)
        #expect(trailer.reserved == 0)
        #expect(trailer.contextID == 0x79231)
        #expect(trailer.offset == Int(raw.header.fragmentLength) - 16 - WireLimits.securityTrailerLength)
        let parsed = try #require(try raw.parse().authVerifier)
        #expect(parsed.contextID == trailer.contextID)
        #expect(parsed.padding.readableBytes == Int(trailer.padLength))
        // The request header is unaffected by the verifier.
        #expect(raw.requestHeader?.opnum == 0x0c0d)
    }

    @Test func bigEndianFieldsAreReadBigEndian() throws {
        let raw = try self.raw(self.request(drep: .bigEndian, auth: TestPDUs.ntlmVerifier()))
        // alloc_hint 21, p_cont_id 0x0a0b and opnum 0x0c0d as they stand on the wire.
        #expect(raw.bytes.getBytes(at: raw.bytes.readerIndex + 16, length: 8) == [0, 0, 0, 21, 0x0a, 0x0b, 0x0c, 0x0d])
        let offset = try #require(raw.securityTrailer).offset
        #expect(raw.bytes.getBytes(at: raw.bytes.readerIndex + offset + 4, length: 4) == [0x00, 0x07, 0x92, 0x31])
        #expect(raw.securityTrailer?.contextID == 0x79231)
    }

    @Test func aTrailerOnABindIsFoundToo() throws {
        let raw = try self.raw(TestPDUs.windowsBind(auth: TestPDUs.ntlmVerifier(level: .connect, valueLength: 40)))
        #expect(raw.requestHeader == nil, "a bind has no request header")
        #expect(raw.securityTrailer?.authLevel == .connect)
        #expect(raw.securityTrailer?.authType == .ntlm)
    }

    @Test func capturedSealedRequest() throws {
        var bytes = try Fixture.buffer("sealed_request")
        let raw = try #require(try bytes.readRawPDU(limits: WireLimits()))
        let verifier = try #require(try raw.parse().authVerifier)
        let trailer = try #require(raw.securityTrailer)
        #expect(trailer.authLevel == verifier.authLevel)
        #expect(trailer.authType == verifier.authType)
        #expect(trailer.contextID == verifier.contextID)
        #expect(raw.requestHeader != nil)
    }

    @Test func offsetsCountFromTheReaderIndex() throws {
        let pdu = try self.request(drep: .littleEndian, auth: TestPDUs.ntlmVerifier()).serialized()
        let raw = try self.raw(self.request(drep: .littleEndian, auth: TestPDUs.ntlmVerifier()))
        var prefixed = ByteBuffer(bytes: [0xEE, 0xEE, 0xEE])
        prefixed.writeImmutableBuffer(pdu)
        prefixed.moveReaderIndex(forwardBy: 3)
        let shifted = RawPDU(header: raw.header, bytes: prefixed)
        #expect(shifted.requestHeader == raw.requestHeader)
        #expect(shifted.securityTrailer == raw.securityTrailer)
        #expect(shifted.securityTrailer?.offset == Int(raw.header.fragmentLength) - 16 - 8)
    }

    @Test func noVerifierMeansNoTrailer() throws {
        #expect(try self.raw(self.request(drep: .littleEndian, auth: nil)).securityTrailer == nil)
    }

    @Test func truncatedOrInconsistentInputsGiveNil() throws {
        // A request cut after the common header: no fixed fields to read.
        for length in 16..<24 {
            var bytes = try self.request(drep: .littleEndian, auth: nil).serialized()
            bytes.moveWriterIndex(to: length)
            let header = try #require(try bytes.peekPDUHeader(limits: WireLimits()))
            #expect(RawPDU(header: header, bytes: bytes).requestHeader == nil, "length \(length)")
        }
        // auth_length larger than the PDU: the trailer would start inside the common header.
        var header = PDUHeader(packetType: .request, fragmentLength: 24, authLength: 16, callID: 1)
        var bytes = ByteBuffer()
        bytes.writePDUHeader(header)
        bytes.writeRepeatingByte(0, count: 8)
        #expect(RawPDU(header: header, bytes: bytes).securityTrailer == nil)
        // auth_length at its largest; every byte count from none to a whole trailer.
        header.authLength = .max
        #expect(RawPDU(header: header, bytes: bytes).securityTrailer == nil)
        for length in 0...24 {
            header.authLength = 1
            let short = bytes.getSlice(at: 0, length: length) ?? ByteBuffer()
            #expect(RawPDU(header: header, bytes: short).securityTrailer == nil, "length \(length)")
            #expect(
                RawPDU(header: header, bytes: short).requestHeader
                    == (length >= 24 ? RequestHeaderFields(allocationHint: 0, contextID: 0, opnum: 0) : nil)
            )
        }
    }
}

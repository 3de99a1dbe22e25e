import NIOCore
import NIOEmbedded
import NIOTestUtils
import RPCWire
import Testing

@Suite("PDU framing")
struct PDUFramerTests {
    private func serialized(_ pdus: [PDU]) throws -> [ByteBuffer] {
        try pdus.map { try $0.serialized() }
    }

    @Test func dripFeedAndBulkDecodeEveryPDUType() throws {
        let bind = TestPDUs.windowsBind()
        let bigEndianBind = TestPDUs.windowsBind(callID: 9, drep: .bigEndian)
        let request = TestPDUs.request(callID: 3, opnum: 64, stub: Array(repeating: 0xAA, count: 100))
        let fault = PDU.fault(callID: 3, contextID: 0, status: .accessDenied)
        let nak = PDU.bindNak(callID: 4, reason: .localLimitExceeded)
        let shutdown = PDU(header: PDUHeader(packetType: .shutdown, callID: 0), body: .shutdown(ByteBuffer()))
        let pdus = [bind, bigEndianBind, request, fault, nak, shutdown]
        let buffers = try serialized(pdus)
        let pairs = try zip(pdus, buffers).map { pdu, bytes -> (ByteBuffer, [RawPDU]) in
            let header = try #require(try bytes.peekPDUHeader(limits: WireLimits()))
            #expect(header.packetType == pdu.packetType)
            return (bytes, [RawPDU(header: header, bytes: bytes)])
        }
        // Drip-feeds byte by byte, in one buffer and in random chunks; checks nothing is left over.
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            PDUFramer()
        }
    }

    @Test func manyPDUsInOneRead() throws {
        var stream = ByteBuffer()
        for callID in 1...50 {
            try stream.writePDU(
                TestPDUs.request(
                    callID: UInt32(callID),
                    opnum: UInt16(callID),
                    stub: [UInt8](repeating: 1, count: callID)
                )
            )
        }
        var framer = PDUFramer()
        var callIDs: [UInt32] = []
        while let pdu = try framer.decode(buffer: &stream) {
            #expect(pdu.bytes.readableBytes == Int(pdu.header.fragmentLength))
            callIDs.append(pdu.header.callID)
        }
        #expect(callIDs == Array(1...50))
        #expect(stream.readableBytes == 0)
    }

    @Test func bigEndianFragmentLengthIsHonoured() throws {
        let pdu = TestPDUs.request(callID: 0x0102_0304, opnum: 7, stub: [1, 2, 3, 4])
        var bigEndian = pdu
        bigEndian.header.dataRepresentation = .bigEndian
        var bytes = try bigEndian.serialized()
        #expect(bytes.getInteger(at: 8, endianness: .big, as: UInt16.self) == 28)
        let raw = try #require(try bytes.readRawPDU(limits: WireLimits()))
        #expect(raw.header.callID == 0x0102_0304)
        #expect(raw.header.fragmentLength == 28)
        guard case .request(let request) = try raw.parse().body else {
            Issue.record("not a request")
            return
        }
        #expect(request.opnum == 7)
    }

    @Test func partialHeaderNeedsMoreBytes() throws {
        var buffer = try TestPDUs.windowsBind().serialized()
        var partial = buffer.readSlice(length: 15)!
        #expect(try partial.readRawPDU(limits: WireLimits()) == nil)
        #expect(partial.readableBytes == 15)
        var almost = try TestPDUs.windowsBind().serialized()
        almost.moveWriterIndex(to: almost.writerIndex - 1)
        #expect(try almost.readRawPDU(limits: WireLimits()) == nil)
        #expect(almost.readerIndex == 0)
    }

    // MARK: - Malformed headers

    private func header(
        version: UInt8 = 5,
        minor: UInt8 = 0,
        ptype: UInt8 = 0,
        drep: UInt8 = 0x10,
        fragLength: UInt16,
        authLength: UInt16 = 0
    )
        -> ByteBuffer
    {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(version, minor, ptype, UInt8(3), drep, UInt8(0), UInt16(0))
        buffer.writeMultipleIntegers(fragLength, authLength, UInt32(1), endianness: drep & 0x10 != 0 ? .little : .big)
        return buffer
    }

    private func expectError(_ code: RPCWireError.Code, _ buffer: ByteBuffer, limits: WireLimits = WireLimits()) {
        var buffer = buffer
        do {
            _ = try buffer.readRawPDU(limits: limits)
            Issue.record("expected \(code)")
        } catch let error as RPCWireError {
            #expect(error.code == code, "\(error)")
            #expect(buffer.readerIndex == 0)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func rejectsMalformedHeaders() {
        expectError(.unsupportedVersion, header(version: 4, fragLength: 16))
        expectError(.unsupportedVersion, header(minor: 2, fragLength: 16))
        expectError(.invalidDataRepresentation, header(drep: 0x20, fragLength: 16))
        expectError(.invalidPacketType, header(ptype: 1, fragLength: 16))
        expectError(.invalidPacketType, header(ptype: 20, fragLength: 16))
        expectError(.invalidPacketType, header(ptype: 255, fragLength: 16))
        expectError(.fragmentTooShort, header(fragLength: 0))
        expectError(.fragmentTooShort, header(fragLength: 15))
        expectError(.fragmentTooLong, header(fragLength: 65535))
        expectError(.fragmentTooLong, header(fragLength: 5841), limits: WireLimits(maximumFragmentLength: 5840))
        // auth_length larger than the PDU, and auth_length that only overflows with the trailer.
        expectError(.authLengthTooLong, header(fragLength: 100, authLength: 200))
        expectError(.authLengthTooLong, header(fragLength: 100, authLength: 77))
        expectError(.authLengthTooLong, header(fragLength: 16, authLength: 65535))
    }

    @Test func framerInPipelineReportsErrorsAndStops() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(PDUFramer()))
        #expect(throws: RPCWireError.self) {
            try channel.writeInbound(header(fragLength: 15))
        }
        _ = try? channel.finish()
    }
}

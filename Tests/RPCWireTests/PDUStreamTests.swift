import NIOCore
import RPCWire
import Testing

@Suite("PDU stream (the glue handlers' framing)")
struct PDUStreamTests {
    /// Six PDUs of different types and byte orders, back to back.
    private static func conversation() throws -> (bytes: ByteBuffer, lengths: [Int]) {
        let pdus = [
            TestPDUs.windowsBind(),
            TestPDUs.windowsBind(callID: 9, drep: .bigEndian),
            TestPDUs.request(callID: 3, opnum: 64, stub: Array(repeating: 0xAA, count: 100)),
            PDU.fault(callID: 3, contextID: 0, status: .accessDenied),
            PDU.bindNak(callID: 4, reason: .localLimitExceeded),
            TestPDUs.request(callID: 5, opnum: 1, stub: Array(repeating: 0x55, count: 5000)),
        ]
        var all = ByteBuffer()
        var lengths: [Int] = []
        for pdu in pdus {
            var bytes = try pdu.serialized()
            lengths.append(bytes.readableBytes)
            all.writeBuffer(&bytes)
        }
        return (all, lengths)
    }

    private static func frame(_ bytes: ByteBuffer, inPiecesOf size: Int) throws -> (pdus: [RawPDU], left: Int) {
        var stream = PDUStream()
        var input = bytes
        var pdus: [RawPDU] = []
        while input.readableBytes > 0, let piece = input.readSlice(length: min(size, input.readableBytes)) {
            stream.append(piece)
            while let pdu = try stream.nextPDU() { pdus.append(pdu) }
        }
        return (pdus, stream.bufferedBytes)
    }

    @Test("Every split of the stream yields the same PDUs, byte for byte, with nothing left over")
    func everyPieceSize() throws {
        let (bytes, lengths) = try Self.conversation()
        for size in [1, 2, 3, 7, 15, 16, 17, 100, 1000, 4096, bytes.readableBytes] {
            let (pdus, left) = try Self.frame(bytes, inPiecesOf: size)
            #expect(pdus.map(\.bytes.readableBytes) == lengths, "piece size \(size)")
            #expect(left == 0)
            var joined = ByteBuffer()
            for var pdu in pdus { joined.writeBuffer(&pdu.bytes) }
            #expect(joined == bytes, "piece size \(size)")
        }
    }

    @Test("A read that holds whole PDUs is sliced, not copied, and nothing is kept once it is consumed")
    func wholeReadIsSliced() throws {
        let (bytes, _) = try Self.conversation()
        var stream = PDUStream()
        stream.append(bytes)
        let next = try stream.nextPDU()
        let first = try #require(next)
        // A slice shares the read's storage: same base address.
        let sameStorage = bytes.withUnsafeReadableBytes { whole in
            first.bytes.withUnsafeReadableBytes { $0.baseAddress == whole.baseAddress }
        }
        #expect(sameStorage)
        while try stream.nextPDU() != nil {}
        #expect(stream.bufferedBytes == 0)
        #expect(stream.takeBufferedBytes() == nil, "an empty stream keeps no buffer")
    }

    @Test("A malformed header throws and leaves the bytes where they were")
    func malformedHeader() throws {
        var stream = PDUStream()
        // frag_length 15: never a PDU.
        stream.append(ByteBuffer(bytes: [5, 0, 11, 3, 0x10, 0, 0, 0, 15, 0, 0, 0, 1, 0, 0, 0]))
        #expect(throws: RPCWireError.self) { try stream.nextPDU() }
        #expect(stream.bufferedBytes == 16)
        stream.removeAll()
        #expect(stream.bufferedBytes == 0)
    }

    @Test("An oversized frag_length is refused at the header, before its bytes are buffered")
    func oversizedFragment() throws {
        var stream = PDUStream(limits: WireLimits(maximumFragmentLength: 1024))
        stream.append(ByteBuffer(bytes: [5, 0, 0, 3, 0x10, 0, 0, 0, 0x00, 0x10, 0, 0, 1, 0, 0, 0]))
        #expect(throws: RPCWireError.self) { try stream.nextPDU() }
    }

    @Test("Bytes after the last whole PDU are handed back unframed")
    func takeRest() throws {
        let (bytes, lengths) = try Self.conversation()
        var stream = PDUStream()
        stream.append(bytes.getSlice(at: bytes.readerIndex, length: lengths[0] + 10)!)
        #expect(try stream.nextPDU() != nil)
        let taken = stream.takeBufferedBytes()
        let rest = try #require(taken)
        #expect(rest == bytes.getSlice(at: bytes.readerIndex + lengths[0], length: 10))
        #expect(stream.bufferedBytes == 0)
    }
}

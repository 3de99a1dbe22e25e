import NIOCore
import NIOTestUtils
import RPCWire
import Testing

@Suite("PROXY protocol v2")
struct ProxyHeaderTests {
    static let ipv4 = ProxyHeader(
        addresses: .tcp4(
            source: IPv4Address(10, 96, 0, 2),
            sourcePort: 40_000,
            destination: IPv4Address(10, 98, 0, 1),
            destinationPort: 135
        ),
        tlvs: [
            RPCGateTarget(kind: .endpointMapper, server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 135)).tlv
        ]
    )
    static let ipv6 = ProxyHeader(
        addresses: .tcp6(
            source: [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1],
            sourcePort: 1,
            destination: [UInt8](repeating: 0, count: 15) + [1],
            destinationPort: 65535
        ),
        tlvs: [
            ProxyTLV(type: 0x04, value: []),
            RPCGateTarget(kind: .mapped, server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49154)).tlv,
        ]
    )
    static let local = ProxyHeader(command: .local, addresses: .unspecified)

    private func encoded(_ header: ProxyHeader) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeProxyHeader(header)
        return buffer
    }

    @Test func ipv4LayoutMatchesTheSpec() throws {
        let bytes = self.encoded(Self.ipv4)
        let expected: [UInt8] =
            ProxyHeader.signature + [0x21, 0x11, 0x00, 12 + 3 + 7]
            + [10, 96, 0, 2, 10, 98, 0, 1, 0x9C, 0x40, 0x00, 0x87]
            + [0xE0, 0x00, 0x07, 0x01, 10, 99, 0, 2, 0x00, 0x87]
        #expect(Array(bytes.readableBytesView) == expected)
    }

    @Test(arguments: [ProxyHeaderTests.ipv4, ProxyHeaderTests.ipv6, ProxyHeaderTests.local])
    func roundTrip(_ header: ProxyHeader) throws {
        var bytes = self.encoded(header)
        bytes.writeString("rest")
        let decoded = try #require(try bytes.readProxyHeader())
        #expect(decoded == header)
        #expect(bytes.readString(length: bytes.readableBytes) == "rest")
    }

    @Test func dripFeedAndBulkDecode() throws {
        let pairs = [Self.ipv4, Self.ipv6, Self.local].map { (self.encoded($0), [$0]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { ProxyHeaderDecoder() }
    }

    @Test func partialInputConsumesNothing() throws {
        let full = self.encoded(Self.ipv6)
        for length in 0..<full.readableBytes {
            var partial = full.getSlice(at: 0, length: length)!
            #expect(try partial.readProxyHeader() == nil)
            #expect(partial.readableBytes == length)
        }
    }

    @Test func targetTLV() throws {
        #expect(
            Self.ipv4.rpcGateTarget
                == RPCGateTarget(
                    kind: .endpointMapper,
                    server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 135)
                )
        )
        #expect(Self.ipv6.rpcGateTarget?.kind == .mapped)
        #expect(Self.local.rpcGateTarget == nil)
        #expect(RPCGateTarget(tlvValue: [3, 1, 2, 3, 4, 0, 1]) == nil)
        #expect(RPCGateTarget(tlvValue: [1, 1, 2, 3, 4, 0]) == nil)
    }

    private func expectError(
        _ bytes: [UInt8],
        _ code: ProxyProtocolError.Code,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        var buffer = ByteBuffer(bytes: bytes)
        do {
            _ = try buffer.readProxyHeader()
            Issue.record("expected \(code)", sourceLocation: sourceLocation)
        } catch let error as ProxyProtocolError {
            #expect(error.code == code, sourceLocation: sourceLocation)
            #expect(buffer.readerIndex == 0, sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func malformedHeaders() throws {
        let good = Array(self.encoded(Self.ipv4).readableBytesView)
        // A DCE/RPC bind (05 00 0b ...) is refused at its first byte.
        self.expectError([0x05, 0x00, 0x0B], .badSignature)
        // PROXY v1 text.
        self.expectError(Array("PROXY TCP4 ".utf8), .badSignature)
        var wrongVersion = good
        wrongVersion[12] = 0x11
        self.expectError(wrongVersion, .unsupportedVersion)
        var wrongCommand = good
        wrongCommand[12] = 0x2F
        self.expectError(wrongCommand, .unsupportedCommand)
        var udp = good
        udp[13] = 0x12
        self.expectError(udp, .unsupportedFamily)
        var tooLong = good
        tooLong[14] = 0x04
        tooLong[15] = 0x01
        self.expectError(tooLong, .tooLong)
        var short = good
        short[15] = 8
        self.expectError(short, .truncated)
        var badTLV = good
        badTLV[15] = 12 + 2  // ends inside the TLV header
        self.expectError(Array(badTLV[0..<(16 + 14)]), .invalidTLV)
    }
}

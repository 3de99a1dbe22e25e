import NIOCore
import RPCGateway
import RPCWire
import Testing

@Suite("Edge tunnel header and handshake classification")
struct EdgeTunnelTests {
    static let target = RPCGateTarget(
        kind: .mapped,
        server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49154)
    )

    @Test func ipv4Client() throws {
        let header = EdgeTunnel.header(
            client: try SocketAddress(ipAddress: "10.98.0.2", port: 40000),
            gateway: try SocketAddress(ipAddress: "10.98.0.1", port: 50200),
            target: Self.target
        )
        #expect(
            header.addresses
                == .tcp4(
                    source: IPv4Address(10, 98, 0, 2),
                    sourcePort: 40000,
                    destination: IPv4Address(10, 98, 0, 1),
                    destinationPort: 50200
                )
        )
        #expect(header.command == .proxy)
        #expect(header.rpcGateTarget == Self.target)
    }

    @Test func ipv6Client() throws {
        let header = EdgeTunnel.header(
            client: try SocketAddress(ipAddress: "2001:db8::7", port: 1234),
            gateway: try SocketAddress(ipAddress: "2001:db8::1", port: 135),
            target: Self.target
        )
        guard case .tcp6(let source, let sourcePort, let destination, let destinationPort) = header.addresses else {
            Issue.record("expected TCP/IPv6, got \(header.addresses)")
            return
        }
        #expect(source == [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [7])
        #expect(destination.last == 1)
        #expect(sourcePort == 1234)
        #expect(destinationPort == 135)
    }

    @Test func noClientAddressIsUnspecified() {
        #expect(EdgeTunnel.header(client: nil, gateway: nil, target: Self.target).addresses == .unspecified)
    }

    struct FakeError: Error, CustomStringConvertible {
        var description: String
    }

    @Test(arguments: [
        ("error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER", TLSHandshakeResult.notTLS),
        ("error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED", .badCertificate),
        ("error:10000418:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA", .badCertificate),
        ("error:100000c7:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE", .noCertificate),
        ("EOF during handshake", .failed),
    ])
    func classify(text: String, expected: TLSHandshakeResult) {
        #expect(TLSHandshakeResult.classify(FakeError(description: text)) == expected)
    }
}

import NIOCore
import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

@Suite("Socket address conversions (no text round trip)")
struct SocketAddressesTests {
    @Test(
        "An address read from a sockaddr equals the one parsed from NIO's text form",
        arguments: [
            "10.1.2.3", "0.0.0.0", "255.255.255.254", "2001:db8::1", "fe80::1:2:3:4", "::1", "::ffff:10.98.0.2",
        ]
    )
    func matchesTextParser(text: String) throws {
        let socket = try SocketAddress(ipAddress: text, port: 49154)
        let fromText = try #require(IPAddress(text))
        #expect(IPAddress(socket) == fromText)
        if case .v4(let value) = fromText {
            #expect(IPv4Address(socket) == IPv4Address(value: value))
        } else {
            #expect(IPv4Address(socket) == nil)
        }
    }

    @Test(
        "Socket addresses built from our types carry the same address and port",
        arguments: ["10.99.0.2", "2001:db8::7"]
    )
    func builtAddresses(text: String) throws {
        let address = try #require(IPAddress(text))
        let socket = try address.socketAddress(port: 135)
        #expect(socket.port == 135)
        #expect(IPAddress(socket) == address)
        #expect(socket.ipAddress.flatMap { IPAddress($0) } == address, "NIO reads back what we wrote")
    }

    @Test func endpointSocketAddress() throws {
        let endpoint = TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49154)
        let socket = try endpoint.socketAddress()
        #expect(socket.ipAddress == "10.99.0.2")
        #expect(socket.port == 49154)
    }

    @Test func noAddress() throws {
        #expect(IPAddress(nil as SocketAddress?) == nil)
        #expect(IPAddress(try SocketAddress(unixDomainSocketPath: "/tmp/x")) == nil)
    }
}

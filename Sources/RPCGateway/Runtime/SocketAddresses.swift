import NIOCore
import RPCPolicy
import RPCWire

// Conversions between NIO's `SocketAddress` and the gateway's address types, straight from the
// `sockaddr` bytes. The text route (`SocketAddress.ipAddress`, which formats with `inet_ntop`, then
// parsed back) cost about 24,000 instructions per accepted connection, and connecting by host
// string sends even a literal address through the resolver and Happy Eyeballs
// (docs/PERFORMANCE.md, churn profile).

extension TCPEndpoint {
    /// The endpoint as a socket address to connect to, without a resolver. (Four address bytes
    /// always make one; NIO's initializer throws only for other lengths.)
    func socketAddress() throws -> SocketAddress {
        var packed = ByteBuffer()
        packed.writeInteger(self.address.value)
        return try SocketAddress(packedIPAddress: packed, port: Int(self.port))
    }
}

// The `sockaddr_in`/`sockaddr_in6` fields are read as bytes (RFC 3493 3.3 layout: family, port,
// then the IPv4 address, or flow info and the IPv6 address): their C declarations are reachable
// only through NIO's private C module, which MemberImportVisibility refuses.

extension IPAddress {
    /// The address of an IPv4 or IPv6 socket address; an IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`, how a dual-stack listener reports IPv4 clients) becomes IPv4, as the
    /// text parser does. `nil` for a Unix socket or no address.
    init?(_ socketAddress: SocketAddress?) {
        switch socketAddress {
        case .v4(let v4):
            self = .v4(
                withUnsafeBytes(of: v4.address) {
                    UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                }
            )
        case .v6(let v6):
            let (high, low) = withUnsafeBytes(of: v6.address) { raw in
                (
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
                )
            }
            if high == 0, low >> 32 == 0xFFFF {
                self = .v4(UInt32(truncatingIfNeeded: low))
            } else {
                self = .v6(high, low)
            }
        default:
            return nil
        }
    }

    /// A socket address for this address and `port` (for logs and the audit trail).
    func socketAddress(port: UInt16) throws -> SocketAddress {
        var packed = ByteBuffer()
        switch self {
        case .v4(let value):
            packed.writeInteger(value)
        case .v6(let high, let low):
            packed.writeMultipleIntegers(high, low)
        }
        return try SocketAddress(packedIPAddress: packed, port: Int(port))
    }
}

extension IPv4Address {
    /// The IPv4 address of a socket address (IPv4-mapped IPv6 included), `nil` for anything else.
    init?(_ socketAddress: SocketAddress?) {
        guard case .v4(let value) = IPAddress(socketAddress) else { return nil }
        self.init(value: value)
    }
}

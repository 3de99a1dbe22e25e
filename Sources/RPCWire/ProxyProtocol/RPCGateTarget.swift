/// What a tunnelled connection is for, carried in a PROXY v2 TLV of type
/// ``RPCGateTarget/tlvType`` (0xE0, in the spec's custom range 0xE0-0xEF), so the core gateway
/// needs no shared state with the edge.
///
/// ```
/// 1 byte   kind: 1 endpoint mapper, 2 mapped server endpoint
/// 4 bytes  server IPv4 address, network order
/// 2 bytes  server TCP port, network order
/// ```
public struct RPCGateTarget: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: UInt8, Hashable, Sendable {
        /// The server's endpoint mapper (the route's upstream and EPM port).
        case endpointMapper = 1
        /// A dynamic endpoint the edge learned from an endpoint-mapper reply.
        case mapped = 2
    }

    public var kind: Kind
    public var server: TCPEndpoint

    public static let tlvType: UInt8 = 0xE0
    public static let encodedLength = 7

    public init(kind: Kind, server: TCPEndpoint) {
        self.kind = kind
        self.server = server
    }

    /// Parses a TLV value; `nil` when it is not exactly a target.
    public init?(tlvValue value: [UInt8]) {
        guard value.count == Self.encodedLength, let kind = Kind(rawValue: value[0]) else { return nil }
        var address: UInt32 = 0
        for byte in value[1..<5] { address = address << 8 | UInt32(byte) }
        let port = UInt16(value[5]) << 8 | UInt16(value[6])
        self.init(kind: kind, server: TCPEndpoint(address: IPv4Address(value: address), port: port))
    }

    public var tlv: ProxyTLV {
        ProxyTLV(
            type: Self.tlvType,
            value: [self.kind.rawValue] + self.server.address.octets + [
                UInt8(self.server.port >> 8), UInt8(self.server.port & 0xFF),
            ]
        )
    }

    public var description: String {
        "\(self.kind == .endpointMapper ? "epm" : "mapped") \(self.server)"
    }
}

extension ProxyHeader {
    /// The RPCGate target TLV, if present and well formed.
    public var rpcGateTarget: RPCGateTarget? {
        self.tlv(RPCGateTarget.tlvType).flatMap { RPCGateTarget(tlvValue: $0.value) }
    }
}

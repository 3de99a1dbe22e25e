/// An IPv4 address, as carried in the IP floor (protocol 0x09) of a protocol tower.
///
/// The value is held in host order; on the wire (tower floors, sockets) it is written in network
/// order. Parsing and printing avoid Foundation and `inet_pton` so the codec stays portable.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    /// The address as a host-order integer: `10.0.0.1` is `0x0A00_0001`.
    public var value: UInt32

    public init(value: UInt32) {
        self.value = value
    }

    /// The four octets in network order, `a.b.c.d`.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text such as `192.0.2.10`.
    ///
    /// Exactly four decimal parts of one to three digits, each at most 255. Like `inet_pton`, a part
    /// with a leading zero (`010`) is refused rather than guessed to be octal.
    public init?(_ dotted: some StringProtocol) {
        var value: UInt32 = 0
        var part: UInt32 = 0
        var digits = 0
        var parts = 0
        var leadingZero = false
        for character in dotted.utf8 {
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                guard digits < 3, !leadingZero else { return nil }
                if digits == 0, character == UInt8(ascii: "0") { leadingZero = true }
                part = part * 10 + UInt32(character - UInt8(ascii: "0"))
                digits += 1
            case UInt8(ascii: "."):
                guard digits > 0, part <= 255, parts < 3 else { return nil }
                value = value << 8 | part
                parts += 1
                part = 0
                digits = 0
                leadingZero = false
            default:
                return nil
            }
        }
        guard digits > 0, part <= 255, parts == 3 else { return nil }
        self.value = value << 8 | part
    }

    /// `0.0.0.0`: what Windows and Samba put in the IP floor when the address is unspecified, and
    /// what the rewriter writes when it redacts a tower.
    public static let any = IPv4Address(value: 0)

    /// The four octets in network order.
    public var octets: [UInt8] {
        [
            UInt8(truncatingIfNeeded: self.value >> 24),
            UInt8(truncatingIfNeeded: self.value >> 16),
            UInt8(truncatingIfNeeded: self.value >> 8),
            UInt8(truncatingIfNeeded: self.value),
        ]
    }

    /// Dotted-quad text, e.g. `192.0.2.10`.
    public var description: String {
        self.octets.map { String($0) }.joined(separator: ".")
    }
}

/// A TCP endpoint: an IPv4 address and a port.
public struct TCPEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var port: UInt16

    public init(address: IPv4Address, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `address:port`.
    public var description: String { "\(self.address):\(self.port)" }
}

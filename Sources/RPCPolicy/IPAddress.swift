/// An IPv4 or IPv6 address as policy sees a client, parsed without Foundation.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt32)
    /// High and low 64 bits, network order.
    case v6(UInt64, UInt64)

    /// Parses dotted IPv4 or RFC 4291 text IPv6 (`::` compression, embedded IPv4 tail); a zone
    /// (`%eth0`) is ignored. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) become IPv4, because
    /// that is how a dual-stack listener reports IPv4 clients.
    public init?(_ text: some StringProtocol) {
        let text = String(text.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        if !text.contains(":") {
            guard let v4 = Self.parseIPv4(text) else { return nil }
            self = .v4(v4)
            return
        }
        guard let (high, low) = Self.parseIPv6(text) else { return nil }
        if high == 0, low >> 32 == 0xFFFF {
            self = .v4(UInt32(truncatingIfNeeded: low))
        } else {
            self = .v6(high, low)
        }
    }

    static func parseIPv4(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let octet = UInt32(part), octet <= 255
            else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    static func parseIPv6(_ text: String) -> (UInt64, UInt64)? {
        let halves = text.components(separatedByDoubleColon: ())
        guard halves.count <= 2 else { return nil }
        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if index == pieces.count - 1, piece.contains(".") {
                    guard let v4 = parseIPv4(String(piece)) else { return nil }
                    result.append(UInt16(truncatingIfNeeded: v4 >> 16))
                    result.append(UInt16(truncatingIfNeeded: v4))
                    continue
                }
                guard !piece.isEmpty, piece.count <= 4, let group = UInt16(piece, radix: 16) else { return nil }
                result.append(group)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        var all: [UInt16]
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count <= 7 else { return nil }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { return nil }
            all = head
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, group) in all.enumerated() {
            if index < 4 { high = high << 16 | UInt64(group) } else { low = low << 16 | UInt64(group) }
        }
        return (high, low)
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
        case .v6(let high, let low):
            let groups = (0..<8).map { index -> UInt16 in
                let word = index < 4 ? high : low
                return UInt16(truncatingIfNeeded: word >> (UInt64(3 - index % 4) * 16))
            }
            // RFC 5952 4.2: the longest run of two or more zero groups (the first of equal runs)
            // becomes "::".
            var longest: Range<Int>?
            var runStart: Int?
            for index in 0...8 {
                if index < 8, groups[index] == 0 {
                    if runStart == nil { runStart = index }
                } else if let start = runStart {
                    if index - start >= 2, index - start > (longest?.count ?? 0) { longest = start..<index }
                    runStart = nil
                }
            }
            let hex = groups.map { String($0, radix: 16) }
            guard let longest else { return hex.joined(separator: ":") }
            return hex[..<longest.lowerBound].joined(separator: ":") + "::"
                + hex[longest.upperBound...].joined(separator: ":")
        }
    }
}

extension String {
    /// Splits at the first `::` only (a second one makes the address invalid).
    fileprivate func components(separatedByDoubleColon: ()) -> [Substring] {
        var result: [Substring] = []
        var rest = self[...]
        while let range = rest.range(of: "::") {
            result.append(rest[rest.startIndex..<range.lowerBound])
            rest = rest[range.upperBound...]
        }
        result.append(rest)
        return result
    }
}

extension StringProtocol {
    fileprivate func range(of needle: String) -> Range<Index>? {
        var index = self.startIndex
        while index < self.endIndex {
            if self[index...].hasPrefix(needle) {
                return index..<(self.index(index, offsetBy: needle.count))
            }
            index = self.index(after: index)
        }
        return nil
    }
}

/// A CIDR block, `10.0.0.0/8` or `fd00::/8`.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int

    /// Parses `ADDRESS/PREFIX` (or a bare address, a host route). Host bits must be zero, as a
    /// typo like `10.0.0.1/8` usually means the user meant something else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let address = IPAddress(parts[0]) else { return nil }
        let maximum: Int
        switch address {
        case .v4: maximum = 32
        case .v6: maximum = 128
        }
        var prefix = maximum
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(parts[1]),
                value <= maximum
            else { return nil }
            prefix = value
        }
        self.address = address
        self.prefixLength = prefix
        guard self.contains(address), Self.masked(address, prefix) == address else { return nil }
    }

    /// The network of `prefixLength` bits (clamped to the family's size) that holds `address`:
    /// `10.1.2.0/24` for 10.1.2.3 and 24.
    public init(containing address: IPAddress, prefixLength: Int) {
        let maximum: Int
        switch address {
        case .v4: maximum = 32
        case .v6: maximum = 128
        }
        let prefix = min(max(prefixLength, 0), maximum)
        self.address = Self.masked(address, prefix)
        self.prefixLength = prefix
    }

    private static func masked(_ address: IPAddress, _ prefix: Int) -> IPAddress {
        switch address {
        case .v4(let value):
            let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefix)
            return .v4(value & mask)
        case .v6(let high, let low):
            let highMask: UInt64 = prefix >= 64 ? ~0 : (prefix == 0 ? 0 : ~UInt64(0) << UInt64(64 - prefix))
            let lowMask: UInt64 = prefix <= 64 ? 0 : (prefix == 128 ? ~0 : ~UInt64(0) << UInt64(128 - prefix))
            return .v6(high & highMask, low & lowMask)
        }
    }

    public func contains(_ candidate: IPAddress) -> Bool {
        switch (self.address, candidate) {
        case (.v4, .v4), (.v6, .v6):
            return Self.masked(candidate, self.prefixLength) == Self.masked(self.address, self.prefixLength)
        default:
            return false
        }
    }

    public var description: String { "\(self.address)/\(self.prefixLength)" }
}

public import NIOCore

/// A DCE UUID (C706 Appendix A), kept in its canonical (string) byte order.
///
/// On the wire the first three fields (`time_low` u32, `time_mid` u16, `time_hi_and_version` u16)
/// follow the PDU's integer byte order (`drep`); the last eight bytes are always in order. Inside
/// protocol towers the order is always little-endian (C706 Appendix L). Foundation's `UUID` is not
/// used: the codec layer imports no Foundation, and NIO's `readUUIDBytes` ignores `drep`.
public struct DCEUUID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Bytes 0-7 of the canonical form, big-endian.
    public var high: UInt64
    /// Bytes 8-15 of the canonical form, big-endian.
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public static let zero = DCEUUID(high: 0, low: 0)

    public init(timeLow: UInt32, timeMid: UInt16, timeHighAndVersion: UInt16, tail: UInt64) {
        self.high = UInt64(timeLow) << 32 | UInt64(timeMid) << 16 | UInt64(timeHighAndVersion)
        self.low = tail
    }

    public var timeLow: UInt32 { UInt32(truncatingIfNeeded: self.high >> 32) }
    public var timeMid: UInt16 { UInt16(truncatingIfNeeded: self.high >> 16) }
    public var timeHighAndVersion: UInt16 { UInt16(truncatingIfNeeded: self.high) }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case). Returns `nil` for anything else.
    public init?(_ string: some StringProtocol) {
        let utf8 = Array(string.utf8)
        guard utf8.count == 36 else { return nil }
        var value: (UInt64, UInt64) = (0, 0)
        var nibbles = 0
        for (index, character) in utf8.enumerated() {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard character == UInt8(ascii: "-") else { return nil }
                continue
            }
            guard let nibble = Self.hexValue(character) else { return nil }
            if nibbles < 16 {
                value.0 = value.0 << 4 | UInt64(nibble)
            } else {
                value.1 = value.1 << 4 | UInt64(nibble)
            }
            nibbles += 1
        }
        self.init(high: value.0, low: value.1)
    }

    private static func hexValue(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return character - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Lower-case canonical form, e.g. `12345778-1234-abcd-ef00-0123456789ac`.
    public var description: String {
        func hex(_ value: UInt64, digits: Int) -> String {
            let text = String(value, radix: 16)
            return String(repeating: "0", count: max(0, digits - text.count)) + text
        }
        return hex(UInt64(self.timeLow), digits: 8) + "-" + hex(UInt64(self.timeMid), digits: 4) + "-"
            + hex(UInt64(self.timeHighAndVersion), digits: 4) + "-" + hex(self.low >> 48, digits: 4) + "-"
            + hex(self.low & 0xFFFF_FFFF_FFFF, digits: 12)
    }

    public static func < (lhs: DCEUUID, rhs: DCEUUID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// Encoded size on the wire.
    public static let wireSize = 16
}

extension ByteBuffer {
    /// Reads a UUID whose first three fields are in `endianness` (the PDU's `drep`, or `.little`
    /// inside towers).
    public func getDCEUUID(at index: Int, endianness: Endianness) -> DCEUUID? {
        guard
            let (timeLow, timeMid, timeHigh) = self.getMultipleIntegers(
                at: index,
                endianness: endianness,
                as: (UInt32, UInt16, UInt16).self
            ),
            let tail = self.getInteger(at: index + 8, endianness: .big, as: UInt64.self)
        else { return nil }
        return DCEUUID(timeLow: timeLow, timeMid: timeMid, timeHighAndVersion: timeHigh, tail: tail)
    }

    public mutating func readDCEUUID(endianness: Endianness) -> DCEUUID? {
        guard let uuid = self.getDCEUUID(at: self.readerIndex, endianness: endianness) else { return nil }
        self.moveReaderIndex(forwardBy: DCEUUID.wireSize)
        return uuid
    }

    @discardableResult
    public mutating func writeDCEUUID(_ uuid: DCEUUID, endianness: Endianness) -> Int {
        self.writeMultipleIntegers(uuid.timeLow, uuid.timeMid, uuid.timeHighAndVersion, endianness: endianness)
            + self.writeInteger(uuid.low, endianness: .big)
    }

    @discardableResult
    public mutating func setDCEUUID(_ uuid: DCEUUID, at index: Int, endianness: Endianness) -> Int {
        self.setInteger(uuid.timeLow, at: index, endianness: endianness)
        self.setInteger(uuid.timeMid, at: index + 4, endianness: endianness)
        self.setInteger(uuid.timeHighAndVersion, at: index + 6, endianness: endianness)
        self.setInteger(uuid.low, at: index + 8, endianness: .big)
        return DCEUUID.wireSize
    }
}

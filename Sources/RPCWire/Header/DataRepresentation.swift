public import NIOCore

/// The `packed_drep` label of a PDU (C706 14.1, "Data Representation Format Label").
///
/// Byte 0: high nibble integer representation (0 big-endian, 1 little-endian), low nibble character
/// representation (0 ASCII, 1 EBCDIC). Byte 1: floating-point representation. Bytes 2-3 reserved.
public struct DataRepresentation: Hashable, Sendable {
    public var bytes: (UInt8, UInt8, UInt8, UInt8)

    public init(_ b0: UInt8, _ b1: UInt8 = 0, _ b2: UInt8 = 0, _ b3: UInt8 = 0) {
        self.bytes = (b0, b1, b2, b3)
    }

    /// Little-endian integers, ASCII characters, IEEE floats: what Windows, Samba and impacket send.
    public static let littleEndian = DataRepresentation(0x10)
    /// Big-endian integers, ASCII characters, IEEE floats.
    public static let bigEndian = DataRepresentation(0x00)

    /// The byte order of every integer in the PDU, `frag_length` included.
    public var endianness: Endianness { (self.bytes.0 & 0x10) != 0 ? .little : .big }

    /// Whether the integer nibble names a defined representation (only 0 and 1 exist).
    var hasValidIntegerRepresentation: Bool { (self.bytes.0 >> 4) <= 1 }

    public static func == (lhs: DataRepresentation, rhs: DataRepresentation) -> Bool {
        lhs.bytes == rhs.bytes
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.bytes.0)
        hasher.combine(self.bytes.1)
        hasher.combine(self.bytes.2)
        hasher.combine(self.bytes.3)
    }
}

extension ByteBuffer {
    func getDataRepresentation(at index: Int) -> DataRepresentation? {
        guard let (b0, b1, b2, b3) = self.getMultipleIntegers(at: index, as: (UInt8, UInt8, UInt8, UInt8).self) else {
            return nil
        }
        return DataRepresentation(b0, b1, b2, b3)
    }

    @discardableResult
    mutating func writeDataRepresentation(_ drep: DataRepresentation) -> Int {
        self.writeMultipleIntegers(drep.bytes.0, drep.bytes.1, drep.bytes.2, drep.bytes.3)
    }
}

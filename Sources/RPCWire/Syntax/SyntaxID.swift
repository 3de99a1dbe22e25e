public import NIOCore

/// A presentation syntax identifier, `p_syntax_id_t` (C706 12.6.3.1): an interface or a transfer
/// syntax, with its version.
///
/// The version is one 32-bit integer in `drep` order whose low 16 bits are the major version and
/// high 16 bits the minor version; little-endian PDUs therefore carry major then minor.
public struct SyntaxID: Hashable, Sendable, CustomStringConvertible {
    public var uuid: DCEUUID
    public var majorVersion: UInt16
    public var minorVersion: UInt16

    public init(uuid: DCEUUID, majorVersion: UInt16, minorVersion: UInt16) {
        self.uuid = uuid
        self.majorVersion = majorVersion
        self.minorVersion = minorVersion
    }

    /// `uuid@major.minor`.
    public var description: String { "\(self.uuid)@\(self.majorVersion).\(self.minorVersion)" }

    public static let wireSize = 20

    // MARK: - Well-known transfer syntaxes (C706 Appendix I; MS-RPCE 2.2.5; rpcrt.py)

    /// NDR 2.0, `8a885d04-1ceb-11c9-9fe8-08002b104860` v2.0.
    public static let ndr = SyntaxID(
        uuid: DCEUUID(high: 0x8a88_5d04_1ceb_11c9, low: 0x9fe8_0800_2b10_4860),
        majorVersion: 2,
        minorVersion: 0
    )
    /// NDR64, `71710533-beba-4937-8319-b5dbef9ccc36` v1.0 (MS-RPCE 2.2.5).
    public static let ndr64 = SyntaxID(
        uuid: DCEUUID(high: 0x7171_0533_beba_4937, low: 0x8319_b5db_ef9c_cc36),
        majorVersion: 1,
        minorVersion: 0
    )

    /// The first 8 bytes shared by every bind-time feature negotiation syntax
    /// (`6cb71c2c-9812-4540-…`, MS-RPCE 3.3.1.5.3).
    static let bindTimeFeatureNegotiationPrefix: UInt64 = 0x6cb7_1c2c_9812_4540

    /// Whether this is a bind-time feature negotiation pseudo transfer syntax (MS-RPCE 2.2.2.14).
    /// Its context element names no interface and must never be treated as one.
    public var isBindTimeFeatureNegotiation: Bool {
        self.uuid.high == Self.bindTimeFeatureNegotiationPrefix
    }

    /// The feature bits of a bind-time feature negotiation syntax: the first octet after the
    /// prefix (0x01 security context multiplexing, 0x02 keep connection on orphan).
    public var bindTimeFeatureFlags: UInt8? {
        guard self.isBindTimeFeatureNegotiation else { return nil }
        return UInt8(truncatingIfNeeded: self.uuid.low >> 56)
    }

    /// Which of the transfer syntaxes we can read this is.
    public var transferSyntaxKind: TransferSyntaxKind {
        if self == .ndr { return .ndr }
        if self == .ndr64 { return .ndr64 }
        if self.isBindTimeFeatureNegotiation { return .bindTimeFeatureNegotiation }
        return .other
    }
}

/// Transfer syntaxes the gateway distinguishes.
public enum TransferSyntaxKind: Hashable, Sendable {
    case ndr
    case ndr64
    case bindTimeFeatureNegotiation
    case other
}

extension ByteBuffer {
    public func getSyntaxID(at index: Int, endianness: Endianness) -> SyntaxID? {
        guard let uuid = self.getDCEUUID(at: index, endianness: endianness),
            let version = self.getInteger(at: index + 16, endianness: endianness, as: UInt32.self)
        else { return nil }
        return SyntaxID(
            uuid: uuid,
            majorVersion: UInt16(truncatingIfNeeded: version),
            minorVersion: UInt16(truncatingIfNeeded: version >> 16)
        )
    }

    public mutating func readSyntaxID(endianness: Endianness) -> SyntaxID? {
        guard let syntax = self.getSyntaxID(at: self.readerIndex, endianness: endianness) else { return nil }
        self.moveReaderIndex(forwardBy: SyntaxID.wireSize)
        return syntax
    }

    @discardableResult
    public mutating func writeSyntaxID(_ syntax: SyntaxID, endianness: Endianness) -> Int {
        self.writeDCEUUID(syntax.uuid, endianness: endianness)
            + self.writeInteger(
                UInt32(syntax.majorVersion) | UInt32(syntax.minorVersion) << 16,
                endianness: endianness
            )
    }
}

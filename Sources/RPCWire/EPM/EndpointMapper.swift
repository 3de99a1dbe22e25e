import NIOCore

/// Operations of the endpoint mapper interface (C706 Appendix O; Samba `epmapper.idl`).
public enum EPMOperation: UInt16, Hashable, Sendable {
    case insert = 0
    case delete = 1
    case lookup = 2
    case map = 3
    case lookupHandleFree = 4
    case inquireObject = 5
    case managementDelete = 6
}

extension SyntaxID {
    /// The endpoint mapper, `e1af8308-5d1f-11c9-91a4-08002b14a0fa` v3.0 (C706 Appendix O).
    public static let endpointMapper = SyntaxID(
        uuid: DCEUUID(high: 0xe1af_8308_5d1f_11c9, low: 0x91a4_0800_2b14_a0fa),
        majorVersion: 3,
        minorVersion: 0
    )
}

/// An endpoint-mapper context handle, `ept_lookup_handle_t` (20 bytes: attributes u32 + UUID).
public struct EPMContextHandle: Hashable, Sendable {
    public var attributes: UInt32
    public var uuid: DCEUUID

    public init(attributes: UInt32, uuid: DCEUUID) {
        self.attributes = attributes
        self.uuid = uuid
    }

    /// The all-zero handle that starts an enumeration and that a finished one returns.
    public static let null = EPMContextHandle(attributes: 0, uuid: .zero)

    public static let wireSize = 20
}

// MARK: - Shared by the messages

/// A tower found while parsing a reply, with the stub offset of its octet string.
struct LocatedTower {
    var tower: ProtocolTower
    var offset: Int
}

extension NDRReader {
    /// max_count, offset and actual_count of a conformant varying array whose length is given
    /// separately (`length_is(*count)`); checks offset 0, actual_count == `count` ≤ max_count and
    /// the tower limit.
    mutating func readConformantVaryingHeader(_ what: String, count: UInt32) throws -> (maxCount: UInt32, actual: Int) {
        let maxCount = try self.readWide("\(what) max_count")
        guard maxCount <= UInt64(UInt32.max) else {
            throw RPCWireError(.invalidNDR, "\(what) max_count \(maxCount) is not a u32")
        }
        let arrayOffset = try self.readWide("\(what) offset")
        guard arrayOffset == 0 else {
            throw RPCWireError(.invalidNDR, "\(what) offset \(arrayOffset) is not 0")
        }
        let actual = try self.readCount("\(what) actual_count", limit: self.limits.maximumTowers)
        guard UInt64(actual) == UInt64(count), UInt64(actual) <= maxCount else {
            throw RPCWireError(
                .invalidNDR,
                "\(what) actual_count \(actual), count \(count), max_count \(maxCount) disagree"
            )
        }
        return (UInt32(maxCount), actual)
    }
}

// MARK: - Whole stubs

extension ByteBuffer {
    /// Decodes `self`, which must be exactly one stub: `decode` reads it, every byte must be
    /// consumed, and the reader index moves to the end only on success.
    mutating func readWholeNDRStub<Value>(
        _ what: String,
        syntax: NDRSyntax,
        endianness: Endianness,
        limits: WireLimits,
        _ decode: (inout NDRReader) throws -> Value
    ) throws -> Value {
        var reader = try NDRReader(buffer: self, syntax: syntax, endianness: endianness, limits: limits)
        let value = try decode(&reader)
        try reader.finish(what)
        self.moveReaderIndex(to: self.writerIndex)
        return value
    }
}

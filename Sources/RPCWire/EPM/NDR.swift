import NIOCore

/// The transfer syntax a stub is encoded in.
///
/// NDR 2.0 (C706 chapter 14) uses 32-bit conformance, variance and pointer referents; NDR64
/// (MS-RPCE 2.2.5) widens them to 64 bits, aligned to 8, and is always little-endian.
/// Alignment is relative to the first byte of the stub.
public enum NDRSyntax: Hashable, Sendable {
    case ndr32
    case ndr64

    /// The syntax a presentation context negotiated, or `nil` for one this module cannot read.
    public init?(transferSyntax: SyntaxID) {
        switch transferSyntax.transferSyntaxKind {
        case .ndr: self = .ndr32
        case .ndr64: self = .ndr64
        case .bindTimeFeatureNegotiation, .other: return nil
        }
    }

    /// Size and alignment of pointer referents, conformance, offset and actual count.
    var wideSize: Int {
        switch self {
        case .ndr32: return 4
        case .ndr64: return 8
        }
    }
}

/// Reads NDR primitives from a stub, tracking alignment relative to the stub start.
///
/// Every failure is ``RPCWireError/Code/invalidNDR``; nothing here traps on wire input.
struct NDRReader {
    private(set) var buffer: ByteBuffer
    let start: Int
    let syntax: NDRSyntax
    let endianness: Endianness
    let limits: WireLimits
    /// Padding bytes skipped by ``align(_:)``, in order, so a message re-serializes byte for byte.
    private(set) var padding: [UInt8] = []
    /// Non-null referents seen so far: a full pointer seen twice would not be re-transmitted, and
    /// this reader does not track aliasing, so a repeat is refused rather than misread.
    private var referents: Set<UInt64> = []

    init(buffer: ByteBuffer, syntax: NDRSyntax, endianness: Endianness, limits: WireLimits) throws {
        if syntax == .ndr64, endianness != .little {
            throw RPCWireError(.invalidDataRepresentation, "NDR64 requires little-endian data (MS-RPCE 2.2.5)")
        }
        self.buffer = buffer
        self.start = buffer.readerIndex
        self.syntax = syntax
        self.endianness = endianness
        self.limits = limits
    }

    /// Position relative to the stub start.
    var offset: Int { self.buffer.readerIndex - self.start }

    var remaining: Int { self.buffer.readableBytes }

    mutating func align(_ alignment: Int) throws {
        let pad = (alignment - self.offset % alignment) % alignment
        guard pad > 0 else { return }
        guard let bytes = self.buffer.readBytes(length: pad) else {
            throw RPCWireError(.invalidNDR, "alignment padding at stub offset \(self.offset) past the end")
        }
        self.padding.append(contentsOf: bytes)
    }

    mutating func readUInt32(_ what: @autoclosure () -> String) throws -> UInt32 {
        try self.align(4)
        guard let value = self.buffer.readInteger(endianness: self.endianness, as: UInt32.self) else {
            throw RPCWireError(.invalidNDR, "\(what()) at stub offset \(self.offset) past the end")
        }
        return value
    }

    mutating func readUInt16(_ what: @autoclosure () -> String) throws -> UInt16 {
        try self.align(2)
        guard let value = self.buffer.readInteger(endianness: self.endianness, as: UInt16.self) else {
            throw RPCWireError(.invalidNDR, "\(what()) at stub offset \(self.offset) past the end")
        }
        return value
    }

    /// A u32 (NDR) or u64 (NDR64) value: conformance, offset, actual count or referent.
    mutating func readWide(_ what: @autoclosure () -> String) throws -> UInt64 {
        switch self.syntax {
        case .ndr32:
            return UInt64(try self.readUInt32(what()))
        case .ndr64:
            try self.align(8)
            guard let value = self.buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw RPCWireError(.invalidNDR, "\(what()) at stub offset \(self.offset) past the end")
            }
            return value
        }
    }

    /// A count checked against `limit` before it becomes an `Int`.
    mutating func readCount(_ what: @autoclosure () -> String, limit: Int) throws -> Int {
        let raw = try self.readWide(what())
        guard raw <= UInt64(limit) else {
            throw RPCWireError(.invalidNDR, "\(what()) \(raw) > limit \(limit)")
        }
        return Int(raw)
    }

    /// A unique or full pointer's referent; `0` is null. Repeated non-null referents are refused.
    mutating func readReferent(_ what: @autoclosure () -> String) throws -> UInt64 {
        let referent = try self.readWide(what())
        guard referent != 0 else { return 0 }
        guard self.referents.insert(referent).inserted else {
            throw RPCWireError(.invalidNDR, "\(what()) repeats referent 0x\(String(referent, radix: 16))")
        }
        return referent
    }

    mutating func readUUID(_ what: @autoclosure () -> String) throws -> DCEUUID {
        try self.align(4)
        guard let uuid = self.buffer.readDCEUUID(endianness: self.endianness) else {
            throw RPCWireError(.invalidNDR, "\(what()) at stub offset \(self.offset) past the end")
        }
        return uuid
    }

    mutating func readBytes(_ what: @autoclosure () -> String, count: Int) throws -> [UInt8] {
        guard let bytes = self.buffer.readBytes(length: count) else {
            throw RPCWireError(.invalidNDR, "\(what()) of \(count) bytes at stub offset \(self.offset) past the end")
        }
        return bytes
    }

    mutating func readContextHandle() throws -> EPMContextHandle {
        let attributes = try self.readUInt32("context handle attributes")
        let uuid = try self.readUUID("context handle UUID")
        return EPMContextHandle(attributes: attributes, uuid: uuid)
    }

    /// `twr_t` (C706 Appendix O): conformance, `tower_length`, the tower octet string.
    ///
    /// In NDR64 the conformance is a u64 aligned to 8 placed before the structure
    /// (MS-RPCE 2.2.5.3.4.2); `tower_length` follows at once. Returns the tower and its stub offset.
    mutating func readTwr() throws -> (tower: ProtocolTower, offset: Int) {
        let conformance = try self.readWide("twr_t conformance")
        let length = try self.readUInt32("tower_length")
        guard conformance == UInt64(length) else {
            throw RPCWireError(.invalidNDR, "twr_t conformance \(conformance) != tower_length \(length)")
        }
        guard Int(length) <= self.limits.maximumTowerLength else {
            throw RPCWireError(.invalidTower, "tower_length \(length) > limit \(self.limits.maximumTowerLength)")
        }
        guard Int(length) <= self.remaining else {
            throw RPCWireError(
                .invalidNDR,
                "tower_length \(length) at stub offset \(self.offset) runs past the \(self.remaining) bytes left"
            )
        }
        let offset = self.offset
        let tower = try self.buffer.readProtocolTower(length: Int(length), limits: self.limits)
        return (tower, offset)
    }

    /// Requires the whole stub to have been consumed. `what` is only formatted for the error (an
    /// eager interpolation here cost a third of an `ept_map` rewrite).
    func finish(_ what: @autoclosure () -> String) throws {
        // A signed or sealed request may end with a verification trailer (MS-RPCE 2.2.2.13).
        guard self.remaining == 0 || VerificationTrailer.follows(in: self.buffer, offset: self.offset) else {
            throw RPCWireError(.invalidNDR, "\(self.remaining) bytes after the \(what()) stub")
        }
    }
}

/// Writes NDR primitives, aligning relative to the stub start and reusing recorded padding bytes.
struct NDRWriter {
    let start: Int
    let syntax: NDRSyntax
    let endianness: Endianness
    private let padding: [UInt8]
    private var paddingIndex = 0
    /// Generated referents, Samba style: 0x00020000 + 4·n.
    private var nextReferent: UInt64 = 0x0002_0000

    init(buffer: ByteBuffer, syntax: NDRSyntax, endianness: Endianness, padding: [UInt8]) {
        self.start = buffer.writerIndex
        self.syntax = syntax
        self.endianness = syntax == .ndr64 ? .little : endianness
        self.padding = padding
    }

    mutating func align(_ alignment: Int, in buffer: inout ByteBuffer) {
        let offset = buffer.writerIndex - self.start
        let pad = (alignment - offset % alignment) % alignment
        for _ in 0..<pad {
            if self.paddingIndex < self.padding.count {
                buffer.writeInteger(self.padding[self.paddingIndex])
                self.paddingIndex += 1
            } else {
                buffer.writeInteger(UInt8(0))
            }
        }
    }

    mutating func writeUInt32(_ value: UInt32, in buffer: inout ByteBuffer) {
        self.align(4, in: &buffer)
        buffer.writeInteger(value, endianness: self.endianness)
    }

    mutating func writeUInt16(_ value: UInt16, in buffer: inout ByteBuffer) {
        self.align(2, in: &buffer)
        buffer.writeInteger(value, endianness: self.endianness)
    }

    mutating func writeWide(_ value: UInt64, in buffer: inout ByteBuffer) {
        switch self.syntax {
        case .ndr32:
            self.writeUInt32(UInt32(truncatingIfNeeded: value), in: &buffer)
        case .ndr64:
            self.align(8, in: &buffer)
            buffer.writeInteger(value, endianness: .little)
        }
    }

    /// Writes a pointer referent: `0` when `isNull`, else `preferred` if non-zero, else a generated one.
    mutating func writeReferent(isNull: Bool, preferred: UInt64, in buffer: inout ByteBuffer) {
        guard !isNull else {
            self.writeWide(0, in: &buffer)
            return
        }
        var referent = preferred
        if referent == 0 {
            referent = self.nextReferent
            self.nextReferent += 4
        }
        self.writeWide(referent, in: &buffer)
    }

    mutating func writeUUID(_ uuid: DCEUUID, in buffer: inout ByteBuffer) {
        self.align(4, in: &buffer)
        buffer.writeDCEUUID(uuid, endianness: self.endianness)
    }

    mutating func writeContextHandle(_ handle: EPMContextHandle, in buffer: inout ByteBuffer) {
        self.writeUInt32(handle.attributes, in: &buffer)
        self.writeUUID(handle.uuid, in: &buffer)
    }

    mutating func writeTwr(_ tower: ProtocolTower, in buffer: inout ByteBuffer) {
        let length = tower.encodedLength
        self.writeWide(UInt64(length), in: &buffer)
        self.writeUInt32(UInt32(truncatingIfNeeded: length), in: &buffer)
        buffer.writeProtocolTower(tower)
    }
}

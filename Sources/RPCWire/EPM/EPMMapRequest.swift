public import NIOCore

/// The `[in]` parameters of `ept_map` (opnum 3).
///
/// NDR32: object unique pointer (+ UUID), tower unique pointer (+ `twr_t`), entry handle,
/// max_towers. The referents and alignment padding are kept so a parsed request re-serializes byte
/// for byte (impacket sends referents 1 and 2 and pads with 0xab).
public struct EPMMapRequest: Hashable, Sendable {
    public var object: DCEUUID?
    public var tower: ProtocolTower?
    public var entryHandle: EPMContextHandle
    public var maxTowers: UInt32
    /// Referent of the object pointer; `0` writes 1 when the object is present.
    public var objectReferent: UInt64
    /// Referent of the tower pointer; `0` writes 2 when the tower is present.
    public var towerReferent: UInt64
    /// Alignment padding as read, reused in order when writing; missing bytes are written as zero.
    public var padding: [UInt8]

    public init(
        object: DCEUUID?,
        tower: ProtocolTower?,
        entryHandle: EPMContextHandle = .null,
        maxTowers: UInt32,
        objectReferent: UInt64 = 0,
        towerReferent: UInt64 = 0,
        padding: [UInt8] = []
    ) {
        self.object = object
        self.tower = tower
        self.entryHandle = entryHandle
        self.maxTowers = maxTowers
        self.objectReferent = objectReferent
        self.towerReferent = towerReferent
        self.padding = padding
    }
}

// MARK: - NDR

extension EPMMapRequest {
    static func read(from reader: inout NDRReader) throws -> EPMMapRequest {
        let objectReferent = try reader.readReferent("object pointer")
        var object: DCEUUID? = nil
        if objectReferent != 0 {
            object = try reader.readUUID("object UUID")
        }
        let towerReferent = try reader.readReferent("map_tower pointer")
        var tower: ProtocolTower? = nil
        if towerReferent != 0 {
            tower = try reader.readTwr().tower
        }
        let handle = try reader.readContextHandle()
        let maxTowers = try reader.readUInt32("max_towers")
        return EPMMapRequest(
            object: object,
            tower: tower,
            entryHandle: handle,
            maxTowers: maxTowers,
            objectReferent: objectReferent,
            towerReferent: towerReferent,
            padding: reader.padding
        )
    }

    func write(to buffer: inout ByteBuffer, syntax: NDRSyntax, endianness: Endianness) -> Int {
        var writer = NDRWriter(buffer: buffer, syntax: syntax, endianness: endianness, padding: self.padding)
        let start = buffer.writerIndex
        writer.writeWide(self.object == nil ? 0 : (self.objectReferent == 0 ? 1 : self.objectReferent), in: &buffer)
        if let object = self.object {
            writer.writeUUID(object, in: &buffer)
        }
        writer.writeWide(self.tower == nil ? 0 : (self.towerReferent == 0 ? 2 : self.towerReferent), in: &buffer)
        if let tower = self.tower {
            writer.writeTwr(tower, in: &buffer)
        }
        writer.writeContextHandle(self.entryHandle, in: &buffer)
        writer.writeUInt32(self.maxTowers, in: &buffer)
        return buffer.writerIndex - start
    }
}

// MARK: - ByteBuffer API

extension ByteBuffer {
    /// Parses an `ept_map` request stub; `self` is exactly the stub.
    ///
    /// `endianness` is the PDU's `drep` (NDR64 requires little-endian). Throws ``RPCWireError``
    /// (`.invalidNDR`, `.invalidTower`, `.invalidDataRepresentation`); the reader index moves to
    /// the end only on success.
    public mutating func readEPMMapRequest(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> EPMMapRequest {
        try self.readWholeNDRStub("ept_map request", syntax: syntax, endianness: endianness, limits: limits) {
            try EPMMapRequest.read(from: &$0)
        }
    }

    /// Writes an `ept_map` request stub, aligning relative to the current writer index. NDR64 is
    /// always written little-endian.
    @discardableResult
    public mutating func writeEPMMapRequest(
        _ request: EPMMapRequest,
        syntax: NDRSyntax,
        endianness: Endianness = .little
    ) -> Int {
        request.write(to: &self, syntax: syntax, endianness: endianness)
    }
}

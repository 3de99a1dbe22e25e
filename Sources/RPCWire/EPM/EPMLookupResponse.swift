public import NIOCore

/// The `[out]` parameters of `ept_lookup`.
///
/// Entry handle, num_ents u32, conformant varying array of `ept_entry_t` (max_count, offset,
/// actual_count, entries), the deferred `twr_t`s in entry order, status.
public struct EPMLookupResponse: Hashable, Sendable {
    public var entryHandle: EPMContextHandle
    /// The array's max_count (the request's max_ents).
    public var maxEntries: UInt32
    public var entries: [EPMEntry]
    public var status: RPCStatus
    /// Alignment padding as read, reused in order when writing; missing bytes are written as zero.
    public var padding: [UInt8]

    public init(
        entryHandle: EPMContextHandle,
        maxEntries: UInt32,
        entries: [EPMEntry],
        status: RPCStatus,
        padding: [UInt8] = []
    ) {
        self.entryHandle = entryHandle
        self.maxEntries = maxEntries
        self.entries = entries
        self.status = status
        self.padding = padding
    }
}

// MARK: - NDR

extension EPMLookupResponse {
    static func read(from reader: inout NDRReader) throws -> (EPMLookupResponse, [LocatedTower]) {
        let handle = try reader.readContextHandle()
        let count = try reader.readUInt32("num_ents")
        let (maxCount, actual) = try reader.readConformantVaryingHeader("entries", count: count)
        // Each entry is at least a UUID, a referent and the annotation offset and length.
        let minimumEntry = DCEUUID.wireSize + 3 * reader.syntax.wideSize
        guard actual * minimumEntry <= reader.remaining else {
            throw RPCWireError(.invalidNDR, "\(actual) entries run past the stub end")
        }
        let entryAlignment = reader.syntax.wideSize
        var entries: [EPMEntry] = []
        entries.reserveCapacity(actual)
        for index in 0..<actual {
            try reader.align(entryAlignment)
            let object = try reader.readUUID("entry \(index) object")
            let referent = try reader.readReferent("entry \(index) tower pointer")
            let annotationOffset = try reader.readWide("entry \(index) annotation offset")
            guard annotationOffset == 0 else {
                throw RPCWireError(.invalidNDR, "entry \(index) annotation offset \(annotationOffset) is not 0")
            }
            let length = try reader.readCount(
                "entry \(index) annotation length",
                limit: reader.limits.maximumAnnotationLength
            )
            let annotation = try reader.readBytes("entry \(index) annotation", count: length)
            // NDR64 pads every structure to a multiple of its alignment (MS-RPCE 2.2.5.3.4.1);
            // for NDR32 the next field's alignment gives the same bytes.
            try reader.align(entryAlignment)
            entries.append(EPMEntry(object: object, tower: nil, annotation: annotation, towerReferent: referent))
        }
        var located: [LocatedTower] = []
        for index in entries.indices where entries[index].towerReferent != 0 {
            let (tower, offset) = try reader.readTwr()
            entries[index].tower = tower
            located.append(LocatedTower(tower: tower, offset: offset))
        }
        let status = try reader.readUInt32("status")
        let response = EPMLookupResponse(
            entryHandle: handle,
            maxEntries: maxCount,
            entries: entries,
            status: RPCStatus(rawValue: status),
            padding: reader.padding
        )
        return (response, located)
    }

    func write(to buffer: inout ByteBuffer, syntax: NDRSyntax, endianness: Endianness) -> Int {
        var writer = NDRWriter(buffer: buffer, syntax: syntax, endianness: endianness, padding: self.padding)
        let start = buffer.writerIndex
        writer.writeContextHandle(self.entryHandle, in: &buffer)
        let count = UInt32(truncatingIfNeeded: self.entries.count)
        writer.writeUInt32(count, in: &buffer)
        writer.writeWide(UInt64(self.maxEntries), in: &buffer)
        writer.writeWide(0, in: &buffer)
        writer.writeWide(UInt64(count), in: &buffer)
        let entryAlignment = syntax.wideSize
        for entry in self.entries {
            writer.align(entryAlignment, in: &buffer)
            writer.writeUUID(entry.object, in: &buffer)
            writer.writeReferent(isNull: entry.tower == nil, preferred: entry.towerReferent, in: &buffer)
            writer.writeWide(0, in: &buffer)
            writer.writeWide(UInt64(entry.annotation.count), in: &buffer)
            buffer.writeBytes(entry.annotation)
            writer.align(entryAlignment, in: &buffer)
        }
        for entry in self.entries {
            if let tower = entry.tower {
                writer.writeTwr(tower, in: &buffer)
            }
        }
        writer.writeUInt32(self.status.rawValue, in: &buffer)
        return buffer.writerIndex - start
    }
}

// MARK: - ByteBuffer API

extension ByteBuffer {
    /// Parses an `ept_lookup` response stub; `self` is exactly the stub.
    public mutating func readEPMLookupResponse(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> EPMLookupResponse {
        try self.readWholeNDRStub("ept_lookup response", syntax: syntax, endianness: endianness, limits: limits) {
            try EPMLookupResponse.read(from: &$0).0
        }
    }

    /// Writes an `ept_lookup` response stub.
    @discardableResult
    public mutating func writeEPMLookupResponse(
        _ response: EPMLookupResponse,
        syntax: NDRSyntax,
        endianness: Endianness = .little
    ) -> Int {
        response.write(to: &self, syntax: syntax, endianness: endianness)
    }
}

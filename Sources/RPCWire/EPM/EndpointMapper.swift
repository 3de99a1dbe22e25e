public import NIOCore

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

// MARK: - ept_map

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

/// The `[out]` parameters of `ept_map`.
///
/// NDR32 layout: entry handle, num_towers u32, conformant varying array of tower pointers
/// (max_count, offset, actual_count, referents), the deferred `twr_t`s, status. NDR64 widens
/// max_count, offset, actual_count and referents to u64 aligned to 8 (MS-RPCE 2.2.5).
public struct EPMMapResponse: Hashable, Sendable {
    public var entryHandle: EPMContextHandle
    /// The array's max_count: the request's max_towers (`size_is(max_towers)`), as Samba echoes it.
    public var maxTowers: UInt32
    /// The returned towers; `num_towers` and actual_count are both `towers.count`.
    public var towers: [ProtocolTower?]
    public var status: RPCStatus
    /// Referents of the tower pointers, parallel to ``towers``; a missing or zero entry is generated.
    public var towerReferents: [UInt64]
    /// Alignment padding as read, reused in order when writing; missing bytes are written as zero.
    public var padding: [UInt8]

    public init(
        entryHandle: EPMContextHandle = .null,
        maxTowers: UInt32,
        towers: [ProtocolTower?],
        status: RPCStatus,
        towerReferents: [UInt64] = [],
        padding: [UInt8] = []
    ) {
        self.entryHandle = entryHandle
        self.maxTowers = maxTowers
        self.towers = towers
        self.status = status
        self.towerReferents = towerReferents
        self.padding = padding
    }

    /// "No such endpoint": no towers and `ept_s_not_registered` (0x16c9a0d6), what a server answers
    /// for an interface it does not serve. The gateway answers refused lookups with it.
    public static func notRegistered(entryHandle: EPMContextHandle = .null, maxTowers: UInt32) -> EPMMapResponse {
        EPMMapResponse(entryHandle: entryHandle, maxTowers: maxTowers, towers: [], status: .endpointNotRegistered)
    }
}

extension EPMMapResponse {
    /// The whole `response` PDU answering an `ept_map` call with ``notRegistered(entryHandle:maxTowers:)``:
    /// what the gateway sends, without asking the server, for an interface the client may not look up.
    ///
    /// - Parameters:
    ///   - callID: the request's `call_id`.
    ///   - contextID: the request's `p_cont_id`.
    ///   - maxTowers: the request's `max_towers`, echoed as the tower array's max_count.
    ///   - syntax: the transfer syntax of the request's presentation context.
    ///   - dataRepresentation: the request's `drep`, so the reply is in the client's byte order.
    /// - Throws: ``RPCWireError`` when the PDU cannot be serialized (an empty reply always can).
    public static func notRegisteredPDU(
        callID: UInt32,
        contextID: UInt16,
        maxTowers: UInt32,
        syntax: NDRSyntax,
        dataRepresentation: DataRepresentation
    ) throws -> ByteBuffer {
        var stub = ByteBuffer()
        stub.writeEPMMapResponse(
            .notRegistered(maxTowers: maxTowers),
            syntax: syntax,
            endianness: dataRepresentation.endianness
        )
        let response = PDU(
            header: PDUHeader(packetType: .response, dataRepresentation: dataRepresentation, callID: callID),
            body: .response(ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: contextID, stub: stub))
        )
        return try response.serialized()
    }
}

// MARK: - ept_lookup

/// The `[in]` parameters of `ept_lookup` (opnum 2).
///
/// inquiry_type u32, object full pointer (+ UUID), interface full pointer (+ `rpc_if_id_t`: UUID,
/// vers_major u16, vers_minor u16), vers_option u32, entry handle, max_ents u32.
public struct EPMLookupRequest: Hashable, Sendable {
    /// `rpc_c_ep_all_elts` 0, `match_by_if` 1, `match_by_obj` 2, `match_by_both` 3.
    public var inquiryType: UInt32
    public var object: DCEUUID?
    /// The interface being looked up (`rpc_if_id_t`), if any.
    public var interface: SyntaxID?
    /// `rpc_c_vers_all` 1, `compatible` 2, `exact` 3, `major_only` 4, `upto` 5.
    public var versionOption: UInt32
    public var entryHandle: EPMContextHandle
    public var maxEntries: UInt32
    /// Referent of the object pointer; `0` writes 1 when the object is present.
    public var objectReferent: UInt64
    /// Referent of the interface pointer; `0` writes 2 when the interface is present.
    public var interfaceReferent: UInt64
    /// Alignment padding as read, reused in order when writing; missing bytes are written as zero.
    public var padding: [UInt8]

    public init(
        inquiryType: UInt32,
        object: DCEUUID?,
        interface: SyntaxID?,
        versionOption: UInt32,
        entryHandle: EPMContextHandle = .null,
        maxEntries: UInt32,
        objectReferent: UInt64 = 0,
        interfaceReferent: UInt64 = 0,
        padding: [UInt8] = []
    ) {
        self.inquiryType = inquiryType
        self.object = object
        self.interface = interface
        self.versionOption = versionOption
        self.entryHandle = entryHandle
        self.maxEntries = maxEntries
        self.objectReferent = objectReferent
        self.interfaceReferent = interfaceReferent
        self.padding = padding
    }
}

/// One `ept_entry_t`: object UUID, tower pointer and annotation.
public struct EPMEntry: Hashable, Sendable {
    public var object: DCEUUID
    public var tower: ProtocolTower?
    /// The annotation characters as sent (a varying char array, NUL included).
    public var annotation: [UInt8]
    /// Referent of the tower pointer; `0` is generated when writing.
    public var towerReferent: UInt64

    public init(object: DCEUUID, tower: ProtocolTower?, annotation: [UInt8], towerReferent: UInt64 = 0) {
        self.object = object
        self.tower = tower
        self.annotation = annotation
        self.towerReferent = towerReferent
    }

    /// The annotation as text, trailing NULs removed.
    public var annotationText: String {
        var bytes = self.annotation
        while bytes.last == 0 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

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

// MARK: - Parsing

/// A tower found while parsing a reply, with the stub offset of its octet string.
struct LocatedTower {
    var tower: ProtocolTower
    var offset: Int
}

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

extension EPMLookupRequest {
    static func read(from reader: inout NDRReader) throws -> EPMLookupRequest {
        let inquiryType = try reader.readUInt32("inquiry_type")
        let objectReferent = try reader.readReferent("object pointer")
        var object: DCEUUID? = nil
        if objectReferent != 0 {
            object = try reader.readUUID("object UUID")
        }
        let interfaceReferent = try reader.readReferent("interface pointer")
        var interface: SyntaxID? = nil
        if interfaceReferent != 0 {
            let uuid = try reader.readUUID("interface UUID")
            let major = try reader.readUInt16("vers_major")
            let minor = try reader.readUInt16("vers_minor")
            interface = SyntaxID(uuid: uuid, majorVersion: major, minorVersion: minor)
        }
        let versionOption = try reader.readUInt32("vers_option")
        let handle = try reader.readContextHandle()
        let maxEntries = try reader.readUInt32("max_ents")
        return EPMLookupRequest(
            inquiryType: inquiryType,
            object: object,
            interface: interface,
            versionOption: versionOption,
            entryHandle: handle,
            maxEntries: maxEntries,
            objectReferent: objectReferent,
            interfaceReferent: interfaceReferent,
            padding: reader.padding
        )
    }

    func write(to buffer: inout ByteBuffer, syntax: NDRSyntax, endianness: Endianness) -> Int {
        var writer = NDRWriter(buffer: buffer, syntax: syntax, endianness: endianness, padding: self.padding)
        let start = buffer.writerIndex
        writer.writeUInt32(self.inquiryType, in: &buffer)
        writer.writeWide(self.object == nil ? 0 : (self.objectReferent == 0 ? 1 : self.objectReferent), in: &buffer)
        if let object = self.object {
            writer.writeUUID(object, in: &buffer)
        }
        writer.writeWide(
            self.interface == nil ? 0 : (self.interfaceReferent == 0 ? 2 : self.interfaceReferent),
            in: &buffer
        )
        if let interface = self.interface {
            writer.writeUUID(interface.uuid, in: &buffer)
            writer.writeUInt16(interface.majorVersion, in: &buffer)
            writer.writeUInt16(interface.minorVersion, in: &buffer)
        }
        writer.writeUInt32(self.versionOption, in: &buffer)
        writer.writeContextHandle(self.entryHandle, in: &buffer)
        writer.writeUInt32(self.maxEntries, in: &buffer)
        return buffer.writerIndex - start
    }
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

extension EPMMapResponse {
    static func read(from reader: inout NDRReader) throws -> (EPMMapResponse, [LocatedTower]) {
        let handle = try reader.readContextHandle()
        let count = try reader.readUInt32("num_towers")
        let (maxCount, actual) = try reader.readConformantVaryingHeader("towers", count: count)
        guard actual * reader.syntax.wideSize <= reader.remaining else {
            throw RPCWireError(.invalidNDR, "\(actual) tower pointers run past the stub end")
        }
        var referents: [UInt64] = []
        referents.reserveCapacity(actual)
        for index in 0..<actual {
            referents.append(try reader.readReferent("tower pointer \(index)"))
        }
        var towers: [ProtocolTower?] = []
        towers.reserveCapacity(actual)
        var located: [LocatedTower] = []
        for referent in referents {
            if referent == 0 {
                towers.append(nil)
            } else {
                let (tower, offset) = try reader.readTwr()
                towers.append(tower)
                located.append(LocatedTower(tower: tower, offset: offset))
            }
        }
        let status = try reader.readUInt32("status")
        let response = EPMMapResponse(
            entryHandle: handle,
            maxTowers: maxCount,
            towers: towers,
            status: RPCStatus(rawValue: status),
            towerReferents: referents,
            padding: reader.padding
        )
        return (response, located)
    }

    func write(to buffer: inout ByteBuffer, syntax: NDRSyntax, endianness: Endianness) -> Int {
        var writer = NDRWriter(buffer: buffer, syntax: syntax, endianness: endianness, padding: self.padding)
        let start = buffer.writerIndex
        writer.writeContextHandle(self.entryHandle, in: &buffer)
        let count = UInt32(truncatingIfNeeded: self.towers.count)
        writer.writeUInt32(count, in: &buffer)
        writer.writeWide(UInt64(self.maxTowers), in: &buffer)
        writer.writeWide(0, in: &buffer)
        writer.writeWide(UInt64(count), in: &buffer)
        for (index, tower) in self.towers.enumerated() {
            let preferred = index < self.towerReferents.count ? self.towerReferents[index] : 0
            writer.writeReferent(isNull: tower == nil, preferred: preferred, in: &buffer)
        }
        for tower in self.towers {
            if let tower {
                writer.writeTwr(tower, in: &buffer)
            }
        }
        writer.writeUInt32(self.status.rawValue, in: &buffer)
        return buffer.writerIndex - start
    }
}

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
    /// Decodes `self`, which must be exactly one stub: `decode` reads it, every byte must be
    /// consumed, and the reader index moves to the end only on success.
    private mutating func readWholeNDRStub<Value>(
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
        try self.readWholeNDRStub("ept_map request", syntax: syntax, endianness: endianness, limits: limits) { reader in
            try EPMMapRequest.read(from: &reader)
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

    /// Parses an `ept_map` response stub; `self` is exactly the stub.
    public mutating func readEPMMapResponse(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> EPMMapResponse {
        try self.readWholeNDRStub("ept_map response", syntax: syntax, endianness: endianness, limits: limits) { reader in
            try EPMMapResponse.read(from: &reader).0
        }
    }

    /// Writes an `ept_map` response stub.
    @discardableResult
    public mutating func writeEPMMapResponse(
        _ response: EPMMapResponse,
        syntax: NDRSyntax,
        endianness: Endianness = .little
    ) -> Int {
        response.write(to: &self, syntax: syntax, endianness: endianness)
    }

    /// Parses an `ept_lookup` request stub; `self` is exactly the stub.
    public mutating func readEPMLookupRequest(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> EPMLookupRequest {
        try self.readWholeNDRStub("ept_lookup request", syntax: syntax, endianness: endianness, limits: limits) { reader in
            try EPMLookupRequest.read(from: &reader)
        }
    }

    /// Writes an `ept_lookup` request stub.
    @discardableResult
    public mutating func writeEPMLookupRequest(
        _ request: EPMLookupRequest,
        syntax: NDRSyntax,
        endianness: Endianness = .little
    ) -> Int {
        request.write(to: &self, syntax: syntax, endianness: endianness)
    }

    /// Parses an `ept_lookup` response stub; `self` is exactly the stub.
    public mutating func readEPMLookupResponse(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> EPMLookupResponse {
        try self.readWholeNDRStub("ept_lookup response", syntax: syntax, endianness: endianness, limits: limits) { reader in
            try EPMLookupResponse.read(from: &reader).0
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

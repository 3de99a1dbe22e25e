public import NIOCore

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

// MARK: - NDR

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

// MARK: - ByteBuffer API

extension ByteBuffer {
    /// Parses an `ept_lookup` request stub; `self` is exactly the stub.
    public mutating func readEPMLookupRequest(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> EPMLookupRequest {
        try self.readWholeNDRStub("ept_lookup request", syntax: syntax, endianness: endianness, limits: limits) {
            try EPMLookupRequest.read(from: &$0)
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
}

public import NIOCore

/// `COMVERSION` (MS-DCOM 2.2.11): the DCOM protocol version, 5.7 on current Windows.
public struct COMVersion: Hashable, Sendable, CustomStringConvertible {
    public var major: UInt16
    public var minor: UInt16

    public init(major: UInt16, minor: UInt16) {
        self.major = major
        self.minor = minor
    }

    public var description: String { "\(self.major).\(self.minor)" }
}

/// One ORPC extension (`ORPC_EXTENT`, MS-DCOM 2.2.13.1): its id and the size of its data. The data
/// itself (error information, context properties) is not kept.
public struct ORPCExtent: Hashable, Sendable {
    public var id: DCEUUID
    public var size: UInt32

    public init(id: DCEUUID, size: UInt32) {
        self.id = id
        self.size = size
    }
}

/// `ORPCTHIS` (MS-DCOM 2.2.13.3): the first parameter of every ORPC request, activation included.
public struct ORPCThis: Hashable, Sendable {
    public var version: COMVersion
    /// `ORPCF_*` (MS-DCOM 2.2.13.3): 0x1 local, 0x2-0x10 reserved.
    public var flags: UInt32
    public var reserved: UInt32
    /// The causality id that ties nested calls of one logical call together.
    public var causalityID: DCEUUID
    /// The extensions, empty when the pointer is null.
    public var extensions: [ORPCExtent]

    public init(
        version: COMVersion,
        flags: UInt32,
        reserved: UInt32 = 0,
        causalityID: DCEUUID,
        extensions: [ORPCExtent] = []
    ) {
        self.version = version
        self.flags = flags
        self.reserved = reserved
        self.causalityID = causalityID
        self.extensions = extensions
    }
}

/// `ORPCTHAT` (MS-DCOM 2.2.13.4): the first parameter of every ORPC response.
public struct ORPCThat: Hashable, Sendable {
    public var flags: UInt32
    public var extensions: [ORPCExtent]

    public init(flags: UInt32, extensions: [ORPCExtent] = []) {
        self.flags = flags
        self.extensions = extensions
    }
}

// MARK: - NDR

extension NDRReader {
    mutating func readCOMVersion() throws -> COMVersion {
        let major = try self.readUInt16("COMVERSION major")
        let minor = try self.readUInt16("COMVERSION minor")
        return COMVersion(major: major, minor: minor)
    }

    /// `ORPCTHIS` as a top-level parameter: the structure, then (deferred) its extensions.
    mutating func readORPCThis() throws -> ORPCThis {
        let version = try self.readCOMVersion()
        let flags = try self.readUInt32("ORPCTHIS flags")
        let reserved = try self.readUInt32("ORPCTHIS reserved1")
        let cid = try self.readUUID("ORPCTHIS cid")
        let extensionsReferent = try self.readReferent("ORPCTHIS extensions pointer")
        let extensions = extensionsReferent == 0 ? [] : try self.readORPCExtentArray()
        return ORPCThis(version: version, flags: flags, reserved: reserved, causalityID: cid, extensions: extensions)
    }

    /// `ORPCTHAT` as a top-level parameter.
    mutating func readORPCThat() throws -> ORPCThat {
        let flags = try self.readUInt32("ORPCTHAT flags")
        let extensionsReferent = try self.readReferent("ORPCTHAT extensions pointer")
        let extensions = extensionsReferent == 0 ? [] : try self.readORPCExtentArray()
        return ORPCThat(flags: flags, extensions: extensions)
    }

    /// The pointee of an `ORPC_EXTENT_ARRAY*` (MS-DCOM 2.2.13.2): `size`, `reserved`, a unique
    /// pointer to an array of `(size + 1) & ~1` unique pointers to `ORPC_EXTENT`s.
    private mutating func readORPCExtentArray() throws -> [ORPCExtent] {
        let size = try self.readUInt32("ORPC_EXTENT_ARRAY size")
        _ = try self.readUInt32("ORPC_EXTENT_ARRAY reserved")
        guard Int(size) <= self.limits.maximumORPCExtents else {
            throw RPCWireError(.invalidDCOM, "ORPC_EXTENT_ARRAY size \(size) > limit \(self.limits.maximumORPCExtents)")
        }
        let arrayReferent = try self.readReferent("ORPC_EXTENT_ARRAY extent pointer")
        guard arrayReferent != 0 else { return [] }
        let slots = try self.readCount("ORPC_EXTENT_ARRAY max_count", limit: self.limits.maximumORPCExtents + 1)
        guard slots == (Int(size) + 1) & ~1 else {
            throw RPCWireError(.invalidDCOM, "ORPC_EXTENT_ARRAY max_count \(slots) for size \(size)")
        }
        var referents: [UInt64] = []
        for index in 0..<slots {
            referents.append(try self.readReferent("ORPC_EXTENT pointer \(index)"))
        }
        var extents: [ORPCExtent] = []
        for referent in referents where referent != 0 {
            // A conformant structure: the array's conformance comes first (C706 14.3.7.1).
            let conformance = try self.readCount("ORPC_EXTENT max_count", limit: self.limits.maximumORPCExtentLength)
            let id = try self.readUUID("ORPC_EXTENT id")
            let extentSize = try self.readUInt32("ORPC_EXTENT size")
            // MS-DCOM 2.2.13.1: the data is padded to a multiple of 8.
            guard UInt64(conformance) == (UInt64(extentSize) + 7) & ~7 else {
                throw RPCWireError(.invalidDCOM, "ORPC_EXTENT max_count \(conformance) for size \(extentSize)")
            }
            _ = try self.readBytes("ORPC_EXTENT data", count: conformance)
            extents.append(ORPCExtent(id: id, size: extentSize))
        }
        return extents
    }
}

// MARK: - ByteBuffer API

extension ByteBuffer {
    /// Reads the `ORPCTHIS` at the start of an ORPC request stub and leaves the reader after it
    /// (the method's own parameters follow). The stub must be readable: not sealed.
    public mutating func readORPCThis(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> ORPCThis {
        var reader = try NDRReader(buffer: self, syntax: syntax, endianness: endianness, limits: limits)
        let this = try reader.readORPCThis()
        self.moveReaderIndex(forwardBy: reader.offset)
        return this
    }

    /// Reads the `ORPCTHAT` at the start of an ORPC response stub and leaves the reader after it.
    public mutating func readORPCThat(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> ORPCThat {
        var reader = try NDRReader(buffer: self, syntax: syntax, endianness: endianness, limits: limits)
        let that = try reader.readORPCThat()
        self.moveReaderIndex(forwardBy: reader.offset)
        return that
    }
}

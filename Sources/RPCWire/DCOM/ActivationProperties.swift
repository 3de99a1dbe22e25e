import NIOCore

/// The class to create and the interfaces asked for: `InstantiationInfoData` (MS-DCOM 2.2.22.2.1).
public struct InstantiationInfo: Hashable, Sendable {
    /// `classId`: the CLSID being activated (MMC20.Application, ShellWindows, WbemLevel1Login, …).
    public var classID: DCEUUID
    public var classContext: UInt32
    /// `pIID`: the interfaces the client wants on the new object.
    public var requestedInterfaces: [DCEUUID]
    public var clientVersion: COMVersion

    public init(classID: DCEUUID, classContext: UInt32, requestedInterfaces: [DCEUUID], clientVersion: COMVersion) {
        self.classID = classID
        self.classContext = classContext
        self.requestedInterfaces = requestedInterfaces
        self.clientVersion = clientVersion
    }
}

/// The object exporter of an activated object: `REMOTEREPLY_SCM_INFO` inside `ScmReplyInfoData`
/// (MS-DCOM 2.2.22.2.8.1), or the same fields of a `ResolveOxid2` or `RemoteActivation` reply.
public struct ObjectExporterBinding: Hashable, Sendable {
    public var oxid: UInt64
    /// Where the exporter listens (`HOST[PORT]` string bindings) and its security services.
    public var bindings: DualStringArray
    /// The IPID of the exporter's `IRemUnknown` (for `RemQueryInterface`, `RemAddRef`, …).
    public var remUnknownIPID: DCEUUID
    public var authenticationHint: UInt32
    public var serverVersion: COMVersion

    public init(
        oxid: UInt64,
        bindings: DualStringArray,
        remUnknownIPID: DCEUUID,
        authenticationHint: UInt32,
        serverVersion: COMVersion
    ) {
        self.oxid = oxid
        self.bindings = bindings
        self.remUnknownIPID = remUnknownIPID
        self.authenticationHint = authenticationHint
        self.serverVersion = serverVersion
    }
}

/// One interface returned by an activation (`PropsOutInfo`, MS-DCOM 2.2.22.2.9).
public struct ActivatedInterface: Hashable, Sendable {
    public var iid: DCEUUID
    /// The HRESULT for this interface; 0 is `S_OK`.
    public var result: UInt32
    /// The marshaled pointer, absent when `result` is a failure.
    public var reference: ObjectReference?

    public init(iid: DCEUUID, result: UInt32, reference: ObjectReference?) {
        self.iid = iid
        self.result = result
        self.reference = reference
    }
}

// MARK: - Activation properties blob (MS-DCOM 2.2.22)

/// One property of an activation properties blob: its CLSID and its type-serialized bytes.
struct ActivationProperty {
    var classID: DCEUUID
    var bytes: ByteBuffer
}

extension ByteBuffer {
    /// Splits an activation properties blob (`pObjectData` of the ActivationPropertiesIn/Out custom
    /// OBJREF, MS-DCOM 2.2.22): `dwSize`, `dwReserved`, the `CustomHeader` (2.2.22.1), then one
    /// property per CustomHeader entry, each `pSizes[i]` bytes.
    mutating func readActivationProperties(limits: WireLimits) throws -> [ActivationProperty] {
        guard let size = self.readInteger(endianness: .little, as: UInt32.self),
            self.readInteger(endianness: .little, as: UInt32.self) != nil
        else {
            throw RPCWireError(.invalidDCOM, "activation properties blob shorter than 8 bytes")
        }
        guard Int(size) <= self.readableBytes else {
            throw RPCWireError(
                .invalidDCOM,
                "activation properties dwSize \(size) > the \(self.readableBytes) bytes present"
            )
        }
        let headerStart = self.readerIndex
        var header = try self.readTypeSerializedObject("CustomHeader", limits: limits)
        let (headerSize, classIDs, sizes) = try header.reader.readCustomHeader()
        guard Int(headerSize) == self.readerIndex - headerStart else {
            throw RPCWireError(
                .invalidDCOM,
                "CustomHeader headerSize \(headerSize) != its \(self.readerIndex - headerStart) serialized bytes"
            )
        }
        var properties: [ActivationProperty] = []
        for (classID, propertySize) in zip(classIDs, sizes) {
            guard let bytes = self.readSlice(length: Int(propertySize)) else {
                throw RPCWireError(
                    .invalidDCOM,
                    "activation property \(classID) of \(propertySize) bytes runs past the blob"
                )
            }
            properties.append(ActivationProperty(classID: classID, bytes: bytes))
        }
        return properties
    }

    /// A type-serialized object, version 1 (MS-RPCE 2.2.6): the 8-byte common header (version 1,
    /// endianness 0x10 little or 0x00 big, header length 8, filler), the 8-byte private header
    /// (object buffer length and filler), then the NDR of the object. Returns a reader over the
    /// object buffer and moves past it.
    ///
    /// MS-RPCE 2.2.6.2 says the object buffer length MUST be a multiple of 8; Windows pads, but
    /// impacket writes the unpadded length (and pads after it), and Windows accepts that, so any
    /// length that fits is read.
    mutating func readTypeSerializedObject(
        _ what: String,
        limits: WireLimits
    ) throws -> (reader: NDRReader, length: Int) {
        guard let version = self.readInteger(as: UInt8.self),
            let endiannessByte = self.readInteger(as: UInt8.self),
            let headerLength = self.readInteger(endianness: .little, as: UInt16.self),
            self.readInteger(as: UInt32.self) != nil
        else {
            throw RPCWireError(.invalidDCOM, "\(what) shorter than its type serialization header")
        }
        guard version == 1, headerLength == 8 else {
            throw RPCWireError(
                .invalidDCOM,
                "\(what) type serialization version \(version), header length \(headerLength)"
            )
        }
        let endianness: Endianness
        switch endiannessByte {
        case 0x10: endianness = .little
        case 0x00: endianness = .big
        default:
            throw RPCWireError(
                .invalidDCOM,
                "\(what) type serialization endianness 0x\(String(endiannessByte, radix: 16))"
            )
        }
        guard let objectLength = self.readInteger(endianness: endianness, as: UInt32.self),
            self.readInteger(as: UInt32.self) != nil
        else {
            throw RPCWireError(.invalidDCOM, "\(what) shorter than its private header")
        }
        guard let object = self.readSlice(length: Int(objectLength)) else {
            throw RPCWireError(
                .invalidDCOM,
                "\(what) object buffer length \(objectLength) runs past the \(self.readableBytes) bytes left"
            )
        }
        let reader = try NDRReader(buffer: object, syntax: .ndr32, endianness: endianness, limits: limits)
        return (reader, Int(objectLength))
    }
}

extension NDRReader {
    /// `CustomHeader` (MS-DCOM 2.2.22.1): returns `headerSize` and the property CLSIDs and sizes.
    mutating func readCustomHeader() throws -> (headerSize: UInt32, classIDs: [DCEUUID], sizes: [UInt32]) {
        _ = try self.readUInt32("CustomHeader totalSize")
        let headerSize = try self.readUInt32("CustomHeader headerSize")
        _ = try self.readUInt32("CustomHeader dwReserved")
        _ = try self.readUInt32("CustomHeader destCtx")
        let count = try self.readUInt32("CustomHeader cIfs")
        guard count >= 1, Int(count) <= self.limits.maximumActivationEntries else {
            throw RPCWireError(
                .invalidDCOM,
                "CustomHeader cIfs \(count) outside 1...\(self.limits.maximumActivationEntries)"
            )
        }
        _ = try self.readUUID("CustomHeader classInfoClsid")
        let classIDsReferent = try self.readReferent("CustomHeader pclsid")
        let sizesReferent = try self.readReferent("CustomHeader pSizes")
        let reservedReferent = try self.readReferent("CustomHeader pdwReserved")
        guard classIDsReferent != 0, sizesReferent != 0 else {
            throw RPCWireError(.invalidDCOM, "CustomHeader without property CLSIDs or sizes")
        }
        try self.readConformance("CustomHeader pclsid", equalTo: count)
        var classIDs: [DCEUUID] = []
        for index in 0..<Int(count) {
            classIDs.append(try self.readUUID("CustomHeader pclsid[\(index)]"))
        }
        try self.readConformance("CustomHeader pSizes", equalTo: count)
        var sizes: [UInt32] = []
        for index in 0..<Int(count) {
            sizes.append(try self.readUInt32("CustomHeader pSizes[\(index)]"))
        }
        if reservedReferent != 0 {
            _ = try self.readUInt32("CustomHeader *pdwReserved")
        }
        return (headerSize, classIDs, sizes)
    }

    /// A conformant array's max_count, which must equal `count` (the `size_is` field).
    mutating func readConformance(_ what: String, equalTo count: UInt32) throws {
        let conformance = try self.readWide("\(what) max_count")
        guard conformance == UInt64(count) else {
            throw RPCWireError(.invalidDCOM, "\(what) max_count \(conformance) != count \(count)")
        }
    }

    /// `InstantiationInfoData` (MS-DCOM 2.2.22.2.1).
    mutating func readInstantiationInfo() throws -> InstantiationInfo {
        let classID = try self.readUUID("InstantiationInfo classId")
        let classContext = try self.readUInt32("InstantiationInfo classCtx")
        _ = try self.readUInt32("InstantiationInfo actvflags")
        _ = try self.readUInt32("InstantiationInfo fIsSurrogate")
        let count = try self.readUInt32("InstantiationInfo cIID")
        guard count >= 1, Int(count) <= self.limits.maximumActivationEntries else {
            throw RPCWireError(
                .invalidDCOM,
                "InstantiationInfo cIID \(count) outside 1...\(self.limits.maximumActivationEntries)"
            )
        }
        _ = try self.readUInt32("InstantiationInfo instFlag")
        let iidsReferent = try self.readReferent("InstantiationInfo pIID")
        _ = try self.readUInt32("InstantiationInfo thisSize")
        let version = try self.readCOMVersion()
        var interfaces: [DCEUUID] = []
        if iidsReferent != 0 {
            try self.readConformance("InstantiationInfo pIID", equalTo: count)
            for index in 0..<Int(count) {
                interfaces.append(try self.readUUID("InstantiationInfo pIID[\(index)]"))
            }
        }
        return InstantiationInfo(
            classID: classID,
            classContext: classContext,
            requestedInterfaces: interfaces,
            clientVersion: version
        )
    }

    /// `REMOTEREPLY_SCM_INFO`'s fields in their order: OXID, bindings pointer, IPID of
    /// IRemUnknown, authentication hint, server version; the bindings are deferred after them.
    mutating func readRemoteReplySCMInfo() throws -> ObjectExporterBinding {
        let oxid = try self.readUInt64("REMOTEREPLY_SCM_INFO Oxid")
        let bindingsReferent = try self.readReferent("REMOTEREPLY_SCM_INFO pdsaOxidBindings")
        let ipid = try self.readUUID("REMOTEREPLY_SCM_INFO ipidRemUnknown")
        let hint = try self.readUInt32("REMOTEREPLY_SCM_INFO authnHint")
        let version = try self.readCOMVersion()
        let bindings =
            bindingsReferent == 0
            ? DualStringArray(stringBindings: [], securityBindings: []) : try self.readDualStringArray()
        return ObjectExporterBinding(
            oxid: oxid,
            bindings: bindings,
            remUnknownIPID: ipid,
            authenticationHint: hint,
            serverVersion: version
        )
    }

    /// `ScmReplyInfoData` (MS-DCOM 2.2.22.2.8): a reserved pointer that is null, then the
    /// `remoteReply` pointer. Returns `nil` when the reply names no exporter (a local reply).
    mutating func readSCMReplyInfo() throws -> ObjectExporterBinding? {
        let reserved = try self.readReferent("ScmReplyInfoData pvReserved")
        guard reserved == 0 else {
            throw RPCWireError(.invalidDCOM, "ScmReplyInfoData pvReserved is not null")
        }
        let replyReferent = try self.readReferent("ScmReplyInfoData remoteReply")
        guard replyReferent != 0 else { return nil }
        return try self.readRemoteReplySCMInfo()
    }

    /// `PropsOutInfo` (MS-DCOM 2.2.22.2.9): the returned interfaces, their HRESULTs and pointers.
    mutating func readPropsOutInfo() throws -> [ActivatedInterface] {
        let count = try self.readUInt32("PropsOutInfo cIfs")
        guard count >= 1, Int(count) <= self.limits.maximumActivationEntries else {
            throw RPCWireError(
                .invalidDCOM,
                "PropsOutInfo cIfs \(count) outside 1...\(self.limits.maximumActivationEntries)"
            )
        }
        let iidsReferent = try self.readReferent("PropsOutInfo piid")
        let resultsReferent = try self.readReferent("PropsOutInfo phresults")
        let pointersReferent = try self.readReferent("PropsOutInfo ppIntfData")
        guard iidsReferent != 0, resultsReferent != 0 else {
            throw RPCWireError(.invalidDCOM, "PropsOutInfo without interface ids or results")
        }
        try self.readConformance("PropsOutInfo piid", equalTo: count)
        var iids: [DCEUUID] = []
        for index in 0..<Int(count) {
            iids.append(try self.readUUID("PropsOutInfo piid[\(index)]"))
        }
        try self.readConformance("PropsOutInfo phresults", equalTo: count)
        var results: [UInt32] = []
        for index in 0..<Int(count) {
            results.append(try self.readUInt32("PropsOutInfo phresults[\(index)]"))
        }
        var references: [ObjectReference?] = Array(repeating: nil, count: Int(count))
        if pointersReferent != 0 {
            references = try self.readInterfacePointerArray("PropsOutInfo ppIntfData", count: count)
        }
        return (0..<Int(count)).map {
            ActivatedInterface(iid: iids[$0], result: results[$0], reference: references[$0])
        }
    }

    /// A conformant array of `count` unique `MInterfacePointer*`, then the non-null pointees.
    mutating func readInterfacePointerArray(_ what: String, count: UInt32) throws -> [ObjectReference?] {
        try self.readConformance(what, equalTo: count)
        var referents: [UInt64] = []
        for index in 0..<Int(count) {
            referents.append(try self.readReferent("\(what)[\(index)]"))
        }
        var references: [ObjectReference?] = []
        for (index, referent) in referents.enumerated() {
            references.append(referent == 0 ? nil : try self.readInterfacePointer("\(what)[\(index)]"))
        }
        return references
    }
}

public import NIOCore

/// `IObjectExporter::ResolveOxid` / `ResolveOxid2` request (MS-DCOM 3.1.2.5.1.1, 3.1.2.5.1.5):
/// which OXID the client wants to reach, and by which protocol sequences.
public struct ResolveOxidRequest: Hashable, Sendable {
    public var oxid: UInt64
    public var requestedProtocolSequences: [UInt16]

    public init(oxid: UInt64, requestedProtocolSequences: [UInt16]) {
        self.oxid = oxid
        self.requestedProtocolSequences = requestedProtocolSequences
    }
}

/// `ResolveOxid` (opnum 0) and `ResolveOxid2` (opnum 4) replies (MS-DCOM 3.1.2.5.1.1,
/// 3.1.2.5.1.5): the exporter's bindings, the IPID of its IRemUnknown and, for ResolveOxid2, its
/// COM version. The OXID itself is only in the request.
public struct ResolveOxidReply: Hashable, Sendable {
    public var bindings: DualStringArray
    public var remUnknownIPID: DCEUUID
    public var authenticationHint: UInt32
    /// `nil` for `ResolveOxid`, which has no version.
    public var serverVersion: COMVersion?
    public var status: RPCStatus

    public init(
        bindings: DualStringArray,
        remUnknownIPID: DCEUUID,
        authenticationHint: UInt32,
        serverVersion: COMVersion?,
        status: RPCStatus
    ) {
        self.bindings = bindings
        self.remUnknownIPID = remUnknownIPID
        self.authenticationHint = authenticationHint
        self.serverVersion = serverVersion
        self.status = status
    }
}

/// `ServerAlive2` reply (MS-DCOM 3.1.2.5.1.6): the server's COM version and its OXID resolver
/// bindings (its host names and addresses, usually without ports, and its security services).
public struct ServerAlive2Reply: Hashable, Sendable {
    public var version: COMVersion
    public var bindings: DualStringArray
    public var status: RPCStatus

    public init(version: COMVersion, bindings: DualStringArray, status: RPCStatus) {
        self.version = version
        self.bindings = bindings
        self.status = status
    }
}

extension NDRReader {
    /// A top-level `[out] DUALSTRINGARRAY**`: the unique pointer's referent, then at once its
    /// pointee. A null pointer gives an empty array.
    mutating func readOptionalDualStringArray(_ what: String) throws -> DualStringArray {
        let referent = try self.readReferent("\(what) pointer")
        guard referent != 0 else { return DualStringArray(stringBindings: [], securityBindings: []) }
        return try self.readDualStringArray()
    }
}

// MARK: - ByteBuffer API

extension ByteBuffer {
    /// Parses a `ResolveOxid` or `ResolveOxid2` request stub (the two have the same parameters).
    public mutating func readResolveOxidRequest(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> ResolveOxidRequest {
        try self.readWholeNDRStub("ResolveOxid request", syntax: syntax, endianness: endianness, limits: limits) {
            let oxid = try $0.readUInt64("pOxid")
            let count = try $0.readUInt16("cRequestedProtseqs")
            try $0.readConformance("arRequestedProtseqs", equalTo: UInt32(count))
            var sequences: [UInt16] = []
            for _ in 0..<count {
                sequences.append(try $0.readUInt16("arRequestedProtseqs entry"))
            }
            return ResolveOxidRequest(oxid: oxid, requestedProtocolSequences: sequences)
        }
    }

    /// Parses a `ResolveOxid` (`withVersion` false) or `ResolveOxid2` (`withVersion` true) reply stub.
    public mutating func readResolveOxidReply(
        withVersion: Bool,
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> ResolveOxidReply {
        try self.readWholeNDRStub("ResolveOxid reply", syntax: syntax, endianness: endianness, limits: limits) {
            let bindings = try $0.readOptionalDualStringArray("ppdsaOxidBindings")
            let ipid = try $0.readUUID("pipidRemUnknown")
            let hint = try $0.readUInt32("pAuthnHint")
            let version = withVersion ? try $0.readCOMVersion() : nil
            let status = try $0.readUInt32("ResolveOxid status")
            return ResolveOxidReply(
                bindings: bindings,
                remUnknownIPID: ipid,
                authenticationHint: hint,
                serverVersion: version,
                status: RPCStatus(rawValue: status)
            )
        }
    }

    /// Parses a `ServerAlive2` reply stub.
    public mutating func readServerAlive2Reply(
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> ServerAlive2Reply {
        try self.readWholeNDRStub("ServerAlive2 reply", syntax: syntax, endianness: endianness, limits: limits) {
            let version = try $0.readCOMVersion()
            let bindings = try $0.readOptionalDualStringArray("ppdsaOrBindings")
            if try $0.readReferent("pReserved") != 0 {
                _ = try $0.readUInt32("*pReserved")
            }
            let status = try $0.readUInt32("ServerAlive2 status")
            return ServerAlive2Reply(version: version, bindings: bindings, status: RPCStatus(rawValue: status))
        }
    }
}

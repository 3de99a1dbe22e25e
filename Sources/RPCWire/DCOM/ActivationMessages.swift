public import NIOCore

/// A readable activation request: `IRemoteSCMActivator::RemoteCreateInstance` or
/// `RemoteGetClassObject` (MS-DCOM 3.1.2.5.2.3.2-3), or `IActivation::RemoteActivation`
/// (3.1.2.5.2.3.1).
public struct ActivationRequest: Hashable, Sendable {
    public enum Operation: Hashable, Sendable {
        case remoteCreateInstance
        case remoteGetClassObject
        case remoteActivation
    }

    public var operation: Operation
    public var orpcThis: ORPCThis
    /// The CLSID being activated.
    public var classID: DCEUUID
    /// The interfaces asked for on the new object.
    public var requestedInterfaces: [DCEUUID]

    public init(operation: Operation, orpcThis: ORPCThis, classID: DCEUUID, requestedInterfaces: [DCEUUID]) {
        self.operation = operation
        self.orpcThis = orpcThis
        self.classID = classID
        self.requestedInterfaces = requestedInterfaces
    }
}

/// A readable activation reply: the exporter of the new object (OXID, its `HOST[PORT]` bindings,
/// IPID of its IRemUnknown) and the interfaces returned (each with its IPID).
public struct ActivationReply: Hashable, Sendable {
    public var orpcThat: ORPCThat
    /// `nil` when the activation failed or the reply names no remote exporter.
    public var exporter: ObjectExporterBinding?
    public var interfaces: [ActivatedInterface]
    /// The method's HRESULT (the last field of the stub); 0 is `S_OK`.
    public var result: UInt32

    public init(orpcThat: ORPCThat, exporter: ObjectExporterBinding?, interfaces: [ActivatedInterface], result: UInt32)
    {
        self.orpcThat = orpcThat
        self.exporter = exporter
        self.interfaces = interfaces
        self.result = result
    }

    /// Every TCP port the reply announces: the exporter's bindings and each returned pointer's
    /// resolver address, without repeats.
    public var announcedPorts: [UInt16] {
        var ports = self.exporter?.bindings.tcpPorts ?? []
        for interface in self.interfaces {
            for port in interface.reference?.resolverAddress?.tcpPorts ?? [] where !ports.contains(port) {
                ports.append(port)
            }
        }
        return ports
    }
}

// MARK: - Requests

extension NDRReader {
    /// The pointee of `pActProperties`: a custom OBJREF of class `expectedClass` whose data is an
    /// activation properties blob. Returns its properties.
    mutating func readActivationBlob(_ what: String, expectedClass: DCEUUID) throws -> [ActivationProperty] {
        let reference = try self.readInterfacePointer(what)
        guard reference.kind == .custom, reference.classID == expectedClass, var data = reference.customData else {
            throw RPCWireError(
                .invalidDCOM,
                "\(what) is a \(reference.kind) OBJREF of class \(reference.classID.map { "\($0)" } ?? "none"), not \(expectedClass)"
            )
        }
        return try data.readActivationProperties(limits: self.limits)
    }

    mutating func readActivationRequest(_ operation: ActivationRequest.Operation) throws -> ActivationRequest {
        let this = try self.readORPCThis()
        if operation == .remoteActivation {
            return try self.readRemoteActivationRequest(this)
        }
        if operation == .remoteCreateInstance {
            // pUnkOuter: aggregation is not supported remotely (MS-DCOM 3.1.2.5.2.3.3: MUST be NULL),
            // but a non-null one is read rather than misparsed.
            let outer = try self.readReferent("pUnkOuter")
            if outer != 0 {
                _ = try self.readInterfacePointer("pUnkOuter")
            }
        }
        let propertiesReferent = try self.readReferent("pActProperties")
        guard propertiesReferent != 0 else {
            throw RPCWireError(.invalidDCOM, "activation request without pActProperties")
        }
        let properties = try self.readActivationBlob(
            "pActProperties",
            expectedClass: DCOMClassID.activationPropertiesIn
        )
        guard let property = properties.first(where: { $0.classID == DCOMClassID.instantiationInfo }) else {
            throw RPCWireError(.invalidDCOM, "activation properties without InstantiationInfo")
        }
        var bytes = property.bytes
        var object = try bytes.readTypeSerializedObject("InstantiationInfo", limits: self.limits)
        let info = try object.reader.readInstantiationInfo()
        return ActivationRequest(
            operation: operation,
            orpcThis: this,
            classID: info.classID,
            requestedInterfaces: info.requestedInterfaces
        )
    }

    /// `RemoteActivation` (MS-DCOM 3.1.2.5.2.3.1) after ORPCTHIS: Clsid, pwszObjectName,
    /// pObjectStorage, ClientImpLevel, Mode, Interfaces, pIIDs, cRequestedProtseqs,
    /// aRequestedProtseqs.
    private mutating func readRemoteActivationRequest(_ this: ORPCThis) throws -> ActivationRequest {
        let clsid = try self.readUUID("RemoteActivation Clsid")
        if try self.readReferent("pwszObjectName") != 0 {
            let maximum = try self.readCount("pwszObjectName max_count", limit: self.limits.maximumIdentityNameLength)
            _ = try self.readWide("pwszObjectName offset")
            let actual = try self.readCount("pwszObjectName actual_count", limit: maximum)
            for _ in 0..<actual {
                _ = try self.readUInt16("pwszObjectName character")
            }
        }
        if try self.readReferent("pObjectStorage") != 0 {
            _ = try self.readInterfacePointer("pObjectStorage")
        }
        _ = try self.readUInt32("ClientImpLevel")
        _ = try self.readUInt32("Mode")
        let count = try self.readUInt32("Interfaces")
        guard Int(count) <= self.limits.maximumActivationEntries else {
            throw RPCWireError(
                .invalidDCOM,
                "RemoteActivation Interfaces \(count) > limit \(self.limits.maximumActivationEntries)"
            )
        }
        var interfaces: [DCEUUID] = []
        if try self.readReferent("pIIDs") != 0 {
            try self.readConformance("pIIDs", equalTo: count)
            for index in 0..<Int(count) {
                interfaces.append(try self.readUUID("pIIDs[\(index)]"))
            }
        }
        let protocolCount = try self.readUInt16("cRequestedProtseqs")
        try self.readConformance("aRequestedProtseqs", equalTo: UInt32(protocolCount))
        for _ in 0..<protocolCount {
            _ = try self.readUInt16("aRequestedProtseqs entry")
        }
        return ActivationRequest(
            operation: .remoteActivation,
            orpcThis: this,
            classID: clsid,
            requestedInterfaces: interfaces
        )
    }
}

// MARK: - Replies

extension NDRReader {
    mutating func readActivationReply(_ operation: ActivationRequest.Operation) throws -> ActivationReply {
        let that = try self.readORPCThat()
        if operation == .remoteActivation {
            return try self.readRemoteActivationReply(that)
        }
        let propertiesReferent = try self.readReferent("ppActProperties")
        var exporter: ObjectExporterBinding?
        var interfaces: [ActivatedInterface] = []
        if propertiesReferent != 0 {
            let properties = try self.readActivationBlob(
                "ppActProperties",
                expectedClass: DCOMClassID.activationPropertiesOut
            )
            for property in properties {
                var bytes = property.bytes
                if property.classID == DCOMClassID.scmReplyInfo {
                    var object = try bytes.readTypeSerializedObject("ScmReplyInfo", limits: self.limits)
                    exporter = try object.reader.readSCMReplyInfo()
                } else if property.classID == DCOMClassID.propsOutInfo {
                    var object = try bytes.readTypeSerializedObject("PropsOutInfo", limits: self.limits)
                    interfaces = try object.reader.readPropsOutInfo()
                }
            }
        }
        let result = try self.readUInt32("activation HRESULT")
        return ActivationReply(orpcThat: that, exporter: exporter, interfaces: interfaces, result: result)
    }

    /// `RemoteActivation`'s out parameters after ORPCTHAT (MS-DCOM 3.1.2.5.2.3.1): pOxid,
    /// ppdsaOxidBindings, pipidRemUnknown, pAuthnHint, pServerVersion, phr, ppInterfaceData,
    /// pResults, the status.
    private mutating func readRemoteActivationReply(_ that: ORPCThat) throws -> ActivationReply {
        // Top-level parameters: each one's pointee follows it at once (C706 14.3.12.3), so the
        // bindings come before the IPID here, unlike inside REMOTEREPLY_SCM_INFO.
        let oxid = try self.readUInt64("RemoteActivation pOxid")
        let bindings = try self.readOptionalDualStringArray("ppdsaOxidBindings")
        let ipid = try self.readUUID("RemoteActivation pipidRemUnknown")
        let hint = try self.readUInt32("RemoteActivation pAuthnHint")
        let version = try self.readCOMVersion()
        let exporter = ObjectExporterBinding(
            oxid: oxid,
            bindings: bindings,
            remUnknownIPID: ipid,
            authenticationHint: hint,
            serverVersion: version
        )
        _ = try self.readUInt32("RemoteActivation phr")
        let count = try self.readCount("ppInterfaceData max_count", limit: self.limits.maximumActivationEntries)
        var referents: [UInt64] = []
        for index in 0..<count {
            referents.append(try self.readReferent("ppInterfaceData[\(index)]"))
        }
        var references: [ObjectReference?] = []
        for (index, referent) in referents.enumerated() {
            references.append(referent == 0 ? nil : try self.readInterfacePointer("ppInterfaceData[\(index)]"))
        }
        try self.readConformance("pResults", equalTo: UInt32(count))
        var interfaces: [ActivatedInterface] = []
        for index in 0..<count {
            let result = try self.readUInt32("pResults[\(index)]")
            let reference = references[index]
            interfaces.append(ActivatedInterface(iid: reference?.iid ?? .zero, result: result, reference: reference))
        }
        let status = try self.readUInt32("RemoteActivation status")
        return ActivationReply(orpcThat: that, exporter: exporter, interfaces: interfaces, result: status)
    }
}

// MARK: - ByteBuffer API

extension ByteBuffer {
    /// Parses an activation request stub; `self` is exactly the (readable, not sealed) stub.
    public mutating func readActivationRequest(
        _ operation: ActivationRequest.Operation,
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> ActivationRequest {
        try self.readWholeNDRStub("activation request", syntax: syntax, endianness: endianness, limits: limits) {
            try $0.readActivationRequest(operation)
        }
    }

    /// Parses an activation reply stub; `self` is exactly the (readable, not sealed) stub.
    public mutating func readActivationReply(
        _ operation: ActivationRequest.Operation,
        syntax: NDRSyntax,
        endianness: Endianness = .little,
        limits: WireLimits = WireLimits()
    ) throws -> ActivationReply {
        try self.readWholeNDRStub("activation reply", syntax: syntax, endianness: endianness, limits: limits) {
            try $0.readActivationReply(operation)
        }
    }
}

extension ActivationRequest.Operation {
    /// The activation operation an `(interface, opnum)` names, or `nil` for any other call.
    public init?(interface: DCEUUID, opnum: UInt16) {
        if interface == DCOMInterface.remoteSCMActivator.uuid {
            switch RemoteSCMActivatorOperation(rawValue: opnum) {
            case .remoteCreateInstance: self = .remoteCreateInstance
            case .remoteGetClassObject: self = .remoteGetClassObject
            case nil: return nil
            }
        } else if interface == DCOMInterface.activation.uuid, opnum == ActivationOperation.remoteActivation.rawValue {
            self = .remoteActivation
        } else {
            return nil
        }
    }
}

import NIOCore
import RPCPolicy
import RPCWire

/// The DCOM service control manager on the endpoint-mapper port (MS-DCOM 3.1.2.5): RPCSS serves
/// activation (`IRemoteSCMActivator`, `IActivation`) and OXID resolution (`IObjectExporter`) on
/// TCP 135 beside the endpoint mapper. A connection to the endpoint-mapper listener may bind them
/// when the policy allows; their calls are decided like any call, activation requests also by
/// their CLSID (`clsids` rules) when readable, and readable replies say which ports the client
/// will connect to next (``ConnectionEvent/dcomEndpointsAnnounced(_:)``).
///
/// Nothing here changes a byte: activation replies are signed or sealed since Microsoft's DCOM
/// hardening (KB5004442), and even a readable one would change size if its `HOST[PORT]` strings
/// were rewritten. They pass unchanged; transparent mode is what lets the follow-up connection
/// meet the policy.
extension ConnectionStateMachine {
    /// A DCOM call on the SCM forwarded to the server, until its reply.
    struct PendingDCOMCall: Hashable, Sendable {
        var interface: SyntaxID
        var opnum: UInt16
        var syntax: NDRSyntax?
        var decision: PolicyDecision
        /// The activation operation, for activator calls.
        var activation: ActivationRequest.Operation?
        /// The CLSID of a readable activation request.
        var classID: DCEUUID?
        /// The OXID a readable ResolveOxid/ResolveOxid2 request asked for.
        var oxid: UInt64?
    }

    /// DCOM calls in flight on the SCM, by call id (at most ``maximumTrackedCalls``).
    struct DCOMCalls: Hashable, Sendable {
        var pending: [UInt32: PendingDCOMCall] = [:]
    }

    /// Whether `interface` is one RPCSS serves on port 135 for DCOM.
    static func isSCMInterface(_ interface: SyntaxID) -> Bool {
        DCOMInterface.isActivator(interface.uuid) || interface.uuid == DCOMInterface.objectExporter.uuid
    }

    /// The bind decision for a DCOM SCM interface on the endpoint-mapper listener: the policy's,
    /// at any auth level (activations are signed or sealed; nothing in them is rewritten).
    func scmBindDecision(_ interface: SyntaxID) -> PolicyDecision {
        self.policy.evaluate(PolicyQuery(interface: interface, client: self.client, authLevel: self.authLevel))
    }

    // MARK: - Requests

    /// Decides a call on a DCOM SCM context. An activation request is read (once) when its stub
    /// is readable and a single fragment, so `clsids` rules can decide it; whatever the decision,
    /// it is recorded.
    mutating func decideSCMCall(
        _ raw: RawPDU,
        context: AcceptedContext,
        fields: RequestHeaderFields,
        isLast: Bool
    ) -> ClientAction {
        let syntax = NDRSyntax(transferSyntax: context.transferSyntax)
        let operation = ActivationRequest.Operation(interface: context.interface.uuid, opnum: fields.opnum)
        var activation: ActivationClass?
        var classID: DCEUUID?
        var oxid: UInt64?
        let readable = raw.securityTrailer.map { $0.authLevel < .privacy } ?? true
        let single = raw.header.flags.contains(.firstFragment) && isLast
        if let operation {
            if readable, single, let syntax, let stub = self.requestStub(raw) {
                var bytes = stub
                if let request = try? bytes.readActivationRequest(
                    operation,
                    syntax: syntax,
                    endianness: raw.header.endianness,
                    limits: self.limits
                ) {
                    activation = .known(request.classID)
                    classID = request.classID
                } else {
                    activation = .unreadable
                }
            } else {
                activation = readable ? .unreadable : .sealed
            }
        } else if context.interface.uuid == DCOMInterface.objectExporter.uuid, readable, single, let syntax,
            fields.opnum == ObjectExporterOperation.resolveOxid.rawValue
                || fields.opnum == ObjectExporterOperation.resolveOxid2.rawValue,
            let stub = self.requestStub(raw)
        {
            var bytes = stub
            oxid = try? bytes.readResolveOxidRequest(
                syntax: syntax,
                endianness: raw.header.endianness,
                limits: self.limits
            ).oxid
        }
        let (action, decision) = self.decideCall(
            raw,
            interface: context.interface,
            fields: fields,
            isLast: isLast,
            activation: activation
        )
        switch action {
        case .forward, .forwardHeld, .hold:
            if self.dcom.pending.count < Self.maximumTrackedCalls {
                self.dcom.pending[raw.header.callID] = PendingDCOMCall(
                    interface: context.interface,
                    opnum: fields.opnum,
                    syntax: syntax,
                    decision: decision,
                    activation: operation,
                    classID: classID,
                    oxid: oxid
                )
            }
        default:
            break
        }
        return action
    }

    /// The stub of a request (the one place a DCOM request is parsed beyond its header).
    private mutating func requestStub(_ raw: RawPDU) -> ByteBuffer? {
        guard let pdu = try? self.parse(raw), case .request(let body) = pdu.body else { return nil }
        return body.stub
    }

    // MARK: - Replies

    /// A response on the SCM connection to a DCOM call: forwarded unchanged; a readable,
    /// single-fragment activation or ResolveOxid reply is read for the ports it announces.
    mutating func scmResponse(_ raw: RawPDU, call: PendingDCOMCall) -> ServerAction {
        if raw.header.flags.contains(.lastFragment) { self.dcom.pending.removeValue(forKey: raw.header.callID) }
        let level = raw.securityTrailer?.authLevel ?? .none
        guard level < .privacy, raw.header.flags.contains(.firstFragment), raw.header.flags.contains(.lastFragment),
            let syntax = call.syntax,
            let pdu = try? self.parse(raw), case .response(let body) = pdu.body
        else { return .forward }
        var stub = body.stub
        let limits = self.limits
        let endianness = raw.header.endianness
        if let operation = call.activation {
            guard
                let reply = try? stub.readActivationReply(
                    operation,
                    syntax: syntax,
                    endianness: endianness,
                    limits: limits
                ), reply.result == 0
            else { return .forward }
            var bindings = reply.exporter?.bindings.stringBindings.map(\.networkAddress) ?? []
            for interface in reply.interfaces {
                for binding in interface.reference?.resolverAddress?.stringBindings ?? []
                where !bindings.contains(binding.networkAddress) {
                    bindings.append(binding.networkAddress)
                }
            }
            self.events.append(
                .dcomEndpointsAnnounced(
                    DCOMAnnouncement(
                        source: .activation,
                        interface: call.interface,
                        opnum: call.opnum,
                        oxid: reply.exporter?.oxid
                            ?? reply.interfaces.lazy.compactMap { $0.reference?.standard?.oxid }.first,
                        ports: reply.announcedPorts,
                        bindings: bindings,
                        ipids: reply.interfaces.compactMap { $0.reference?.standard?.ipid },
                        classID: call.classID,
                        authLevel: level,
                        decision: call.decision
                    )
                )
            )
        } else if call.interface.uuid == DCOMInterface.objectExporter.uuid,
            let exporterOperation = ObjectExporterOperation(rawValue: call.opnum),
            exporterOperation == .resolveOxid || exporterOperation == .resolveOxid2
        {
            guard
                let reply = try? stub.readResolveOxidReply(
                    withVersion: exporterOperation == .resolveOxid2,
                    syntax: syntax,
                    endianness: endianness,
                    limits: limits
                ), reply.status.rawValue == 0
            else { return .forward }
            self.events.append(
                .dcomEndpointsAnnounced(
                    DCOMAnnouncement(
                        source: .oxidResolution,
                        interface: call.interface,
                        opnum: call.opnum,
                        oxid: call.oxid,
                        ports: reply.bindings.tcpPorts,
                        bindings: reply.bindings.stringBindings.map(\.networkAddress),
                        authLevel: level,
                        decision: call.decision
                    )
                )
            )
        }
        return .forward
    }
}

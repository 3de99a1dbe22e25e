public import NIOCore
public import RPCPolicy
public import RPCWire

/// The protocol brain of one proxied connection: it sees every PDU from either side and decides
/// what happens to it. It does no I/O; `RPCProxyConnection` executes its actions.
///
/// What it enforces (C706 ch. 12, MS-RPCE 3.3):
/// - every presentation context of every `bind` and `alter_context` is checked against the policy
///   (bind-time feature negotiation elements are not interfaces, MS-RPCE 3.3.1.5.3); a refused
///   bind never reaches the server, the client gets a bind_ack/alter_context_resp that rejects it;
/// - a `request` on a context the server never accepted gets a fault and the connection closes;
/// - with opnum rules, a refused call gets a fault, its later fragments are dropped, and the
///   connection stays usable (a signed or sealed session is closed after the fault: see
///   `clientSentRequest`);
/// - on the endpoint-mapper listener only the endpoint mapper may be bound, `ept_map` for a denied
///   interface is answered "not registered" here, and replies are handed back for tower rewriting.
///
/// Authenticated PDUs pass through unmodified; the machine reads only cleartext header fields
/// (context id and opnum stay in the clear even when the stub is sealed).
public struct RPCConnectionStateMachine: Sendable {
    public enum Role: Hashable, Sendable {
        /// The route's endpoint-mapper listener (port 135).
        case endpointMapper
        /// A gateway-owned port forwarding to one server endpoint.
        case mapped
    }

    /// What to do with a PDU that came from the client.
    public enum ClientAction: Hashable, Sendable {
        /// Send the PDU's bytes to the server unchanged.
        case forward
        /// Send these whole PDUs (held back until a call was complete) to the server.
        case forwardHeld([RawPDU])
        /// Hold the PDU: more fragments of the call are needed before deciding.
        case hold
        /// Swallow the PDU (a later fragment of a refused call).
        case drop
        /// Answer the client with this PDU instead of forwarding.
        case respond(ByteBuffer)
        /// Answer the client with this PDU, then close the connection.
        case respondAndClose(ByteBuffer, CloseReason)
        /// Close the connection.
        case close(CloseReason)
    }

    /// What to do with a PDU that came from the server.
    public enum ServerAction: Hashable, Sendable {
        case forward
        case hold
        /// Rewrite the towers of this endpoint-mapper reply, then send it; answer "not registered"
        /// built from `request` when nothing can be advertised.
        case rewriteEndpointMapperReply(EndpointMapperReply)
        /// Send this to the client instead of what the server sent.
        case respond(ByteBuffer)
        case close(CloseReason)
    }

    /// A complete endpoint-mapper reply waiting to be rewritten.
    public struct EndpointMapperReply: Hashable, Sendable {
        public var fragments: [RawPDU]
        public var operation: EPMOperation
        public var syntax: NDRSyntax
        public var callID: UInt32
        public var contextID: UInt16
        public var maxTowers: UInt32
        public var dataRepresentation: DataRepresentation
    }

    struct AcceptedContext: Hashable, Sendable {
        var interface: SyntaxID
        var transferSyntax: SyntaxID
    }

    /// A request whose first fragment was seen and whose last was not.
    ///
    /// C706 12.6.3.1 lets a call span fragments, but fragments of different calls never interleave:
    /// Samba keeps "only one request ... in the fragmented list" and faults (`nca_s_proto_error`) on
    /// any FIRST_FRAG while one is open and on a later fragment no open call matches. The gateway
    /// enforces the same sequence itself: a fragment it cannot place is a protocol error, never
    /// forwarded, so nothing reaches the server outside a call whose first fragment was inspected.
    struct IncomingCall: Hashable, Sendable {
        var callID: UInt32
        /// The first fragment was refused (opnum rule): the rest of the call is swallowed.
        var dropped: Bool
    }

    struct PendingEPMCall: Hashable, Sendable {
        var operation: EPMOperation
        var syntax: NDRSyntax
        var contextID: UInt16
        var maxTowers: UInt32
    }

    public let role: Role
    /// The route's policy. The connection replaces it after a configuration reload, so new binds
    /// and calls on established connections follow the new rules.
    public var policy: Policy
    public let client: IPAddress
    public let limits: WireLimits

    private var acceptedContexts: [UInt16: AcceptedContext] = [:]
    /// Contexts offered in a forwarded bind/alter_context, by call id, until the server answers.
    private var offeredContexts: [UInt32: [PresentationContext]] = [:]
    /// The auth level and type of the connection's security context (from the last bind/alter).
    public private(set) var authLevel: AuthLevel = .none
    public private(set) var authType: AuthType = .none
    /// Who the client said it was in its last authentication token that named someone (set by
    /// ``noteIdentity(in:)``, RPCConnectionStateMachine+Identity.swift); audit lines carry it.
    public internal(set) var identity: AuthIdentity?
    /// Whether the server has accepted at least one presentation context.
    public private(set) var isBound = false
    /// The one fragmented request in progress (FIRST_FRAG seen, LAST_FRAG not yet), if any.
    private var incomingCall: IncomingCall?
    private var requestAssembler: FragmentAssembler
    private var responseAssembler: FragmentAssembler
    private var pendingEPMCalls: [UInt32: PendingEPMCall] = [:]
    /// Requests forwarded whose response (or fault) has not completed yet.
    private var callsInFlight: Set<UInt32> = []
    private var events: [ConnectionEvent] = []

    /// Calls in flight beyond this are not tracked individually; the connection still counts as
    /// busy (the set is not empty) until the server answers some of them.
    static let maximumTrackedCalls = 4096

    /// Whether a bind or a call is waiting for the server, or a fragmented call is half received.
    /// A draining gateway closes a connection as soon as this becomes false.
    public var hasCallsInFlight: Bool {
        !self.callsInFlight.isEmpty || !self.offeredContexts.isEmpty || self.requestAssembler.isCollecting
            || self.responseAssembler.isCollecting
    }

    public init(role: Role, policy: Policy, client: IPAddress, limits: WireLimits) {
        self.role = role
        self.policy = policy
        self.client = client
        self.limits = limits
        // Client requests on the endpoint-mapper listener are small (an ept_map is about 150
        // bytes), but a client could fragment one up to the reply cap (1 MiB by default) and make
        // every connection hold that much: they get a cap of their own.
        var requestLimits = limits
        requestLimits.maximumReassembledStubLength = min(limits.maximumReassembledStubLength, Self.maximumEndpointMapperRequestStub)
        requestLimits.maximumFragmentsPerCall = min(limits.maximumFragmentsPerCall, Self.maximumEndpointMapperRequestFragments)
        self.requestAssembler = FragmentAssembler(limits: requestLimits)
        self.responseAssembler = FragmentAssembler(limits: limits)
    }

    /// Events recorded since the last call; the caller turns them into metrics and logs.
    public mutating func takeEvents() -> [ConnectionEvent] {
        guard !self.events.isEmpty else { return [] }
        defer { self.events.removeAll(keepingCapacity: true) }
        return self.events
    }

    /// The interfaces the server accepted on this connection, in context-id order (duplicates
    /// removed).
    public var acceptedInterfaces: [SyntaxID] {
        var seen: Set<SyntaxID> = []
        return self.acceptedContexts.sorted { $0.key < $1.key }.compactMap { entry in
            seen.insert(entry.value.interface).inserted ? entry.value.interface : nil
        }
    }

    /// The interface a context id was accepted for, if any.
    public func interface(forContext contextID: UInt16) -> SyntaxID? {
        self.acceptedContexts[contextID]?.interface
    }

    // MARK: - Client to server

    public mutating func clientSent(_ raw: RawPDU) -> ClientAction {
        switch raw.header.packetType {
        case .bind, .alterContext:
            return self.clientSentBind(raw)
        case .request:
            let action = self.clientSentRequest(raw)
            if raw.header.flags.contains(.firstFragment), self.callsInFlight.count < Self.maximumTrackedCalls {
                switch action {
                case .forward, .forwardHeld, .hold: self.callsInFlight.insert(raw.header.callID)
                case .drop, .respond, .respondAndClose, .close: break
                }
            }
            return action
        case .auth3:
            self.noteIdentity(in: raw)
            return .forward
        case .coCancel, .orphaned:
            guard let incoming = self.incomingCall, incoming.callID == raw.header.callID else { return .forward }
            if raw.header.packetType == .orphaned {
                // The client abandons the call (C706 12.6.4.8); the server discards its fragments.
                self.incomingCall = nil
                if self.role == .endpointMapper { self.requestAssembler.reset() }
            }
            return incoming.dropped ? .drop : .forward
        default:
            return self.protocolError("client_sent_\(raw.header.packetType)", "a client does not send \(raw.header.packetType)")
        }
    }

    private mutating func clientSentBind(_ raw: RawPDU) -> ClientAction {
        let pdu: PDU
        do {
            pdu = try raw.parse(limits: self.limits)
        } catch {
            return self.protocolError(error)
        }
        self.noteIdentity(in: pdu.authVerifier)
        switch pdu.body {
        case .bind(let body), .alterContext(let body):
            return self.decide(pdu, contexts: body.contexts)
        default:
            return self.protocolError("bad_bind", "unexpected bind body")
        }
    }

    /// Decides a bind or alter_context: all interface contexts must be allowed, or the whole PDU is
    /// refused (a partial acceptance would mean editing the client's PDU).
    private mutating func decide(_ pdu: PDU, contexts: [PresentationContext]) -> ClientAction {
        if let verifier = pdu.authVerifier {
            self.authLevel = verifier.authLevel
            self.authType = verifier.authType
        }
        var refused = false
        for context in contexts where !context.isBindTimeFeatureNegotiation {
            let decision: PolicyDecision
            switch self.role {
            case .endpointMapper:
                // The endpoint-mapper listener exists to resolve endpoints, nothing else; and an
                // EPM reply protected at packet level or above could not be rewritten.
                let isMapper = context.abstractSyntax.uuid == SyntaxID.endpointMapper.uuid
                let permitted = isMapper && self.authLevel < .packet
                decision = PolicyDecision(action: permitted ? .allow : .deny, origin: nil)
            case .mapped:
                decision = self.policy.evaluate(
                    PolicyQuery(interface: context.abstractSyntax, client: self.client, authLevel: self.authLevel)
                )
            }
            self.events.append(
                .bindDecision(interface: context.abstractSyntax, decision: decision, authLevel: self.authLevel, authType: self.authType)
            )
            if !decision.permits { refused = true }
        }
        if refused {
            guard let rejection = PDU.bindRejection(answering: pdu), let bytes = try? rejection.serialized() else {
                return .close(.protocolError)
            }
            return .respond(bytes)
        }
        self.offeredContexts[pdu.header.callID] = contexts
        return .forward
    }

    private mutating func clientSentRequest(_ raw: RawPDU) -> ClientAction {
        let header = raw.header
        let isFirst = header.flags.contains(.firstFragment)
        let isLast = header.flags.contains(.lastFragment)
        if let incoming = self.incomingCall {
            // A later fragment of the open call, or a protocol error (see `IncomingCall`).
            guard !isFirst, header.callID == incoming.callID else {
                return self.protocolError(
                    RPCWireError.Code.fragmentSequence.description,
                    "request call_id \(header.callID)\(isFirst ? " with FIRST_FRAG" : "") while fragmented call \(incoming.callID) is unfinished"
                )
            }
            if isLast { self.incomingCall = nil }
            if incoming.dropped { return .drop }
            return self.role == .endpointMapper ? self.collectEndpointMapperRequest(raw) : .forward
        }
        guard isFirst else {
            // Without this check a fragment lacking FIRST_FRAG would reach the server before any
            // bind or context check.
            return self.protocolError(
                RPCWireError.Code.fragmentSequence.description,
                "request fragment of call_id \(header.callID) without FIRST_FRAG and no call in progress"
            )
        }
        // The fixed request header: alloc_hint u32, p_cont_id u16, opnum u16 (C706 12.6.4.9).
        let start = raw.bytes.readerIndex + WireLimits.commonHeaderLength
        guard
            let (contextID, opnum) = raw.bytes.getMultipleIntegers(
                at: start + 4,
                endianness: header.endianness,
                as: (UInt16, UInt16).self
            )
        else {
            return self.protocolError("truncated_request", "request of \(raw.bytes.readableBytes) bytes")
        }
        guard let context = self.acceptedContexts[contextID] else {
            // MS-RPCE 3.3.1.5.5: a request on a context that was never accepted is a protocol error.
            self.events.append(.unknownContext(contextID: contextID))
            let fault = PDU.fault(
                callID: header.callID,
                contextID: contextID,
                status: .invalidPresentationContextID,
                dataRepresentation: header.dataRepresentation
            )
            guard let bytes = try? fault.serialized() else { return .close(.unknownContext) }
            return .respondAndClose(bytes, .unknownContext)
        }
        if !isLast { self.incomingCall = IncomingCall(callID: header.callID, dropped: false) }
        switch self.role {
        case .endpointMapper:
            return self.collectEndpointMapperRequest(raw)
        case .mapped:
            guard self.policy.inspectsOperations else { return .forward }
            let requestAuth = self.requestAuth(raw)
            let requestLevel = requestAuth?.level ?? self.authLevel
            let requestType = requestAuth?.type ?? self.authType
            let decision = self.policy.evaluate(
                PolicyQuery(interface: context.interface, opnum: opnum, client: self.client, authLevel: requestLevel)
            )
            switch decision.action {
            case .allow:
                return .forward
            case .audit:
                self.events.append(
                    .callAudited(interface: context.interface, opnum: opnum, decision: decision, authLevel: requestLevel, authType: requestType)
                )
                return .forward
            case .deny:
                self.events.append(
                    .callDenied(interface: context.interface, opnum: opnum, decision: decision, authLevel: requestLevel, authType: requestType)
                )
                if !isLast { self.incomingCall?.dropped = true }
                let fault = PDU.fault(
                    callID: header.callID,
                    contextID: contextID,
                    status: .accessDenied,
                    dataRepresentation: header.dataRepresentation
                )
                guard let bytes = try? fault.serialized() else { return .close(.protocolError) }
                // With per-message protection (NTLM or Kerberos signing/sealing: level call and
                // above) the client has already advanced its sequence number and cipher state for
                // this call; the server, never seeing it, would reject every later call
                // (nca_s_fault_sec_pkg_error). Without the session key the gateway cannot
                // resynchronise them, so it ends the connection right after the fault: the
                // client fails at once and cleanly, and reconnects for its next call.
                if requestLevel >= .call, self.authType != .none {
                    return .respondAndClose(bytes, .callDeniedOnProtectedSession)
                }
                return .respond(bytes)
            }
        }
    }

    /// The auth level in a request's own `sec_trailer` (C706 13.2.6.1), if it carries one.
    private func requestAuthLevel(_ raw: RawPDU) -> AuthLevel? {
        self.requestAuth(raw)?.level
    }

    /// The auth type and level in a PDU's own `sec_trailer` (C706 13.2.6.1), if it carries one.
    private func requestAuth(_ raw: RawPDU) -> (type: AuthType, level: AuthLevel)? {
        let authLength = Int(raw.header.authLength)
        guard authLength > 0 else { return nil }
        let offset = raw.bytes.readerIndex + raw.bytes.readableBytes - authLength - WireLimits.securityTrailerLength
        guard let (type, level) = raw.bytes.getMultipleIntegers(at: offset, as: (UInt8, UInt8).self) else { return nil }
        return (AuthType(rawValue: type), AuthLevel(rawValue: level))
    }

    // MARK: - Endpoint mapper requests

    private mutating func collectEndpointMapperRequest(_ raw: RawPDU) -> ClientAction {
        let fragments: [RawPDU]
        do {
            guard let complete = try self.requestAssembler.append(raw) else { return .hold }
            fragments = complete
        } catch {
            return self.protocolError(error)
        }
        // Every endpoint-mapper request must be understood: its reply is only forwarded when it
        // answers a call recorded in `pendingEPMCalls` (anything else could carry real endpoints).
        guard let first = fragments.first, let firstPDU = try? first.parse(limits: self.limits),
            case .request(let request) = firstPDU.body,
            let context = self.acceptedContexts[request.contextID],
            let syntax = NDRSyntax(transferSyntax: context.transferSyntax)
        else {
            return self.protocolError("bad_epm_request", "endpoint-mapper request that cannot be inspected")
        }
        let callID = first.header.callID
        let passThrough: ClientAction = fragments.count == 1 ? .forward : .forwardHeld(fragments)
        // Only the read-only queries reach the server. ept_insert/ept_delete must never come from
        // the network, and ept_map_auth (7, 8; Microsoft-only) returns towers this gateway does
        // not rewrite, so those would leak real endpoints.
        guard let operation = EPMOperation(rawValue: request.opnum), Self.forwardedEndpointMapperOperations.contains(operation)
        else {
            self.events.append(.protocolError(reason: "epm_operation_refused", detail: "endpoint-mapper opnum \(request.opnum)"))
            let fault = PDU.fault(
                callID: callID,
                contextID: request.contextID,
                status: .operationRangeError,
                dataRepresentation: first.header.dataRepresentation
            )
            guard let bytes = try? fault.serialized() else { return .close(.protocolError) }
            return .respond(bytes)
        }
        switch operation {
        case .map:
            var stub = ByteBuffer()
            for fragment in fragments {
                guard let parsed = try? fragment.parse(limits: self.limits), case .request(var body) = parsed.body else {
                    return self.protocolError("bad_epm_request", "ept_map fragment does not parse")
                }
                stub.writeBuffer(&body.stub)
            }
            let mapRequest: EPMMapRequest
            do {
                mapRequest = try stub.readEPMMapRequest(syntax: syntax, endianness: first.header.endianness, limits: self.limits)
            } catch {
                return self.protocolError(error)
            }
            if let interface = mapRequest.tower?.interface, !self.mayLookUp(interface) {
                self.events.append(.endpointLookupDenied(interface: interface))
                return self.notRegistered(callID: callID, contextID: request.contextID, maxTowers: mapRequest.maxTowers, syntax: syntax, dataRepresentation: first.header.dataRepresentation)
            }
            self.pendingEPMCalls[callID] = PendingEPMCall(operation: .map, syntax: syntax, contextID: request.contextID, maxTowers: mapRequest.maxTowers)
        case .lookup, .lookupHandleFree:
            self.pendingEPMCalls[callID] = PendingEPMCall(operation: operation, syntax: syntax, contextID: request.contextID, maxTowers: 0)
        default:
            break
        }
        return passThrough
    }

    /// Largest endpoint-mapper request stub reassembled from a client (all fragments of one call).
    /// The largest real request, an ept_map with one tower, is under 200 bytes.
    public static let maximumEndpointMapperRequestStub = 16 * 1024
    /// Most fragments of one endpoint-mapper request from a client.
    public static let maximumEndpointMapperRequestFragments = 16

    /// Endpoint-mapper operations a client may ask through the gateway (C706 App. O).
    static let forwardedEndpointMapperOperations: Set<EPMOperation> = [.lookup, .map, .lookupHandleFree]

    /// Whether a client could ever be allowed to bind `interface` (at the best auth level), so its
    /// endpoint may be revealed.
    public func mayLookUp(_ interface: SyntaxID) -> Bool {
        self.lookUpDecision(interface).permits
    }

    /// The decision behind ``mayLookUp(_:)``: the policy's answer for a bind at `privacy` level.
    /// The endpoint mapper itself is always allowed (with no rule).
    public func lookUpDecision(_ interface: SyntaxID) -> PolicyDecision {
        if interface.uuid == SyntaxID.endpointMapper.uuid { return PolicyDecision(action: .allow, origin: nil) }
        return self.policy.evaluate(PolicyQuery(interface: interface, client: self.client, authLevel: .privacy))
    }

    private func notRegistered(
        callID: UInt32,
        contextID: UInt16,
        maxTowers: UInt32,
        syntax: NDRSyntax,
        dataRepresentation: DataRepresentation
    ) -> ClientAction {
        guard let bytes = Self.notRegisteredResponse(callID: callID, contextID: contextID, maxTowers: maxTowers, syntax: syntax, dataRepresentation: dataRepresentation)
        else { return .close(.protocolError) }
        return .respond(bytes)
    }

    /// An `ept_map` response with no towers and status `ept_s_not_registered`.
    public static func notRegisteredResponse(
        callID: UInt32,
        contextID: UInt16,
        maxTowers: UInt32,
        syntax: NDRSyntax,
        dataRepresentation: DataRepresentation
    ) -> ByteBuffer? {
        var stub = ByteBuffer()
        stub.writeEPMMapResponse(.notRegistered(maxTowers: maxTowers), syntax: syntax, endianness: dataRepresentation.endianness)
        let response = PDU(
            header: PDUHeader(packetType: .response, dataRepresentation: dataRepresentation, callID: callID),
            body: .response(ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: contextID, stub: stub))
        )
        return try? response.serialized()
    }

    // MARK: - Server to client

    public mutating func serverSent(_ raw: RawPDU) -> ServerAction {
        switch raw.header.packetType {
        case .bindAck, .alterContextResponse:
            return self.serverAcknowledged(raw)
        case .bindNak:
            self.offeredContexts.removeValue(forKey: raw.header.callID)
            return .forward
        case .response:
            if raw.header.flags.contains(.lastFragment) { self.callsInFlight.remove(raw.header.callID) }
            guard self.role == .endpointMapper else { return .forward }
            guard let pending = self.pendingEPMCalls[raw.header.callID] else {
                // An endpoint-mapper response to a call this connection never forwarded (or one
                // already answered): passing it on would hand the client unrewritten endpoints.
                self.events.append(
                    .protocolError(reason: "unsolicited_response", detail: "endpoint-mapper response to call_id \(raw.header.callID), not asked")
                )
                return .close(.protocolError)
            }
            guard pending.operation != .lookupHandleFree else {
                // No towers in ept_lookup_handle_free's answer: forwarded as is.
                if raw.header.flags.contains(.lastFragment) { self.pendingEPMCalls.removeValue(forKey: raw.header.callID) }
                return .forward
            }
            return self.collectEndpointMapperReply(raw, pending)
        case .fault:
            self.callsInFlight.remove(raw.header.callID)
            self.pendingEPMCalls.removeValue(forKey: raw.header.callID)
            if self.responseAssembler.callID == raw.header.callID { self.responseAssembler.reset() }
            return .forward
        case .shutdown:
            return .forward
        default:
            self.events.append(.protocolError(reason: "server_sent_\(raw.header.packetType)", detail: "a server does not send \(raw.header.packetType)"))
            return .close(.protocolError)
        }
    }

    private mutating func serverAcknowledged(_ raw: RawPDU) -> ServerAction {
        let offered = self.offeredContexts.removeValue(forKey: raw.header.callID) ?? []
        let ack: BindAckPDU
        do {
            switch try raw.parse(limits: self.limits).body {
            case .bindAck(let body), .alterContextResponse(let body): ack = body
            default: return .close(.protocolError)
            }
        } catch {
            self.events.append(.protocolError(reason: "\((error as? RPCWireError)?.code.description ?? "bad_bind_ack")", detail: "\(error)"))
            return .close(.protocolError)
        }
        // Results are positional: result i answers context element i (C706 12.6.4.4).
        for (context, result) in zip(offered, ack.results) where result.result == .acceptance {
            self.acceptedContexts[context.contextID] = AcceptedContext(interface: context.abstractSyntax, transferSyntax: result.transferSyntax)
            self.isBound = true
        }
        return .forward
    }

    private mutating func collectEndpointMapperReply(_ raw: RawPDU, _ pending: PendingEPMCall) -> ServerAction {
        let fragments: [RawPDU]
        do {
            guard let complete = try self.responseAssembler.append(raw) else { return .hold }
            fragments = complete
        } catch {
            self.events.append(.protocolError(reason: (error as? RPCWireError)?.code.description ?? "bad_epm_reply", detail: "\(error)"))
            return .close(.protocolError)
        }
        self.pendingEPMCalls.removeValue(forKey: raw.header.callID)
        // A reply protected at packet level or above cannot be changed without breaking its
        // verifier; at privacy it is encrypted. Fail closed rather than leak real ports.
        if fragments.contains(where: { $0.header.authLength > 0 && (self.requestAuthLevel($0) ?? .none) >= .packet }) {
            return .close(.authenticatedEndpointMapper)
        }
        return .rewriteEndpointMapperReply(
            EndpointMapperReply(
                fragments: fragments,
                operation: pending.operation,
                syntax: pending.syntax,
                callID: raw.header.callID,
                contextID: pending.contextID,
                maxTowers: pending.maxTowers,
                dataRepresentation: raw.header.dataRepresentation
            )
        )
    }

    // MARK: - Errors

    private mutating func protocolError(_ error: any Error) -> ClientAction {
        let reason = (error as? RPCWireError)?.code.description ?? "malformed"
        return self.protocolError(reason, "\(error)")
    }

    private mutating func protocolError(_ reason: String, _ detail: String) -> ClientAction {
        self.events.append(.protocolError(reason: reason, detail: detail))
        return .close(.protocolError)
    }
}

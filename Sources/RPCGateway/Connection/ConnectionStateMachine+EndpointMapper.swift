import NIOCore
import RPCPolicy
public import RPCWire

/// The endpoint-mapper role: what a connection to the route's endpoint-mapper listener may do, and
/// how its replies are handed back for tower rewriting. The next role (say, a DCOM object
/// resolver) is a sibling of this file.
extension ConnectionStateMachine {
    /// A complete endpoint-mapper reply waiting to be rewritten.
    public struct EndpointMapperReply: Hashable, Sendable {
        public var fragments: [RawPDU]
        public var operation: EPMOperation
        public var syntax: NDRSyntax
        public var callID: UInt32
        public var contextID: UInt16
        public var maxTowers: UInt32
        public var dataRepresentation: DataRepresentation
        /// The highest auth level among the fragments' verifiers (`.none` without one). At
        /// `packet` or above the reply is forwarded byte for byte (the runtime may still read the
        /// towers below `privacy`, never change them).
        public var authLevel: AuthLevel = .none

        /// Whether the reply carries an auth verifier the gateway must not break.
        public var isProtected: Bool { self.authLevel >= .packet }
    }

    /// What the endpoint-mapper role does with a lookup protected at packet level or above.
    ///
    /// A signed reply cannot be rewritten by anyone without the session key, and a sealed one
    /// cannot even be read. So such a lookup only works where the port it names is one the
    /// client's next connection reaches through this gateway anyway: a preserve mapping (gateway
    /// port = server port) or a transparent route with `server_ports_listen`.
    public enum ProtectedEndpointMapper: Hashable, Sendable {
        /// Refuse the bind (closed with `authenticated_epm`): the pool would be bypassed.
        case refuse
        /// Allow it and forward the replies byte for byte. A signed `ept_map` for an interface
        /// the policy denies is still readable: it is refused with a fault and the connection
        /// closed (a signed "not registered" cannot be forged). A sealed one is unreadable and
        /// passes; the client learns a port, but a bind to the denied interface is refused there.
        case passThrough
    }

    /// An endpoint-mapper call forwarded to the server, until its reply is complete.
    struct PendingEPMCall: Hashable, Sendable {
        var operation: EPMOperation
        var syntax: NDRSyntax
        var contextID: UInt16
        var maxTowers: UInt32
    }

    /// The calls and reassembly of an endpoint-mapper connection.
    struct EndpointMapperCalls: Sendable {
        var requestAssembler: FragmentAssembler
        var responseAssembler: FragmentAssembler
        var pending: [UInt32: PendingEPMCall] = [:]

        init(limits: WireLimits) {
            // Client requests on the endpoint-mapper listener are small (an ept_map is about 150
            // bytes), but a client could fragment one up to the reply cap (1 MiB by default) and
            // make every connection hold that much: they get a cap of their own.
            var requestLimits = limits
            requestLimits.maximumReassembledStubLength = min(
                limits.maximumReassembledStubLength,
                ConnectionStateMachine.maximumEndpointMapperRequestStub
            )
            requestLimits.maximumFragmentsPerCall = min(
                limits.maximumFragmentsPerCall,
                ConnectionStateMachine.maximumEndpointMapperRequestFragments
            )
            self.requestAssembler = FragmentAssembler(limits: requestLimits)
            self.responseAssembler = FragmentAssembler(limits: limits)
        }

        var isCollecting: Bool { self.requestAssembler.isCollecting || self.responseAssembler.isCollecting }

        mutating func requestAbandoned() {
            self.requestAssembler.reset()
        }

        mutating func callFaulted(_ callID: UInt32) {
            self.pending.removeValue(forKey: callID)
            if self.responseAssembler.callID == callID { self.responseAssembler.reset() }
        }
    }

    /// Largest endpoint-mapper request stub reassembled from a client (all fragments of one call).
    /// The largest real request, an ept_map with one tower, is under 200 bytes.
    public static let maximumEndpointMapperRequestStub = 16 * 1024
    /// Most fragments of one endpoint-mapper request from a client.
    public static let maximumEndpointMapperRequestFragments = 16

    /// Endpoint-mapper operations a client may ask through the gateway (C706 App. O).
    static let forwardedEndpointMapperOperations: Set<EPMOperation> = [.lookup, .map, .lookupHandleFree]

    /// The endpoint-mapper listener exists to resolve endpoints, nothing else; and an EPM reply
    /// protected at packet level or above can only be passed where the route allows it
    /// (``ProtectedEndpointMapper``).
    func endpointMapperBindDecision(_ interface: SyntaxID) -> PolicyDecision {
        let isMapper = interface.uuid == SyntaxID.endpointMapper.uuid
        let permitted = isMapper && !self.refusesProtectedLookup(interface)
        return PolicyDecision(action: permitted ? .allow : .deny, origin: nil)
    }

    /// Whether a bind to the endpoint mapper is refused only because it is protected at packet
    /// level or above and the route cannot pass its replies.
    func refusesProtectedLookup(_ interface: SyntaxID) -> Bool {
        interface.uuid == SyntaxID.endpointMapper.uuid && self.authLevel >= .packet
            && self.protectedEndpointMapper == .refuse
    }

    // MARK: - Requests

    mutating func collectEndpointMapperRequest(_ raw: RawPDU) -> ClientAction {
        guard var calls = self.endpointMapper else {
            return self.protocolError("bad_epm_request", "no endpoint-mapper role")
        }
        let fragments: [RawPDU]
        do {
            guard let complete = try calls.requestAssembler.append(raw) else {
                self.endpointMapper = calls
                return .hold
            }
            fragments = complete
        } catch {
            self.endpointMapper = calls
            return self.protocolError(error)
        }
        self.endpointMapper = calls
        // Every endpoint-mapper request must be understood: its reply is only forwarded when it
        // answers a call recorded in `pending` (anything else could carry real endpoints). Each
        // fragment is parsed once, here.
        var requests: [RequestPDU] = []
        requests.reserveCapacity(fragments.count)
        for fragment in fragments {
            guard let parsed = try? self.parse(fragment), case .request(let body) = parsed.body else {
                return self.protocolError("bad_epm_request", "endpoint-mapper request that cannot be inspected")
            }
            requests.append(body)
        }
        guard let first = fragments.first, let request = requests.first,
            let context = self.session.acceptedContexts[request.contextID],
            let syntax = NDRSyntax(transferSyntax: context.transferSyntax)
        else {
            return self.protocolError("bad_epm_request", "endpoint-mapper request that cannot be inspected")
        }
        let callID = first.header.callID
        let passThrough: ClientAction = fragments.count == 1 ? .forward : .forwardHeld(fragments)
        // Only the read-only queries reach the server. ept_insert/ept_delete must never come from
        // the network, and ept_map_auth (7, 8; Microsoft-only) returns towers this gateway does
        // not rewrite, so those would leak real endpoints.
        guard let operation = EPMOperation(rawValue: request.opnum),
            Self.forwardedEndpointMapperOperations.contains(operation)
        else {
            self.events.append(
                .protocolError(reason: "epm_operation_refused", detail: "endpoint-mapper opnum \(request.opnum)")
            )
            let fault = PDU.fault(
                callID: callID,
                contextID: request.contextID,
                status: .operationRangeError,
                dataRepresentation: first.header.dataRepresentation
            )
            guard let bytes = try? fault.serialized() else { return .close(.protocolError) }
            return .respond(bytes)
        }
        var maxTowers: UInt32 = 0
        // A sealed request's stub is encrypted: only its header (opnum, context) is readable.
        let requestLevel = first.securityTrailer?.authLevel ?? .none
        if operation == .map, requestLevel < .privacy {
            var stub = ByteBuffer()
            for var body in requests { stub.writeBuffer(&body.stub) }
            let mapRequest: EPMMapRequest
            do {
                mapRequest = try stub.readEPMMapRequest(
                    syntax: syntax,
                    endianness: first.header.endianness,
                    limits: self.limits
                )
            } catch {
                return self.protocolError(error)
            }
            if let interface = mapRequest.tower?.interface, !self.mayLookUp(interface) {
                if requestLevel >= .packet {
                    // Signed: readable, but a "not registered" answer would need the session
                    // key to sign. Refuse the call, and close: the client's and server's
                    // sequence numbers no longer agree once a signed call is swallowed.
                    self.events.append(.protectedEndpointLookupDenied(interface: interface))
                    let fault = PDU.fault(
                        callID: callID,
                        contextID: request.contextID,
                        status: .accessDenied,
                        dataRepresentation: first.header.dataRepresentation
                    )
                    guard let bytes = try? fault.serialized() else { return .close(.protocolError) }
                    return .respondAndClose(bytes, .callDeniedOnProtectedSession)
                }
                self.events.append(.endpointLookupDenied(interface: interface))
                guard
                    let bytes = EPMMapResponse.notRegisteredPDU(
                        callID: callID,
                        contextID: request.contextID,
                        maxTowers: mapRequest.maxTowers,
                        syntax: syntax,
                        dataRepresentation: first.header.dataRepresentation
                    )
                else { return .close(.protocolError) }
                return .respond(bytes)
            }
            maxTowers = mapRequest.maxTowers
        }
        self.endpointMapper?.pending[callID] = PendingEPMCall(
            operation: operation,
            syntax: syntax,
            contextID: request.contextID,
            maxTowers: maxTowers
        )
        return passThrough
    }

    // MARK: - Replies

    mutating func endpointMapperResponse(_ raw: RawPDU) -> ServerAction {
        guard var calls = self.endpointMapper, let pending = calls.pending[raw.header.callID] else {
            // An endpoint-mapper response to a call this connection never forwarded (or one
            // already answered): passing it on would hand the client unrewritten endpoints.
            self.events.append(
                .protocolError(
                    reason: "unsolicited_response",
                    detail: "endpoint-mapper response to call_id \(raw.header.callID), not asked"
                )
            )
            return .close(.protocolError)
        }
        guard pending.operation != .lookupHandleFree else {
            // No towers in ept_lookup_handle_free's answer: forwarded as is.
            if raw.header.flags.contains(.lastFragment) {
                self.endpointMapper?.pending.removeValue(forKey: raw.header.callID)
            }
            return .forward
        }
        let fragments: [RawPDU]
        do {
            guard let complete = try calls.responseAssembler.append(raw) else {
                self.endpointMapper = calls
                return .hold
            }
            fragments = complete
        } catch {
            self.endpointMapper = calls
            self.events.append(
                .protocolError(
                    reason: (error as? RPCWireError)?.code.description ?? "bad_epm_reply",
                    detail: "\(error)"
                )
            )
            return .close(.protocolError)
        }
        calls.pending.removeValue(forKey: raw.header.callID)
        self.endpointMapper = calls
        // A reply protected at packet level or above cannot be changed without breaking its
        // verifier; at privacy it is encrypted. Unless the route passes it (its ports are served
        // as they are), fail closed rather than leak real ports.
        let authLevel = fragments.map { $0.securityTrailer?.authLevel ?? .none }.max() ?? .none
        if authLevel >= .packet, self.protectedEndpointMapper == .refuse {
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
                dataRepresentation: raw.header.dataRepresentation,
                authLevel: authLevel
            )
        )
    }
}

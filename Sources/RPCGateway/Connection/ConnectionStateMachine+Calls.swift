import NIOCore
import RPCPolicy
public import RPCWire

/// Calls on a spliced connection: requests decided by interface and opnum (fragments kept in
/// sequence), and the server's answers (acknowledged contexts, responses, faults).
extension ConnectionStateMachine {
    mutating func clientSentRequest(_ raw: RawPDU) -> ClientAction {
        let header = raw.header
        let isFirst = header.flags.contains(.firstFragment)
        let isLast = header.flags.contains(.lastFragment)
        if let incoming = self.session.incomingCall {
            // A later fragment of the open call, or a protocol error (see `IncomingCall`).
            guard !isFirst, header.callID == incoming.callID else {
                return self.protocolError(
                    RPCWireError.Code.fragmentSequence.description,
                    "request call_id \(header.callID)\(isFirst ? " with FIRST_FRAG" : "") while fragmented call \(incoming.callID) is unfinished"
                )
            }
            if isLast { self.session.incomingCall = nil }
            if incoming.dropped { return .drop }
            return self.role == .endpointMapper && !incoming.isSCMCall
                ? self.collectEndpointMapperRequest(raw) : .forward
        }
        guard isFirst else {
            // Without this check a fragment lacking FIRST_FRAG would reach the server before any
            // bind or context check.
            return self.protocolError(
                RPCWireError.Code.fragmentSequence.description,
                "request fragment of call_id \(header.callID) without FIRST_FRAG and no call in progress"
            )
        }
        guard let fields = raw.requestHeader else {
            return self.protocolError("truncated_request", "request of \(raw.bytes.readableBytes) bytes")
        }
        guard let context = self.session.acceptedContexts[fields.contextID] else {
            // MS-RPCE 3.3.1.5.5: a request on a context that was never accepted is a protocol error.
            self.events.append(.unknownContext(contextID: fields.contextID))
            let fault = PDU.fault(
                callID: header.callID,
                contextID: fields.contextID,
                status: .invalidPresentationContextID,
                dataRepresentation: header.dataRepresentation
            )
            guard let bytes = try? fault.serialized() else { return .close(.unknownContext) }
            return .respondAndClose(bytes, .unknownContext)
        }
        let isSCMCall = self.role == .endpointMapper && Self.isSCMInterface(context.interface)
        if !isLast {
            self.session.incomingCall = IncomingCall(callID: header.callID, dropped: false, isSCMCall: isSCMCall)
        }
        switch self.role {
        case .endpointMapper:
            if isSCMCall {
                return self.decideSCMCall(raw, context: context, fields: fields, isLast: isLast)
            }
            return self.collectEndpointMapperRequest(raw)
        case .mapped:
            guard self.policy.inspectsOperations else { return .forward }
            return self.decideCall(raw, interface: context.interface, fields: fields, isLast: isLast).action
        }
    }

    /// Decides a call by its interface and opnum (and, for a DCOM activation request, the class it
    /// creates). An activation is always recorded; other calls when denied or audited.
    mutating func decideCall(
        _ raw: RawPDU,
        interface: SyntaxID,
        fields: RequestHeaderFields,
        isLast: Bool,
        activation: ActivationClass? = nil
    ) -> (action: ClientAction, decision: PolicyDecision) {
        let header = raw.header
        let requestAuth = raw.securityTrailer
        let requestLevel = requestAuth?.authLevel ?? self.authLevel
        let requestType = requestAuth?.authType ?? self.authType
        let decision = self.policy.evaluate(
            PolicyQuery(
                interface: interface,
                opnum: fields.opnum,
                client: self.client,
                authLevel: requestLevel,
                activation: activation
            )
        )
        if let activation {
            self.events.append(
                .activation(
                    interface: interface,
                    opnum: fields.opnum,
                    activation: activation,
                    decision: decision,
                    authLevel: requestLevel,
                    authType: requestType
                )
            )
        }
        switch decision.action {
        case .allow:
            return (.forward, decision)
        case .audit:
            if activation == nil {
                self.events.append(
                    .callAudited(
                        interface: interface,
                        opnum: fields.opnum,
                        decision: decision,
                        authLevel: requestLevel,
                        authType: requestType,
                        objectUUID: raw.requestObjectUUID
                    )
                )
            }
            return (.forward, decision)
        case .deny:
            if activation == nil {
                self.events.append(
                    .callDenied(
                        interface: interface,
                        opnum: fields.opnum,
                        decision: decision,
                        authLevel: requestLevel,
                        authType: requestType,
                        objectUUID: raw.requestObjectUUID
                    )
                )
            }
            if !isLast { self.session.incomingCall?.dropped = true }
            let fault = PDU.fault(
                callID: header.callID,
                contextID: fields.contextID,
                status: .accessDenied,
                dataRepresentation: header.dataRepresentation
            )
            guard let bytes = try? fault.serialized() else { return (.close(.protocolError), decision) }
            // With per-message protection (NTLM or Kerberos signing/sealing: level call and
            // above) the client has already advanced its sequence number and cipher state for
            // this call; the server, never seeing it, would reject every later call
            // (nca_s_fault_sec_pkg_error). Without the session key the gateway cannot
            // resynchronise them, so it ends the connection right after the fault: the
            // client fails at once and cleanly, and reconnects for its next call.
            if requestLevel >= .call, self.authType != .none {
                return (.respondAndClose(bytes, .callDeniedOnProtectedSession), decision)
            }
            return (.respond(bytes), decision)
        }
    }

    // MARK: - Server to client

    public mutating func serverSent(_ raw: RawPDU) -> ServerAction {
        switch raw.header.packetType {
        case .bindAck, .alterContextResponse:
            return self.serverAcknowledged(raw)
        case .bindNak:
            self.session.offeredContexts.removeValue(forKey: raw.header.callID)
            return .forward
        case .response:
            if raw.header.flags.contains(.lastFragment) { self.session.callsInFlight.remove(raw.header.callID) }
            guard self.role == .endpointMapper else { return .forward }
            if let call = self.dcom.pending[raw.header.callID] { return self.scmResponse(raw, call: call) }
            return self.endpointMapperResponse(raw)
        case .fault:
            self.session.callsInFlight.remove(raw.header.callID)
            self.dcom.pending.removeValue(forKey: raw.header.callID)
            self.endpointMapper?.callFaulted(raw.header.callID)
            return .forward
        case .shutdown:
            return .forward
        default:
            self.events.append(
                .protocolError(
                    reason: "server_sent_\(raw.header.packetType)",
                    detail: "a server does not send \(raw.header.packetType)"
                )
            )
            return .close(.protocolError)
        }
    }

    private mutating func serverAcknowledged(_ raw: RawPDU) -> ServerAction {
        let offered = self.session.offeredContexts.removeValue(forKey: raw.header.callID) ?? []
        // An idle bound connection keeps no storage for binds it no longer waits for.
        if self.session.offeredContexts.isEmpty { self.session.offeredContexts = [:] }
        let ack: BindAckPDU
        let pdu: PDU
        do {
            pdu = try self.parse(raw)
            switch pdu.body {
            case .bindAck(let body), .alterContextResponse(let body): ack = body
            default: return .close(.protocolError)
            }
        } catch {
            self.events.append(
                .protocolError(
                    reason: "\((error as? RPCWireError)?.code.description ?? "bad_bind_ack")",
                    detail: "\(error)"
                )
            )
            return .close(.protocolError)
        }
        // Results are positional: result i answers context element i (C706 12.6.4.4).
        for (context, result) in zip(offered, ack.results) where result.result == .acceptance {
            self.session.acceptedContexts.set(
                AcceptedContext(interface: context.abstractSyntax, transferSyntax: result.transferSyntax),
                for: context.contextID
            )
            self.isBound = true
        }
        return self.secondaryAddressRewritten(pdu)
    }

    /// The server's acknowledgement with its secondary address naming ``gatewayPort``: `.respond`
    /// with the re-framed PDU, or `.forward` when there is nothing to change. One that carries an
    /// auth verifier is never touched (counted instead).
    private mutating func secondaryAddressRewritten(_ pdu: PDU) -> ServerAction {
        guard let port = self.gatewayPort else { return .forward }
        switch pdu.replacingSecondaryAddress(port: port) {
        case .unchanged:
            return .forward
        case .authenticated(let secondaryAddress):
            self.events.append(.secondaryAddressKept(serverPort: secondaryAddress))
            return .forward
        case .rewritten(let rewritten):
            // Longer than frag_length allows: the server's own bytes go through.
            guard let bytes = try? rewritten.serialized() else { return .forward }
            return .respond(bytes)
        }
    }
}

import RPCPolicy
public import RPCWire

/// Routing a connection by its first bind, and keeping a bind-routed connection on its endpoint.
///
/// Used where the gateway cannot know the server endpoint from the port the client connected to:
/// the one port of a single-port route, a mapped port this instance did not hand out (another
/// replica did, or this one restarted), and transparent connections whose gateway port is not
/// mapped to their original destination. The first PDU must be a `bind`; its first interface
/// context (bind-time feature negotiation elements are not interfaces) names the interface the
/// runtime resolves at the server's endpoint mapper. The bind is decided by the policy before
/// that: a refused bind is answered here, and its interface never reaches the server.
public struct FirstBindRouting: Hashable, Sendable {
    /// The endpoint mapper that says which port of its server serves the bind's interface.
    public var mapper: TCPEndpoint
    /// This port is also the route's endpoint-mapper port (single-port mode with `port` equal to
    /// `epm_port`): a bind to the endpoint mapper makes this an endpoint-mapper connection.
    public var servesEndpointMapper: Bool
    /// The server this gateway port was handed out for (mapped mode). Replicas share no state,
    /// so another instance may have handed the port out for another endpoint: the bind's
    /// interface is still resolved, and this server is used unless the endpoint mapper places
    /// the interface on another port, or when the first PDU is not a bind.
    public var preferred: TCPEndpoint?
    /// The server this connection goes to for certain (a preserve route's gateway port `P` is
    /// the server's port `P`; a transparent connection to a server's dynamic port names it): the
    /// first bind is decided, then the connection goes there without asking the endpoint
    /// mapper, so nothing reaches the server before the policy allowed the bind.
    public var server: TCPEndpoint?

    public init(
        mapper: TCPEndpoint,
        servesEndpointMapper: Bool = false,
        preferred: TCPEndpoint? = nil,
        server: TCPEndpoint? = nil
    ) {
        self.mapper = mapper
        self.servesEndpointMapper = servesEndpointMapper
        self.preferred = preferred
        self.server = server
    }
}

extension ConnectionStateMachine {
    /// What the endpoint mapper said about the first bind's interface.
    public enum Resolution: Hashable, Sendable {
        case port(UInt16)
        case notRegistered
        case unreachable(String)
    }

    /// Where the connection goes, for logs and audit: its server once chosen, else the endpoint
    /// mapper that will choose it.
    public var destination: TCPEndpoint? {
        if let server = self.server { return server }
        switch self.state {
        case .awaitingFirstBind(let routing), .resolvingFirstBind(let routing, _): return routing.mapper
        case .connecting, .spliced, .checkingAlterContext: return self.routedBy
        }
    }

    mutating func routeFirstPDU(_ raw: RawPDU, _ routing: FirstBindRouting) -> ClientAction {
        guard raw.header.packetType == .bind else {
            return self.notABind(raw, routing, "first PDU is \(raw.header.packetType), not bind")
        }
        let pdu: PDU
        do {
            pdu = try self.parse(raw)
        } catch {
            return self.notABind(raw, routing, "malformed bind")
        }
        guard case .bind(let bind) = pdu.body,
            let interface = bind.contexts.first(where: { !$0.isBindTimeFeatureNegotiation })?.abstractSyntax
        else {
            return self.notABind(raw, routing, "bind offers no interface")
        }
        if interface.uuid == SyntaxID.endpointMapper.uuid, routing.servesEndpointMapper {
            self.role = .endpointMapper
            self.endpointMapper = EndpointMapperCalls(limits: self.limits)
        }
        let action = self.decideBind(pdu, contexts: bind.contexts)
        guard case .forward = action else {
            // Refused here (answered with a rejection, then the next bind is routed afresh) or
            // unanswerable (closed): nothing reached a server.
            return action
        }
        if self.role == .endpointMapper {
            self.server = routing.mapper
            self.state = .connecting(held: .decided(raw))
            return .connect(routing.mapper)
        }
        if let server = routing.server {
            self.server = server
            self.state = .connecting(held: .decided(raw))
            return .connect(server)
        }
        self.state = .resolvingFirstBind(routing, HeldBind(raw: raw, pdu: pdu, interface: interface))
        return .resolve(interface, at: routing.mapper)
    }

    private mutating func notABind(_ raw: RawPDU, _ routing: FirstBindRouting, _ reason: String) -> ClientAction {
        if let preferred = routing.server ?? routing.preferred {
            // The gateway port names its server: the spliced machine deals with this PDU there.
            self.server = preferred
            self.state = .connecting(held: .undecided(raw))
            return .connect(preferred)
        }
        return .refuse(.noBind(reason))
    }

    /// The runtime's answer to ``ClientAction/resolve(_:at:)``.
    public mutating func firstBindResolved(_ resolution: Resolution) -> ClientAction {
        guard case .resolvingFirstBind(let routing, let held) = self.state else {
            return self.protocolError("unexpected_resolution", "endpoint resolved while not routing")
        }
        let server: TCPEndpoint
        switch (resolution, routing.preferred) {
        case (.port(let port), let preferred?):
            var chosen = preferred
            if port != preferred.port {
                chosen.port = port
                self.events.append(.firstBindRouted(server: chosen, handedOutFor: preferred))
            }
            server = chosen
        case (_, let preferred?):
            server = preferred
        case (.port(let port), nil):
            server = TCPEndpoint(address: routing.mapper.address, port: port)
            self.events.append(.firstBindRouted(server: server, handedOutFor: nil))
        case (.notRegistered, nil):
            // Not registered at the server: refuse the bind as the server would, and wait for
            // the next one.
            self.events.append(.firstBindNotRegistered(interface: held.interface))
            self.session.offeredContexts.removeValue(forKey: held.raw.header.callID)
            self.state = .awaitingFirstBind(routing)
            guard let rejection = PDU.bindRejection(answering: held.pdu), let bytes = try? rejection.serialized() else {
                return .close(.protocolError)
            }
            return .respond(bytes)
        case (.unreachable(let error), nil):
            return .refuse(.mapperUnreachable(error))
        }
        self.server = server
        self.routedBy = routing.mapper
        self.state = .connecting(held: .decided(held.raw))
        return .connect(server)
    }

    /// The upstream connection is up: the PDU that chose it goes first.
    public mutating func connected() -> ClientAction {
        guard case .connecting(let held) = self.state else {
            return self.protocolError("unexpected_connect", "upstream connected while not connecting")
        }
        self.state = .spliced
        switch held {
        case nil:
            return .hold
        case .decided(let raw):
            return .forward(held: raw)
        case .undecided(let raw):
            let action = self.clientSent(raw)
            if case .forward = action { return .forward(held: raw) }
            return action
        }
    }

    /// The runtime's answer to ``ClientAction/checkEndpoints(_:at:resolvable:)``: for each
    /// interface, the port its endpoint mapper last placed it on (`.some(nil)`: not registered;
    /// `nil`: not known). Samba serves many interfaces on one endpoint, so only an interface known
    /// to live on another port than this connection's is refused.
    public mutating func alterContextChecked(_ placement: (SyntaxID) -> UInt16??) -> ClientAction {
        guard case .checkingAlterContext(let held) = self.state else {
            return self.protocolError("unexpected_check", "endpoints checked while no alter_context waits")
        }
        self.state = .spliced
        guard case .alterContext(let body) = held.pdu.body else { return .close(.protocolError) }
        let interfaces = body.contexts.filter { !$0.isBindTimeFeatureNegotiation }.map(\.abstractSyntax)
        let servedElsewhere = interfaces.contains { interface in
            if case .some(.some(let port)) = placement(interface), port != self.server?.port { return true }
            return false
        }
        guard servedElsewhere else {
            // Decided now; the PDU itself was held with the state, so it is forwarded from there.
            let action = self.decideBind(held.pdu, contexts: body.contexts)
            if case .forward = action { return .forward(held: held.raw) }
            return action
        }
        self.events.append(.alterContextServedElsewhere(interfaces: interfaces))
        guard let rejection = PDU.bindRejection(answering: held.pdu), let bytes = try? rejection.serialized() else {
            return .close(.protocolError)
        }
        return .respond(bytes)
    }
}

extension ConnectionStateMachine.ClientAction {
    /// Forward one held PDU.
    static func forward(held raw: RawPDU) -> Self { .forwardHeld([raw]) }
}

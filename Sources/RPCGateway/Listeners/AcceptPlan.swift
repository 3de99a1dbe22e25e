import RPCPolicy
import RPCWire

/// What to do with a connection a gateway listener accepted: a pure decision from the route's
/// mode, the listener and what the port pool and the socket say, testable without sockets.
struct AcceptPlan: Hashable, Sendable {
    enum Action: Hashable, Sendable {
        /// Connect to `server` at once and splice (the endpoint-mapper listener, or a gateway port
        /// whose server is known for certain).
        case splice(role: ConnectionStateMachine.Role, server: TCPEndpoint)
        /// Wait for the first bind and go where it says.
        case routeByBind(FirstBindRouting)
        /// Close the connection, counted under `reason`.
        case refuse(GatewayMetrics.RefusalReason, String)
    }

    var action: Action
    /// The gateway port whose pool mapping the connection counts against while open.
    var mappedPort: UInt16?
    /// The server's address when it differs per connection (transparent mode: the original
    /// destination); `nil`: the route's upstream.
    var upstreamAddress: IPv4Address?
    /// The gateway port the client connected to, when its server listens on another one (mapped
    /// and single-port gateway ports): the machine's ``ConnectionStateMachine/gatewayPort``.
    var gatewayPort: UInt16?
    /// What the endpoint-mapper role does with signed or sealed lookups.
    var protectedEndpointMapper: ConnectionStateMachine.ProtectedEndpointMapper = .refuse

    /// What the accepting socket says about where the client wanted to go (transparent mode).
    enum Destination: Hashable, Sendable {
        /// Not a transparent route: the destination does not matter.
        case notAsked
        /// SO_ORIGINAL_DST (REDIRECT/DNAT), or the local address under TPROXY.
        case original(TCPEndpoint)
        /// The connection was not redirected.
        case unknown
    }

    /// - Parameters:
    ///   - listenerPort: the gateway port the client connected to.
    ///   - upstream: the route's server address (unused in transparent mode).
    ///   - mapping: the server this gateway port was handed out for, if the pool has it.
    ///   - admitsServer: whether a transparent route's `servers` contain an address.
    ///   - portMapping: a mapped route's pool or preserve mapping.
    ///   - serverPortsListen: a transparent route's listener for the servers' dynamic range.
    ///   - admitsServerPort: whether `server_ports` contain a port.
    ///   - pinholeOpen: with `pinholes: learned`, whether the client was told about an endpoint;
    ///     `nil`: any port of `server_ports` (`pinholes: any`).
    ///   - passesProtectedEndpointMapper: whether signed or sealed lookups are passed unchanged.
    static func plan(
        mode: RouteMode,
        listener: GatewayMetrics.Listener,
        listenerPort: UInt16,
        epmPort: UInt16,
        upstream: IPv4Address,
        upstreamEPMPort: UInt16,
        mapping: TCPEndpoint?,
        destination: Destination,
        admitsServer: (IPv4Address) -> Bool,
        portMapping: PortMappingMode = .pool,
        serverPortsListen: UInt16? = nil,
        admitsServerPort: (UInt16) -> Bool = { _ in true },
        pinholeOpen: ((TCPEndpoint) -> Bool)? = nil,
        passesProtectedEndpointMapper: Bool = false
    ) -> AcceptPlan {
        var plan = decide()
        if passesProtectedEndpointMapper { plan.protectedEndpointMapper = .passThrough }
        return plan

        func decide() -> AcceptPlan {
            let upstreamEPM = TCPEndpoint(address: upstream, port: upstreamEPMPort)
            switch mode {
            case .mapped:
                if listener == .epm {
                    return AcceptPlan(action: .splice(role: .endpointMapper, server: upstreamEPM))
                }
                if portMapping == .preserve {
                    // Gateway port P is the server's port P: the first bind is decided, then the
                    // connection goes there (no pool, no look-up, no secondary address to rewrite).
                    let server = TCPEndpoint(address: upstream, port: listenerPort)
                    return AcceptPlan(action: .routeByBind(FirstBindRouting(mapper: upstreamEPM, server: server)))
                }
                // Replicas share no state, so another instance may have handed this port out for
                // another endpoint, or none (this one restarted): the first bind routes it, with this
                // instance's mapping preferred when there is one.
                return AcceptPlan(
                    action: .routeByBind(FirstBindRouting(mapper: upstreamEPM, preferred: mapping)),
                    mappedPort: mapping == nil ? nil : listenerPort,
                    gatewayPort: listenerPort
                )
            case .singlePort:
                if listener == .epm {
                    return AcceptPlan(action: .splice(role: .endpointMapper, server: upstreamEPM))
                }
                return AcceptPlan(
                    action: .routeByBind(
                        FirstBindRouting(mapper: upstreamEPM, servesEndpointMapper: listenerPort == epmPort)
                    ),
                    gatewayPort: listenerPort
                )
            case .transparent:
                guard case .original(let destination) = destination else {
                    return AcceptPlan(
                        action: .refuse(
                            .noOriginalDestination,
                            "connection was not redirected (no original destination)"
                        )
                    )
                }
                guard admitsServer(destination.address) else {
                    return AcceptPlan(
                        action: .refuse(
                            .destinationNotAllowed,
                            "original destination \(destination) is outside the route's servers"
                        )
                    )
                }
                if listener == .epm {
                    return AcceptPlan(
                        action: .splice(role: .endpointMapper, server: destination),
                        upstreamAddress: destination.address
                    )
                }
                if let serverPortsListen, listenerPort == serverPortsListen {
                    // A connection to a server's dynamic port: it goes there, once its first bind is
                    // allowed (so a denied interface never reaches the server).
                    guard admitsServerPort(destination.port), destination.port != upstreamEPMPort else {
                        return AcceptPlan(
                            action: .refuse(
                                .destinationNotAllowed,
                                "original destination port \(destination.port) is outside the route's server_ports"
                            )
                        )
                    }
                    if let pinholeOpen, !pinholeOpen(destination) {
                        return AcceptPlan(
                            action: .refuse(
                                .noPinhole,
                                "no readable reply told this client about \(destination) (pinholes: learned)"
                            )
                        )
                    }
                    let mapper = TCPEndpoint(address: destination.address, port: upstreamEPMPort)
                    return AcceptPlan(
                        action: .routeByBind(FirstBindRouting(mapper: mapper, server: destination)),
                        upstreamAddress: destination.address
                    )
                }
                if let mapping, mapping.address == destination.address {
                    return AcceptPlan(
                        action: .splice(role: .mapped, server: mapping),
                        mappedPort: listenerPort,
                        upstreamAddress: destination.address
                    )
                }
                let mapper = TCPEndpoint(address: destination.address, port: upstreamEPMPort)
                return AcceptPlan(
                    action: .routeByBind(FirstBindRouting(mapper: mapper)),
                    upstreamAddress: destination.address
                )
            }
        }
    }

    /// The state machine for the planned connection; `nil` for a refusal.
    func machine(policy: Policy, client: IPAddress, limits: WireLimits) -> ConnectionStateMachine? {
        var machine: ConnectionStateMachine
        switch self.action {
        case .splice(let role, let server):
            machine = ConnectionStateMachine(role: role, policy: policy, client: client, limits: limits, server: server)
        case .routeByBind(let routing):
            machine = ConnectionStateMachine(routing: routing, policy: policy, client: client, limits: limits)
        case .refuse:
            return nil
        }
        machine.gatewayPort = self.gatewayPort
        machine.protectedEndpointMapper = self.protectedEndpointMapper
        return machine
    }
}

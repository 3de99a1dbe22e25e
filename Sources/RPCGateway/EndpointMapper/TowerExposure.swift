package import RPCWire

/// What the gateway does with one ncacn_ip_tcp tower of an endpoint-mapper reply, before any port
/// is allocated. Shared by the tower rewrite of a live connection and by `rpcgate endpoints`, so
/// the report shows exactly what a client would be told.
package enum TowerExposure: Hashable, Sendable {
    /// The client may not bind the interface (at the best auth level): the tower is redacted.
    case hidden
    /// The tower names a host other than the route's server: redacted, never an open relay.
    case foreignHost
    /// The tower names a port of the server outside the route's `server_ports`: redacted.
    case portNotAllowed
    /// The server's own endpoint mapper: advertised as the route's EPM listener.
    case endpointMapper
    /// A dynamic endpoint of the route's server: advertised as a gateway port from the pool.
    case mapped(TCPEndpoint)

    /// Whether a tower of `interface`, of any protocol, must not reveal its endpoints: the client
    /// may not bind the interface. Towers without a readable interface are not subject to it.
    package static func hides(_ interface: SyntaxID?, mayLookUp: (SyntaxID) -> Bool) -> Bool {
        guard let interface else { return false }
        return !mayLookUp(interface)
    }

    /// Classifies `tower` for a route whose server resolved to `upstreamAddress`.
    ///
    /// - Parameter mayLookUp: whether the client may learn the endpoint of an interface
    ///   (``ConnectionStateMachine/mayLookUp(_:)``). Towers without a readable interface are not
    ///   subject to it.
    package static func classify(
        _ tower: EPMTowerEndpoint,
        route: RouteSettings,
        upstreamAddress: IPv4Address,
        mayLookUp: (SyntaxID) -> Bool
    ) -> TowerExposure {
        if Self.hides(tower.interface, mayLookUp: mayLookUp) { return .hidden }
        let server = tower.endpoint
        guard server.address == .any || server.address == upstreamAddress else { return .foreignHost }
        if server.port == route.upstreamEPMPort { return .endpointMapper }
        guard route.allowsServerPort(server.port) else { return .portNotAllowed }
        return .mapped(TCPEndpoint(address: upstreamAddress, port: server.port))
    }
}

import NIOCore
package import RPCPolicy
package import RPCWire

/// The endpoints a server registered, each with what the gateway would tell a given client about it:
/// the rows of `rpcgate endpoints`.
package struct EndpointInventory: Sendable {
    /// The transport of a tower (C706 Appendix I; MS-RPCE 2.1).
    package enum ProtocolSequence: String, Hashable, Sendable {
        case ncacnIPTCP = "ncacn_ip_tcp"
        case ncacnHTTP = "ncacn_http"
        case ncacnNP = "ncacn_np"
        case ncalrpc
        case ncadgIPUDP = "ncadg_ip_udp"
        case other
        /// The entry has no tower.
        case none = "-"

        package init(_ tower: ProtocolTower?) {
            guard let tower else {
                self = .none
                return
            }
            if tower.isNCACNIPTCP {
                self = .ncacnIPTCP
            } else if tower.floor(protocol: TowerProtocol.http) != nil {
                self = .ncacnHTTP
            } else if tower.floor(protocol: TowerProtocol.namedPipe) != nil {
                self = .ncacnNP
            } else if tower.floor(protocol: TowerProtocol.localRPC) != nil {
                self = .ncalrpc
            } else if tower.floor(protocol: TowerProtocol.rpcConnectionless) != nil, tower.udpPort != nil {
                self = .ncadgIPUDP
            } else {
                self = .other
            }
        }
    }

    /// What a client asking the gateway's endpoint mapper would see for the entry.
    package enum GatewayView: Hashable, Sendable {
        /// A gateway port from the route's range (simulated allocation).
        case mapped(UInt16)
        /// The route's own EPM listener port.
        case endpointMapper(UInt16)
        /// Redacted: the client may not bind the interface.
        case hidden
        /// Redacted: the tower names a host other than the route's server.
        case foreignHost
        /// Redacted: a server port outside the route's `server_ports`.
        case portNotAllowed
        /// Redacted: the route's port range is used up.
        case exhausted
        /// Not ncacn_ip_tcp, of an interface the client may look up: the gateway passes the tower
        /// through unchanged (one of a hidden interface is ``hidden``: its endpoints are zeroed).
        case unchanged
    }

    package struct Row: Hashable, Sendable {
        package var entry: EPMEntry
        /// The tower's interface (first UUID floor), if readable.
        package var interface: SyntaxID?
        /// The catalog name of ``interface``.
        package var interfaceName: String?
        package var protocolSequence: ProtocolSequence
        /// The server's port (TCP, HTTP, UDP) or endpoint name (pipe, ncalrpc port), if any.
        package var endpoint: String?
        /// The host the tower names (IP floor), if any.
        package var host: IPv4Address?
        package var gateway: GatewayView
        /// The policy's answer for a bind at `privacy` level from the client
        /// (``ConnectionStateMachine/lookUpDecision(_:)``); `nil` when the tower names no interface.
        package var verdict: PolicyDecision?
        /// The entry is the endpoint mapper itself (always allowed; no rule decides it).
        package var isEndpointMapper: Bool
    }

    package var rows: [Row]

    /// Builds the rows for `entries` (in the server's order) as seen by `client` on `route`.
    ///
    /// ncacn_ip_tcp towers are classified exactly as the gateway's tower rewrite does
    /// (``TowerExposure``) and given ports by a fresh ``PortAllocator`` over the route's range, in
    /// entry order: what a gateway that has just started would answer. A running gateway assigns
    /// ports on demand, so its numbers depend on what clients asked before.
    package init(
        entries: [EPMEntry],
        route: RouteSettings,
        upstreamAddress: IPv4Address,
        client: IPAddress,
        limits: WireLimits = WireLimits()
    ) {
        let machine = ConnectionStateMachine(
            role: .endpointMapper,
            policy: route.policy,
            client: client,
            limits: limits
        )
        var allocator = PortAllocator(ports: route.ports, idleTimeout: TimeAmount(route.mappingIdleTimeout))
        let now = NIODeadline.now()
        self.rows = entries.map { entry in
            let tower = entry.tower
            let interface = tower?.interface
            let sequence = ProtocolSequence(tower)
            var endpoint: String?
            switch sequence {
            case .ncacnIPTCP: endpoint = tower?.tcpPort.map { String($0) }
            case .ncacnHTTP: endpoint = tower?.httpPort.map { String($0) }
            case .ncadgIPUDP: endpoint = tower?.udpPort.map { String($0) }
            case .ncacnNP: endpoint = tower?.namedPipe
            case .ncalrpc: endpoint = tower?.localEndpoint
            case .other, .none: endpoint = nil
            }
            var gateway = TowerExposure.hides(interface, mayLookUp: machine.mayLookUp) ? GatewayView.hidden : .unchanged
            if sequence == .ncacnIPTCP, let tower, let port = tower.tcpPort {
                let exposure = TowerExposure.classify(
                    EPMTowerEndpoint(
                        interface: interface,
                        endpoint: TCPEndpoint(address: tower.ipv4Address ?? .any, port: port)
                    ),
                    route: route,
                    upstreamAddress: upstreamAddress,
                    mayLookUp: machine.mayLookUp
                )
                switch exposure {
                case .hidden: gateway = .hidden
                case .foreignHost: gateway = .foreignHost
                case .portNotAllowed: gateway = .portNotAllowed
                case .endpointMapper: gateway = .endpointMapper(route.epmPort)
                case .mapped(let server):
                    gateway = allocator.allocate(for: server, now: now).port.map { .mapped($0) } ?? .exhausted
                }
            }
            return Row(
                entry: entry,
                interface: interface,
                interfaceName: interface.flatMap { InterfaceCatalog.name(of: $0) },
                protocolSequence: sequence,
                endpoint: endpoint,
                host: tower?.ipv4Address,
                gateway: gateway,
                verdict: interface.map { machine.lookUpDecision($0) },
                isEndpointMapper: interface?.uuid == SyntaxID.endpointMapper.uuid
            )
        }
    }
}

package import NIOCore
package import RPCPolicy
package import RPCWire

/// A snapshot of the running gateway for the status page (`/`) and `/status.json`: routes, port
/// mappings, open connections, readiness and the last refused binds and calls.
///
/// Everything here is plain values taken under the gateway's locks (connections: on their event
/// loops), so rendering never touches live state.
package struct GatewayStatus: Sendable {
    /// `rpcgate` version, set by the CLI.
    package var version: String
    package var generatedAt: AuditTimestamp
    package var startedAt: AuditTimestamp
    package var uptime: Duration
    package var draining: Bool
    package var activeConnections: Int
    package var maximumConnections: Int
    package var routes: [RouteStatus]
    /// Open client connections, oldest first, at most ``GatewayServer/statusConnectionLimit``.
    package var connections: [ConnectionStatus]
    /// Open connections not listed in ``connections`` (beyond the listing limit).
    package var connectionsOmitted: Int
    /// Connections waiting for their first bind, to be routed by its interface (not listed).
    package var connectionsAwaitingBind: Int
    /// The last refused binds and calls, newest first.
    package var denials: [AuditRecord]
    /// Refusals recorded since start, including those no longer kept.
    package var denialsTotal: Int
    package var readiness: ReadinessReport
    /// The most seen and most refused interfaces and sources since start.
    package var traffic: TrafficSummary.Snapshot

    package init(
        version: String,
        generatedAt: AuditTimestamp,
        startedAt: AuditTimestamp,
        uptime: Duration,
        draining: Bool,
        activeConnections: Int,
        maximumConnections: Int,
        routes: [RouteStatus],
        connections: [ConnectionStatus],
        connectionsOmitted: Int,
        connectionsAwaitingBind: Int = 0,
        denials: [AuditRecord],
        denialsTotal: Int,
        readiness: ReadinessReport,
        traffic: TrafficSummary.Snapshot = .empty
    ) {
        self.version = version
        self.generatedAt = generatedAt
        self.startedAt = startedAt
        self.uptime = uptime
        self.draining = draining
        self.activeConnections = activeConnections
        self.maximumConnections = maximumConnections
        self.routes = routes
        self.connections = connections
        self.connectionsOmitted = connectionsOmitted
        self.connectionsAwaitingBind = connectionsAwaitingBind
        self.denials = denials
        self.denialsTotal = denialsTotal
        self.readiness = readiness
        self.traffic = traffic
    }
}

/// One route: what it listens on, where it forwards, its policy, and its live port mappings.
package struct RouteStatus: Sendable {
    package var name: String
    /// `mapped`, `single-port` or `transparent`.
    package var mode: String
    /// Transparent mode: the networks connections may be relayed to.
    package var servers: [String]
    package var listenAddress: String
    package var epmPort: UInt16
    package var ports: ClosedRange<UInt16>
    /// The address written into rewritten towers; `nil`: the address each client connected to.
    package var advertiseAddress: IPv4Address?
    /// As configured (IP literal or host name).
    package var upstreamHost: String
    /// What ``upstreamHost`` resolved to.
    package var upstreamAddress: IPv4Address
    package var upstreamEPMPort: UInt16
    /// The core gateway the route tunnels to (`via`); `nil`: direct.
    package var via: String?
    package var policyName: String
    package var policyDefault: PolicyAction
    package var ruleCount: Int
    package var activeConnections: Int
    package var maximumConnections: Int
    package var mappingIdleTimeout: Duration
    package var mappings: [MappingStatus]
    package var readiness: ReadinessReport.Route

    package init(
        name: String,
        mode: String = "mapped",
        servers: [String] = [],
        listenAddress: String,
        epmPort: UInt16,
        ports: ClosedRange<UInt16>,
        advertiseAddress: IPv4Address?,
        upstreamHost: String,
        upstreamAddress: IPv4Address,
        upstreamEPMPort: UInt16,
        via: String? = nil,
        policyName: String,
        policyDefault: PolicyAction,
        ruleCount: Int,
        activeConnections: Int,
        maximumConnections: Int,
        mappingIdleTimeout: Duration,
        mappings: [MappingStatus],
        readiness: ReadinessReport.Route
    ) {
        self.name = name
        self.mode = mode
        self.servers = servers
        self.listenAddress = listenAddress
        self.epmPort = epmPort
        self.ports = ports
        self.advertiseAddress = advertiseAddress
        self.upstreamHost = upstreamHost
        self.upstreamAddress = upstreamAddress
        self.upstreamEPMPort = upstreamEPMPort
        self.via = via
        self.policyName = policyName
        self.policyDefault = policyDefault
        self.ruleCount = ruleCount
        self.activeConnections = activeConnections
        self.maximumConnections = maximumConnections
        self.mappingIdleTimeout = mappingIdleTimeout
        self.mappings = mappings
        self.readiness = readiness
    }

    /// `host:port` of the endpoint-mapper listener (IPv6 in brackets).
    package var epmListener: String { HostPort.text(self.listenAddress, self.epmPort) }
}

/// One gateway port mapped to a server endpoint.
package struct MappingStatus: Hashable, Sendable {
    package var gatewayPort: UInt16
    package var server: TCPEndpoint
    package var activeConnections: Int
    /// Time since the mapping was last used; `nil` while a connection is open on it.
    package var idle: Duration?
    /// Time until an unused mapping is released; `nil` while a connection is open on it.
    package var expiresIn: Duration?

    package init(
        gatewayPort: UInt16,
        server: TCPEndpoint,
        activeConnections: Int,
        idle: Duration?,
        expiresIn: Duration?
    ) {
        self.gatewayPort = gatewayPort
        self.server = server
        self.activeConnections = activeConnections
        self.idle = idle
        self.expiresIn = expiresIn
    }

    /// The mapping as the port pool holds it, seen at `now`.
    package init(_ mapping: PortMapping, now: NIODeadline, idleTimeout: TimeAmount) {
        self.gatewayPort = mapping.gatewayPort
        self.server = mapping.server
        self.activeConnections = mapping.activeConnections
        if mapping.activeConnections > 0 {
            self.idle = nil
            self.expiresIn = nil
        } else {
            let idle = max(.zero, now - mapping.lastUsed)
            self.idle = .nanoseconds(idle.nanoseconds)
            self.expiresIn = .nanoseconds(max(0, (idleTimeout - idle).nanoseconds))
        }
    }
}

/// One open client connection.
package struct ConnectionStatus: Hashable, Sendable {
    package var id: Int
    package var route: String
    package var listener: GatewayMetrics.Listener
    /// `address:port` of the client.
    package var client: String
    /// The gateway port the client connected to.
    package var gatewayPort: UInt16?
    package var server: TCPEndpoint
    package var age: Duration
    /// Time since bytes last arrived from either side.
    package var idle: Duration
    package var bytesFromClient: Int
    package var bytesFromServer: Int
    /// Interfaces the server accepted on this connection, by context id.
    package var interfaces: [SyntaxID]
    package var authLevel: AuthLevel
    package var callInFlight: Bool

    package init(
        id: Int,
        route: String,
        listener: GatewayMetrics.Listener,
        client: String,
        gatewayPort: UInt16?,
        server: TCPEndpoint,
        age: Duration,
        idle: Duration,
        bytesFromClient: Int,
        bytesFromServer: Int,
        interfaces: [SyntaxID],
        authLevel: AuthLevel,
        callInFlight: Bool
    ) {
        self.id = id
        self.route = route
        self.listener = listener
        self.client = client
        self.gatewayPort = gatewayPort
        self.server = server
        self.age = age
        self.idle = idle
        self.bytesFromClient = bytesFromClient
        self.bytesFromServer = bytesFromServer
        self.interfaces = interfaces
        self.authLevel = authLevel
        self.callInFlight = callInFlight
    }

    /// Catalog names (or UUIDs) of ``interfaces``.
    package var interfaceNames: [String] {
        self.interfaces.map { InterfaceCatalog.name(of: $0) ?? "\($0)" }
    }
}

/// `host:port` text for addresses, with brackets around IPv6 literals.
package enum HostPort {
    package static func text(_ host: String, _ port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// `10.0.0.5:49152` for a socket address (no `[IPv4]…/` decoration), `unknown` for none.
    package static func text(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return "unknown" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

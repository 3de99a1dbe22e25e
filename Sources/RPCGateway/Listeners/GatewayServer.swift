package import Logging
import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix
import NIOSSL
import RPCPolicy
package import RPCWire

/// Errors that stop the gateway from starting.
package struct GatewayStartError: Error, CustomStringConvertible {
    package var description: String
}

/// The data plane: for every route, an endpoint-mapper listener and one listener per port of the
/// route's range, each connection spliced to the route's server through the inspection handlers.
///
/// All ports of a range are bound at start, so a connection to a port this instance did not hand
/// out is answered (closed and counted) rather than refused by the kernel.
///
/// Reload (``apply(_:)``): routes are kept by name. A route whose listen address, ports and
/// upstream are unchanged is updated in place, so established connections keep flowing and new
/// binds and calls follow the new policy. Listeners whose address, port and route are unchanged
/// are not re-bound. A removed or replaced route stops accepting; its connections drain.
///
/// Operations: every route's upstream endpoint mapper is probed (a TCP connect) on the schedule
/// of ``ReadinessSettings``, for ``readiness(now:)`` (`/readyz`) and `rpcgate_upstream_up`;
/// refused binds and calls are kept in ``denials`` and, with the routes, mappings and open
/// connections, make up ``status(version:)`` (the status page).
package final class GatewayServer: Sendable {
    let group: any EventLoopGroup
    let logger: Logger
    let metrics: GatewayMetrics
    private let audit: AuditLog?
    let tlsMetrics: TLSMetrics
    let state: NIOLockedValueBox<State>
    /// Caps, ids and the registry of the routes' connections.
    let admission: Admission
    /// Connection ids shared with the core listener.
    private let connectionIDs = ConnectionIDs()
    let splicer: Splicer
    /// The last refused binds and calls, over all routes.
    package let denials: RecentDenials
    let readinessSettings: ReadinessSettings
    let startedAt = NIODeadline.now()
    let startedWallClock = AuditTimestamp.now()

    /// Most connections listed in ``status(version:)``; the page says how many more are open.
    package static let statusConnectionLimit = 200

    /// Where a listener is, and what it serves.
    struct ListenerKey: Hashable, Sendable {
        var host: String
        var port: UInt16
    }

    struct ListenerEntry: Sendable {
        var route: String
        var kind: GatewayMetrics.Listener
        var channel: any Channel
    }

    struct State {
        var settings: GatewaySettings
        var routes: [String: RouteRuntime] = [:]
        var listeners: [ListenerKey: ListenerEntry] = [:]
        var expiryTask: RepeatedTask?
        var probeTask: RepeatedTask?
        var peers: [String: PeerRuntime] = [:]
        var core: CoreListener?
    }

    /// - Parameters:
    ///   - audit: where bind decisions and denied or audited calls are recorded. The caller owns
    ///     it and shuts it down after ``stop()``.
    ///   - readiness: the upstream probe schedule; `settings.admin?.readiness` or the defaults
    ///     when `nil`. Read once: a reload does not change it.
    ///   - denialCapacity: how many refused binds and calls ``denials`` keeps.
    package init(
        settings: GatewaySettings,
        group: any EventLoopGroup,
        logger: Logger,
        metrics: GatewayMetrics = GatewayMetrics(),
        audit: AuditLog? = nil,
        readiness: ReadinessSettings? = nil,
        denialCapacity: Int = RecentDenials.defaultCapacity,
        tlsMetrics: TLSMetrics? = nil
    ) {
        self.group = group
        self.logger = logger
        self.metrics = metrics
        self.audit = audit
        self.readinessSettings = readiness ?? settings.admin?.readiness ?? ReadinessSettings()
        self.denials = RecentDenials(capacity: denialCapacity)
        let tlsMetrics = tlsMetrics ?? TLSMetrics(factory: metrics.factory)
        self.tlsMetrics = tlsMetrics
        self.splicer = Splicer(tlsMetrics: tlsMetrics)
        self.admission = Admission(ids: self.connectionIDs)
        self.state = NIOLockedValueBox(State(settings: settings))
    }

    /// Addresses of the endpoint-mapper listeners, by route name (useful with port 0 in tests).
    package var endpointMapperAddresses: [String: SocketAddress] {
        self.state.withLockedValue { state in
            var result: [String: SocketAddress] = [:]
            for entry in state.listeners.values where entry.kind == .epm {
                result[entry.route] = entry.channel.localAddress
            }
            return result
        }
    }

    /// The configuration in force (the last one applied).
    package var settings: GatewaySettings { self.state.withLockedValue { $0.settings } }

    /// Client connections open now, over all routes.
    package var activeConnections: Int { self.admission.active }

    /// The core listener's address, when this gateway is a core (useful with port 0 in tests).
    package var coreAddress: SocketAddress? { self.state.withLockedValue { $0.core }?.localAddress }

    /// Resolves upstreams and binds every listener. Throws (after closing what it bound) when an
    /// address cannot be bound or an upstream cannot be resolved.
    package func start() async throws {
        let settings = self.state.withLockedValue { $0.settings }
        do {
            try await self.apply(settings, initial: true)
        } catch {
            await self.closeListeners()
            await self.state.withLockedValue({ $0.core })?.drain(deadline: .zero)
            throw error
        }
        let expiry = self.group.next().scheduleRepeatedTask(initialDelay: .seconds(5), delay: .seconds(5)) { [self] _ in
            for route in self.state.withLockedValue({ Array($0.routes.values) }) {
                let released = route.pool.expireIdle()
                if !released.isEmpty {
                    route.logger.debug("port mappings expired", metadata: ["ports": "\(released)"])
                }
            }
        }
        let interval = TimeAmount(self.readinessSettings.interval)
        let probes = self.group.next().scheduleRepeatedTask(initialDelay: .zero, delay: interval) { [self] _ in
            self.probeUpstreams()
        }
        self.state.withLockedValue {
            $0.expiryTask = expiry
            $0.probeTask = probes
        }
    }

    /// Applies a new configuration: see the type's documentation. Throws when an upstream cannot
    /// be resolved (nothing is changed then) or a new listener cannot be bound (the routes are
    /// updated, listeners that could be bound are open, and the error names the others).
    package func apply(_ settings: GatewaySettings) async throws {
        try await self.apply(settings, initial: false)
    }

    private func apply(_ settings: GatewaySettings, initial: Bool) async throws {
        // Resolve first: a reload that cannot resolve an upstream changes nothing.
        let existing = self.state.withLockedValue { $0.routes }
        var routes: [String: RouteRuntime] = [:]
        for route in settings.routes {
            if let current = existing[route.name], current.identity == RouteIdentity(route) {
                routes[route.name] = current
                continue
            }
            let address: IPv4Address
            if case .transparent = route.mode {
                address = .any  // Each connection's server is its original destination.
            } else {
                address = try Self.resolveIPv4(route.upstreamHost)
            }
            routes[route.name] = RouteRuntime(
                settings: route,
                upstreamAddress: address,
                metrics: self.metrics.route(route.name),
                logger: self.logger,
                audit: self.audit,
                denials: self.denials
            )
        }
        // TLS files next: a reload whose certificates or keys cannot be loaded changes nothing.
        // Every reload rebuilds the contexts, so renewed files take effect for new connections.
        var peers: [String: PeerRuntime] = [:]
        for (name, peer) in settings.peers {
            do {
                peers[name] = PeerRuntime(settings: peer, context: try TLSContexts.client(peer.tls))
            } catch {
                throw GatewayStartError(description: "peer \(name): \(error)")
            }
        }
        try await self.applyCore(settings)
        self.state.withLockedValue { $0.peers = peers }
        for route in settings.routes {
            if let kept = routes[route.name], kept === existing[route.name] { kept.update(route) }
        }

        var wanted: [ListenerKey: (route: String, kind: GatewayMetrics.Listener)] = [:]
        for route in settings.routes {
            wanted[ListenerKey(host: route.listenAddress, port: route.epmPort)] = (route.name, .epm)
            // Single-port mode with `port` equal to `epm_port`: one listener, routed by bind.
            for port in route.ports {
                wanted[ListenerKey(host: route.listenAddress, port: port)] = (route.name, .mapped)
            }
        }
        // Swap the configuration in, and take out the listeners that no longer fit.
        let stale: [any Channel] = self.state.withLockedValue { state in
            state.settings = settings
            state.routes = routes
            var stale: [any Channel] = []
            for (key, entry) in state.listeners {
                if let want = wanted[key], want.route == entry.route, want.kind == entry.kind { continue }
                stale.append(entry.channel)
                state.listeners.removeValue(forKey: key)
            }
            return stale
        }
        for channel in stale { try? await channel.close() }

        var failures: [String] = []
        for (key, want) in wanted.sorted(by: { ($0.key.host, $0.key.port) < ($1.key.host, $1.key.port) }) {
            if self.state.withLockedValue({ $0.listeners[key] != nil }) { continue }
            do {
                // A transparent route on the wildcard may share a port with a route on a specific
                // address: both are bound with SO_REUSEPORT, and the kernel prefers the specific
                // address for connections to it.
                let shared = wanted.keys.contains { $0.port == key.port && $0.host != key.host }
                let channel = try await self.bind(key, route: want.route, kind: want.kind, reusePort: shared)
                self.state.withLockedValue {
                    $0.listeners[key] = ListenerEntry(route: want.route, kind: want.kind, channel: channel)
                }
            } catch {
                if initial { throw error }
                failures.append("\(error)")
            }
        }
        for route in settings.routes {
            guard let runtime = routes[route.name], initial || runtime !== existing[route.name] else { continue }
            self.logger.info(
                initial ? "route listening" : "route started",
                metadata: [
                    "route": "\(route.name)",
                    "epm": "\(route.listenAddress):\(route.epmPort)",
                    "ports": "\(route.ports.lowerBound)-\(route.ports.upperBound)",
                    "mode": "\(route.mode.name)",
                    "upstream": "\(Self.upstreamText(route, runtime))",
                ]
            )
        }
        for name in existing.keys where routes[name] == nil {
            self.logger.info("route removed; its connections drain", metadata: ["route": "\(name)"])
        }
        if !initial {
            // New or replaced routes are probed at once, not at the next tick.
            let fresh = settings.routes.compactMap { route in
                routes[route.name].flatMap { $0 === existing[route.name] ? nil : $0 }
            }
            for route in fresh { self.probe(route) }
        }
        if !failures.isEmpty {
            throw GatewayStartError(description: failures.joined(separator: "; "))
        }
    }

    /// Graceful shutdown: stop accepting, let calls in flight finish for up to `deadline`, then
    /// close what is left. Idle connections, and those still waiting for their first bind, close
    /// at once.
    package func drain(deadline: Duration) async {
        let core = self.state.withLockedValue { $0.core }
        let connections = self.admission.beginDraining()
        async let coreDrained: Void? = core?.drain(deadline: deadline)
        await self.closeListeners()
        self.logger.info(
            "draining",
            metadata: ["connections": "\(connections.count)", "deadline": "\(DurationText.short(deadline))"]
        )
        await self.admission.drain(connections, deadline: deadline, logger: self.logger)
        _ = await coreDrained
    }

    /// Closes every listener and every connection at once.
    package func stop() async {
        await self.drain(deadline: .zero)
    }

    private func closeListeners() async {
        let (channels, tasks) = self.state.withLockedValue { state in
            let result = (state.listeners.values.map(\.channel), [state.expiryTask, state.probeTask])
            state.listeners = [:]
            state.expiryTask = nil
            state.probeTask = nil
            return result
        }
        for task in tasks { task?.cancel() }
        for channel in channels { try? await channel.close() }
    }

    /// Starts, reloads or stops the core listener to match `settings.core`.
    private func applyCore(_ settings: GatewaySettings) async throws {
        let current = self.state.withLockedValue { $0.core }
        switch (current, settings.core) {
        case (nil, nil):
            return
        case (let core?, nil):
            self.state.withLockedValue { $0.core = nil }
            await core.drain(deadline: settings.timeouts.drainDuration)
        case (let core?, let wanted?):
            try await core.apply(wanted, timeouts: settings.timeouts, limits: settings.wireLimits)
        case (nil, let wanted?):
            let core = try CoreListener(
                settings: wanted,
                timeouts: settings.timeouts,
                limits: settings.wireLimits,
                group: self.group,
                logger: self.logger,
                metrics: self.metrics,
                tlsMetrics: self.tlsMetrics,
                audit: self.audit,
                denials: self.denials,
                ids: self.connectionIDs
            )
            try await core.start()
            self.state.withLockedValue { $0.core = core }
        }
    }

    // MARK: - Resolution

    private static func upstreamText(_ route: RouteSettings, _ runtime: RouteRuntime) -> String {
        if case .transparent(let servers) = route.mode {
            return "original destination in \(servers.map(\.description).joined(separator: ", "))"
        }
        return "\(runtime.upstreamAddress):\(route.upstreamEPMPort)"
    }

    /// An IPv4 literal, or the address a host name resolves to (once, at start). The tower floor
    /// and the port pool are IPv4-only (C706 App. L has no IPv6 floor).
    package static func resolveIPv4(_ host: String) throws -> IPv4Address {
        if let literal = IPv4Address(host) { return literal }
        guard let resolved = try? SocketAddress.makeAddressResolvingHost(host, port: 0),
            let text = resolved.ipAddress, let address = IPv4Address(text)
        else {
            throw GatewayStartError(description: "cannot resolve upstream \(host) to an IPv4 address")
        }
        return address
    }
}

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
    private let group: any EventLoopGroup
    private let logger: Logger
    private let metrics: GatewayMetrics
    private let audit: AuditLog?
    private let tlsMetrics: TLSMetrics
    private let state: NIOLockedValueBox<State>
    /// The last refused binds and calls, over all routes.
    package let denials: RecentDenials
    private let readinessSettings: ReadinessSettings
    private let startedAt = NIODeadline.now()
    private let startedWallClock = AuditTimestamp.now()

    /// Most connections listed in ``status(version:)``; the page says how many more are open.
    package static let statusConnectionLimit = 200

    /// A core gateway routes tunnel to, with its TLS context (swapped on reload).
    struct PeerRuntime: Sendable {
        var settings: PeerSettings
        var context: NIOSSLContext
    }

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

    private struct State {
        var settings: GatewaySettings
        var routes: [String: RouteRuntime] = [:]
        var listeners: [ListenerKey: ListenerEntry] = [:]
        var connections: [Int: NIOLoopBound<RPCProxyConnection>] = [:]
        /// Connections still waiting for (or routing) their first bind: not spliced yet.
        var routing: [Int: NIOLoopBound<BindRoutingHandler>] = [:]
        var nextConnectionID = 0
        var activeConnections = 0
        var activeByRoute: [String: Int] = [:]
        var expiryTask: RepeatedTask?
        var probeTask: RepeatedTask?
        var draining = false
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
        self.tlsMetrics = tlsMetrics ?? TLSMetrics(factory: metrics.factory)
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
    package var activeConnections: Int { self.state.withLockedValue { $0.activeConnections } }

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
                self.state.withLockedValue { $0.listeners[key] = ListenerEntry(route: want.route, kind: want.kind, channel: channel) }
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
    /// close what is left. Idle connections close at once.
    package func drain(deadline: Duration) async {
        let core = self.state.withLockedValue { state in
            state.draining = true
            return state.core
        }
        async let coreDrained: Void? = core?.drain(deadline: deadline)
        await self.closeListeners()
        let (connections, routing) = self.state.withLockedValue { state in
            (Array(state.connections.values), Array(state.routing.values))
        }
        // Connections still waiting for their first bind have nothing in flight: close them now.
        for handler in routing {
            handler.eventLoop.execute {
                if handler.value.isWaiting { handler.value.close() }
            }
        }
        self.logger.info(
            "draining",
            metadata: ["connections": "\(connections.count)", "deadline": "\(DurationText.short(deadline))"]
        )
        for connection in connections {
            connection.eventLoop.execute { connection.value.drain() }
        }
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        while clock.now < end, self.activeConnections > 0 {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let left = self.state.withLockedValue { Array($0.connections.values) }
        if !left.isEmpty {
            self.logger.warning("drain deadline reached; closing connections", metadata: ["connections": "\(left.count)"])
            for connection in left {
                connection.eventLoop.execute { connection.value.close(.shutdown) }
            }
            // Bounded wait for the closes to run.
            for _ in 0..<40 where self.activeConnections > 0 {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
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

    // MARK: - Listening

    private func bind(_ key: ListenerKey, route: String, kind: GatewayMetrics.Listener, reusePort: Bool) async throws -> any Channel {
        do {
            return try await ServerBootstrap.proxiedConnections(group: self.group)
                .serverChannelOption(.socketOption(reusePortOption), value: reusePort ? 1 : 0)
                .childChannelInitializer { [self] channel in
                    self.accept(channel, routeName: route, listenerPort: key.port, listener: kind)
                }
                .bind(host: key.host, port: Int(key.port))
                .get()
        } catch {
            throw GatewayStartError(description: "route \(route): cannot listen on \(key.host):\(key.port): \(error)")
        }
    }

    /// Admits a client connection: caps, the server it goes to, the upstream connection, then the
    /// handlers. Returning the connect future delays reads until the splice is in place.
    private func accept(_ client: any Channel, routeName: String, listenerPort: UInt16, listener: GatewayMetrics.Listener)
        -> EventLoopFuture<Void>
    {
        let admission = self.state.withLockedValue { state -> (RouteRuntime, GatewaySettings, Int)? in
            guard !state.draining, let route = state.routes[routeName],
                state.activeConnections < state.settings.limits.maximumConnections,
                state.activeByRoute[routeName, default: 0] < route.settings.maximumConnections
            else { return nil }
            state.activeConnections += 1
            state.activeByRoute[routeName, default: 0] += 1
            state.nextConnectionID += 1
            return (route, state.settings, state.nextConnectionID)
        }
        guard let (route, settings, connectionID) = admission else {
            let route = self.state.withLockedValue { $0.routes[routeName] }
            route?.metrics.connectionRefused(reason: .cap)
            route?.logger.warning(
                "connection refused: connection cap reached or draining",
                metadata: [
                    "client": "\(HostPort.text(client.remoteAddress))",
                    "gateway": "\(HostPort.text(client.localAddress))",
                ]
            )
            return client.close()
        }
        route.metrics.connectionOpened(listener: listener)
        let admitted = Admitted(route: route, settings: settings, connectionID: connectionID, listener: listener)
        let upstreamEPM = TCPEndpoint(address: route.upstreamAddress, port: route.identity.upstreamEPMPort)

        switch route.identity.mode {
        case .mapped:
            switch listener {
            case .epm:
                return self.splice(client, admitted, role: .endpointMapper, server: upstreamEPM)
            case .mapped:
                if let mapped = route.pool.connectionOpened(port: listenerPort) {
                    // Replicas share no state, so another instance may have handed this port out
                    // for another endpoint: the first bind's interface is checked at the server's
                    // endpoint mapper (cached), and the mapping is used when it agrees or when
                    // the first PDU is not a bind.
                    return self.routeByBind(
                        client,
                        admitted,
                        mapper: upstreamEPM,
                        servesEndpointMapper: false,
                        preferred: mapped,
                        mappedPort: listenerPort
                    )
                }
                // Another replica (or this one before a restart) handed this port out: route the
                // connection by its first bind instead of dropping it.
                return self.routeByBind(client, admitted, mapper: upstreamEPM, servesEndpointMapper: false)
            }
        case .singlePort:
            if listener == .epm {
                return self.splice(client, admitted, role: .endpointMapper, server: upstreamEPM)
            }
            return self.routeByBind(
                client,
                admitted,
                mapper: upstreamEPM,
                servesEndpointMapper: listenerPort == route.identity.epmPort
            )
        case .transparent:
            return originalDestination(of: client).assumeIsolated().flatMap { [self] redirected in
                // REDIRECT/DNAT: SO_ORIGINAL_DST. TPROXY: the socket's local address already is
                // the original destination (and a direct connection to the gateway names the
                // gateway itself, which is not in `servers`).
                guard let destination = redirected ?? localDestination(of: client) else {
                    return self.refuse(client, admitted, .noOriginalDestination, "connection was not redirected (no original destination)")
                }
                guard route.settings.admitsServer(destination.address) else {
                    return self.refuse(client, admitted, .destinationNotAllowed, "original destination \(destination) is outside the route's servers")
                }
                let mapper = TCPEndpoint(address: destination.address, port: route.identity.upstreamEPMPort)
                if listener == .epm {
                    return self.splice(client, admitted, role: .endpointMapper, server: destination, upstreamAddress: destination.address)
                }
                if let mapped = route.pool.server(forPort: listenerPort), mapped.address == destination.address,
                    let opened = route.pool.connectionOpened(port: listenerPort)
                {
                    return self.splice(client, admitted, role: .mapped, server: opened, mappedPort: listenerPort, upstreamAddress: destination.address)
                }
                return self.routeByBind(client, admitted, mapper: mapper, servesEndpointMapper: false, upstreamAddress: destination.address)
            }.nonisolated()
        }
    }

    /// What ``accept(_:routeName:listenerPort:listener:)`` admitted: counted in the caps until
    /// ``released(route:listenerPort:connectionID:)``.
    private struct Admitted {
        var route: RouteRuntime
        var settings: GatewaySettings
        var connectionID: Int
        var listener: GatewayMetrics.Listener
    }

    private func refuse(_ client: any Channel, _ admitted: Admitted, _ reason: GatewayMetrics.RefusalReason, _ message: String)
        -> EventLoopFuture<Void>
    {
        self.released(route: admitted.route, listenerPort: nil, connectionID: admitted.connectionID)
        admitted.route.metrics.connectionRefused(reason: reason)
        admitted.route.logger.notice(
            "connection refused: \(message)",
            metadata: [
                "conn": "\(admitted.connectionID)", "client": "\(HostPort.text(client.remoteAddress))",
                "reason": "\(reason)",
            ]
        )
        return client.close()
    }

    /// Waits for the client's first bind (within the bind timeout), decides it with
    /// ``BindRouting``: a bind the policy denies is refused locally without connecting; an
    /// endpoint-mapper bind on a port that is also the EPM port makes this an EPM connection;
    /// otherwise the interface is resolved at `mapper` (``EndpointResolver``, cached) and the
    /// connection is spliced to the endpoint that serves it.
    private func routeByBind(
        _ client: any Channel,
        _ admitted: Admitted,
        mapper: TCPEndpoint,
        servesEndpointMapper: Bool,
        upstreamAddress: IPv4Address? = nil,
        preferred: TCPEndpoint? = nil,
        mappedPort: UInt16? = nil
    ) -> EventLoopFuture<Void> {
        let route = admitted.route
        let limits = admitted.settings.wireLimits
        let timeouts = admitted.settings.timeouts
        let clientIP = IPAddress(client.remoteAddress) ?? .v4(0)
        let loop = client.eventLoop
        let handler = BindRoutingHandler(
            limits: limits,
            onFirstPDU: { [self] pdu, handler in
                switch BindRouting.decide(firstPDU: pdu, servesEndpointMapper: servesEndpointMapper, limits: limits) {
                case .reject(let reason):
                    if let preferred {
                        // Not a bind on a mapped port: the state machine deals with it there.
                        _ = self.splice(client, admitted, role: .mapped, server: preferred, mappedPort: mappedPort, routed: (handler, pdu, mapper))
                        return
                    }
                    handler.handOver()
                    _ = self.refuse(client, admitted, .noBind, reason)
                case .endpointMapper:
                    _ = self.splice(
                        client,
                        admitted,
                        role: .endpointMapper,
                        server: mapper,
                        upstreamAddress: upstreamAddress,
                        routed: (handler, pdu, mapper)
                    )
                case .resolve(let interface):
                    var probe = RPCConnectionStateMachine(role: .mapped, policy: route.policy.policy, client: clientIP, limits: limits)
                    let action = probe.clientSent(pdu)
                    guard case .forward = action else {
                        for event in probe.takeEvents() {
                            route.record(
                                event,
                                connection: admitted.connectionID,
                                client: client.remoteAddress,
                                server: mapper,
                                listener: admitted.listener
                            )
                        }
                        switch action {
                        case .respond(let bytes):
                            handler.write(bytes)
                            self.awaitNextBind(handler)
                        default:
                            handler.close()
                        }
                        return
                    }
                    let resolver = route.resolver
                    loop.makeFutureWithTask {
                        try await resolver.resolve(interface, at: mapper, group: loop)
                    }.assumeIsolated().whenComplete { [self] result in
                        guard !handler.isHandedOver else { return }
                        if let preferred {
                            var server = preferred
                            if case .success(let port?) = result, port != preferred.port {
                                server.port = port
                                route.metrics.bindRouted()
                                route.logger.notice(
                                    "gateway port mapped to another endpoint than the bind's interface; routed by the bind",
                                    metadata: ["port": "\(mappedPort.map { "\($0)" } ?? "?")", "mapping": "\(preferred)", "server": "\(server)"]
                                )
                            }
                            _ = self.splice(client, admitted, role: .mapped, server: server, mappedPort: mappedPort, routed: (handler, pdu, mapper))
                            return
                        }
                        switch result {
                        case .success(let port?):
                            route.metrics.bindRouted()
                            _ = self.splice(
                                client,
                                admitted,
                                role: .mapped,
                                server: TCPEndpoint(address: mapper.address, port: port),
                                upstreamAddress: upstreamAddress,
                                routed: (handler, pdu, mapper)
                            )
                        case .success(nil):
                            // Not registered at the server: refuse the bind as the server would.
                            route.logger.info(
                                "bind to an interface the server does not register refused",
                                metadata: ["client": "\(client.remoteAddress.map { "\($0)" } ?? "?")", "uuid": "\(interface)"]
                            )
                            if let rejection = (try? pdu.parse(limits: limits)).flatMap({ PDU.bindRejection(answering: $0) }),
                                let bytes = try? rejection.serialized()
                            {
                                handler.write(bytes)
                                self.awaitNextBind(handler)
                            } else {
                                handler.close()
                            }
                        case .failure(let error):
                            route.logger.warning(
                                "endpoint mapper unreachable for bind routing",
                                metadata: ["mapper": "\(mapper)", "error": "\(error)"]
                            )
                            route.metrics.connectionRefused(reason: .upstreamUnreachable)
                            handler.close()
                        }
                    }
                }
            },
            onClosedBeforeHandover: { [self] in
                self.released(route: route, listenerPort: mappedPort, connectionID: admitted.connectionID)
            }
        )
        let timer = loop.assumeIsolated().scheduleTask(in: TimeAmount(timeouts.bindDuration)) {
            if !handler.isHandedOver {
                route.metrics.connectionClosed(reason: CloseReason.bindTimeout.rawValue)
                route.logger.notice("no bind routed within the bind timeout; connection closed")
                handler.close()
            }
        }
        let connectionID = admitted.connectionID
        client.closeFuture.whenComplete { [self] _ in
            timer.cancel()
            self.state.withLockedValue { _ = $0.routing.removeValue(forKey: connectionID) }
        }
        do {
            try client.pipeline.syncOperations.addHandler(handler)
        } catch {
            return loop.makeFailedFuture(error)
        }
        let bound = NIOLoopBound(handler, eventLoop: loop)
        self.state.withLockedValue { $0.routing[connectionID] = bound }
        return loop.makeSucceededVoidFuture()
    }

    /// After a locally refused first bind: wait for the next one, unless the gateway is draining
    /// (nothing is in flight on such a connection, so it closes at once).
    private func awaitNextBind(_ handler: BindRoutingHandler) {
        if self.state.withLockedValue({ $0.draining }) {
            handler.close()
        } else {
            handler.awaitNextBind()
        }
    }

    /// Connects to `server` and splices the client to it through the inspection handlers.
    /// Returning the connect future delays reads until the splice is in place. With `routed`, the
    /// client channel already has its framer and a ``BindRoutingHandler`` holding the first PDU.
    private func splice(
        _ client: any Channel,
        _ admitted: Admitted,
        role: RPCConnectionStateMachine.Role,
        server: TCPEndpoint,
        mappedPort: UInt16? = nil,
        upstreamAddress: IPv4Address? = nil,
        routed: (handler: BindRoutingHandler, firstPDU: RawPDU, mapper: TCPEndpoint)? = nil
    ) -> EventLoopFuture<Void> {
        let route = admitted.route
        let listener = admitted.listener
        let connectionID = admitted.connectionID
        routed?.handler.handOver()
        let clientIP = IPAddress(client.remoteAddress) ?? .v4(0)
        let facing = IPv4Address(client.localAddress)
        let limits = admitted.settings.wireLimits
        let timeouts = admitted.settings.timeouts
        let machine = RPCConnectionStateMachine(
            role: role,
            policy: route.policy.policy,
            client: clientIP,
            limits: limits
        )
        let connection = RPCProxyConnection(
            id: connectionID,
            route: route,
            listener: listener,
            machine: machine,
            clientAddress: client.remoteAddress,
            localAddress: client.localAddress,
            clientFacingAddress: facing,
            serverEndpoint: server,
            upstreamAddress: upstreamAddress,
            eventLoop: client.eventLoop,
            timeouts: timeouts,
            limits: limits
        ) { [self] in
            self.released(route: route, listenerPort: mappedPort, connectionID: connectionID)
        }
        if let routed, role == .mapped {
            connection.bindRouting = (route.resolver, routed.mapper)
        }
        let bound = NIOLoopBound(connection, eventLoop: client.eventLoop)
        let peer: PeerRuntime? = self.state.withLockedValue { state in
            route.settings.via.flatMap { state.peers[$0] }
        }
        let draining = self.state.withLockedValue { state in
            state.routing.removeValue(forKey: connectionID)
            state.connections[connectionID] = bound
            return state.draining
        }
        route.logger.debug(
            "connection opened",
            metadata: [
                "conn": "\(connectionID)", "listener": "\(listener.rawValue)",
                "client": "\(HostPort.text(client.remoteAddress))", "gateway": "\(HostPort.text(client.localAddress))",
                "server": "\(server)", "via": "\(route.settings.via ?? "-")",
            ]
        )
        let connected: EventLoopFuture<any Channel>
        if let via = route.settings.via {
            guard let peer else {
                route.metrics.connectionRefused(reason: .peerUnreachable)
                route.logger.warning("connection refused: unknown peer", metadata: ["peer": "\(via)"])
                connection.close(.upstreamUnreachable)
                return client.close()
            }
            let target = RPCGateTarget(kind: listener == .epm ? .endpointMapper : .mapped, server: server)
            connected = self.connectTunnel(
                peer,
                header: EdgeTunnel.header(client: client.remoteAddress, gateway: client.localAddress, target: target),
                eventLoop: client.eventLoop,
                timeouts: timeouts,
                logger: route.logger
            )
        } else if let address = try? server.socketAddress() {
            connected = ClientBootstrap.proxiedConnection(on: client.eventLoop, timeouts: timeouts)
                .connect(to: address)
        } else {
            connected = client.eventLoop.makeFailedFuture(GatewayStartError(description: "no socket address for \(server)"))
        }
        return connected
            .assumeIsolated()
            .flatMap { upstream in
                do {
                    if let routed {
                        let handlers = connection.makeHandlers()
                        try client.pipeline.syncOperations.addHandler(handlers.client, position: .after(routed.handler))
                        try upstream.pipeline.syncOperations.addHandler(handlers.server)
                    } else {
                        try connection.install(client: client, server: upstream)
                    }
                } catch {
                    upstream.close(promise: nil)
                    connection.close(.protocolError)
                    return client.eventLoop.makeFailedFuture(error)
                }
                if let routed {
                    connection.received(routed.firstPDU, from: .client)
                    connection.readComplete(from: .client)
                    client.pipeline.syncOperations.removeHandler(routed.handler, promise: nil)
                }
                if draining {
                    // Routed while the gateway began to drain: close once its calls finish.
                    connection.drain()
                }
                return client.eventLoop.makeSucceededVoidFuture()
            }
            .flatMapError { error in
                route.metrics.connectionRefused(reason: peer == nil ? .upstreamUnreachable : .peerUnreachable)
                route.logger.warning(
                    peer == nil ? "upstream unreachable" : "core gateway unreachable",
                    metadata: [
                        "conn": "\(connectionID)", "server": "\(server)",
                        "client": "\(HostPort.text(client.remoteAddress))",
                        "via": "\(peer.map { "\($0.settings.name) \($0.settings.host):\($0.settings.port)" } ?? "-")",
                        "error": "\(UpstreamProbe.describe(error))",
                    ]
                )
                if routed != nil {
                    // A restarted server may have moved its endpoints: ask again next time.
                    route.resolver.invalidate(address: server.address, port: server.port)
                }
                connection.close(.upstreamUnreachable)
                return client.close()
            }
            .nonisolated()
    }

    /// Connects to a core gateway over mutual TLS and queues the PROXY v2 header (sent as soon as
    /// the handshake completes; swift-nio-ssl buffers application data until then).
    private func connectTunnel(
        _ peer: PeerRuntime,
        header: ProxyHeader,
        eventLoop: any EventLoop,
        timeouts: Timeouts,
        logger: Logger
    ) -> EventLoopFuture<any Channel> {
        let tlsMetrics = self.tlsMetrics
        return ClientBootstrap.proxiedConnection(on: eventLoop, timeouts: timeouts)
            .channelInitializer { channel in
                do {
                    let tls = try NIOSSLClientHandler(context: peer.context, serverHostname: peer.settings.serverName)
                    try channel.pipeline.syncOperations.addHandlers([
                        tls,
                        TLSHandshakeObserver(peer: peer.settings.name, metrics: tlsMetrics, logger: logger),
                    ])
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .connect(host: peer.settings.host, port: peer.settings.port)
            .map { channel in
                var bytes = channel.allocator.buffer(capacity: 64)
                bytes.writeProxyHeader(header)
                channel.writeAndFlush(bytes, promise: nil)
                return channel
            }
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
                denials: self.denials
            )
            try await core.start()
            self.state.withLockedValue { $0.core = core }
        }
    }

    private func released(route: RouteRuntime, listenerPort: UInt16?, connectionID: Int) {
        self.state.withLockedValue { state in
            state.activeConnections -= 1
            state.activeByRoute[route.name, default: 1] -= 1
            state.connections.removeValue(forKey: connectionID)
        }
        route.metrics.connectionClosed()
        if let port = listenerPort {
            route.pool.connectionClosed(port: port)
        }
    }

    // MARK: - Readiness and status

    /// Probes every route's upstream (skipping routes whose last probe is still running).
    private func probeUpstreams() {
        let routes = self.state.withLockedValue { Array($0.routes.values) }
        for route in routes { self.probe(route) }
    }

    /// What `route` depends on: its upstream endpoint mapper, or, with `via`, the core gateway it
    /// tunnels to (the server is reached from there). `nil` for a transparent route: its servers
    /// differ per connection.
    private func probeTarget(_ route: RouteRuntime) -> ProbeTarget? {
        if case .transparent = route.identity.mode { return nil }
        guard let via = route.settings.via else { return ProbeTarget(upstream: route.upstreamEndpointMapper) }
        let peer = self.state.withLockedValue { $0.peers[via]?.settings }
        return ProbeTarget(host: peer?.host ?? via, port: peer?.port ?? 0, what: "core gateway \(via)", peer: via)
    }

    private func probe(_ route: RouteRuntime) {
        guard let target = self.probeTarget(route), route.beginProbe() else { return }
        UpstreamProbe.connect(
            to: target,
            timeout: self.readinessSettings.timeout,
            on: self.group.next()
        ).whenComplete { result in
            switch result {
            case .success: route.probeSucceeded(target)
            case .failure(let error): route.probeFailed(target, error: UpstreamProbe.describe(error))
            }
        }
    }

    /// `/readyz`: every route's upstream reached within ``ReadinessSettings/maximumAge``, and not
    /// draining.
    package func readiness(now: NIODeadline = .now()) -> ReadinessReport {
        let (routes, draining) = self.state.withLockedValue { state in
            (state.settings.routes.compactMap { state.routes[$0.name] }, state.draining)
        }
        return ReadinessReport.evaluate(
            routes: routes.map { route in
                let target = self.probeTarget(route)
                return (route.name, target.map { "\($0)" } ?? "-", target == nil ? nil : route.probe)
            },
            draining: draining,
            now: now,
            maximumAge: self.readinessSettings.maximumAge
        )
    }

    /// A snapshot for the status page. Connections are read on their own event loops, so call
    /// this off the event loops (the admin server does, from a task).
    package func status(version: String) async -> GatewayStatus {
        let now = NIODeadline.now()
        let (settings, routes, activeByRoute, connections, active, draining, awaitingBind) = self.state.withLockedValue {
            state in
            (
                state.settings,
                state.settings.routes.compactMap { state.routes[$0.name] },
                state.activeByRoute,
                state.connections.sorted { $0.key < $1.key }.map(\.value),
                state.activeConnections,
                state.draining,
                state.routing.count
            )
        }
        let readiness = self.readiness(now: now)
        let routeStatus = routes.map { route -> RouteStatus in
            let current = route.settings
            var servers: [String] = []
            if case .transparent(let networks) = current.mode { servers = networks.map(\.description) }
            return RouteStatus(
                name: route.name,
                mode: current.mode.name,
                servers: servers,
                listenAddress: current.listenAddress,
                epmPort: current.epmPort,
                ports: current.ports,
                advertiseAddress: current.advertiseAddress,
                upstreamHost: current.upstreamHost,
                upstreamAddress: route.upstreamAddress,
                upstreamEPMPort: current.upstreamEPMPort,
                via: current.via,
                policyName: current.policy.name,
                policyDefault: current.policy.defaultAction,
                ruleCount: current.policy.rules.count,
                activeConnections: activeByRoute[route.name, default: 0],
                maximumConnections: current.maximumConnections,
                mappingIdleTimeout: .nanoseconds(route.pool.idleTimeout.nanoseconds),
                mappings: route.pool.mappings.map { MappingStatus($0, now: now, idleTimeout: route.pool.idleTimeout) },
                readiness: readiness.routes.first { $0.name == route.name }
                    ?? ReadinessReport.Route(
                        name: route.name,
                        upstream: self.probeTarget(route).map { "\($0)" } ?? "-",
                        ready: false,
                        lastSuccessAge: nil,
                        lastError: nil,
                        consecutiveFailures: 0
                    )
            )
        }
        let listed = connections.prefix(Self.statusConnectionLimit)
        var snapshots: [ConnectionStatus] = []
        snapshots.reserveCapacity(listed.count)
        for connection in listed {
            if let snapshot = try? await connection.eventLoop.submit({ connection.value.snapshot(now: now) }).get() {
                snapshots.append(snapshot)
            }
        }
        let denials = self.denials.snapshot
        return GatewayStatus(
            version: version,
            generatedAt: .now(),
            startedAt: self.startedWallClock,
            uptime: .nanoseconds((now - self.startedAt).nanoseconds),
            draining: draining,
            activeConnections: active,
            maximumConnections: settings.limits.maximumConnections,
            routes: routeStatus,
            connections: snapshots,
            connectionsOmitted: max(0, active - snapshots.count - awaitingBind),
            connectionsAwaitingBind: awaitingBind,
            denials: denials.denials,
            denialsTotal: denials.total,
            readiness: readiness,
            traffic: self.denials.traffic.snapshot
        )
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

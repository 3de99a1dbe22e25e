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
package final class GatewayServer: Sendable {
    private let group: any EventLoopGroup
    private let logger: Logger
    private let metrics: GatewayMetrics
    private let audit: AuditLog?
    private let tlsMetrics: TLSMetrics
    private let state: NIOLockedValueBox<State>

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
        var nextConnectionID = 0
        var activeConnections = 0
        var activeByRoute: [String: Int] = [:]
        var expiryTask: RepeatedTask?
        var draining = false
        var peers: [String: PeerRuntime] = [:]
        var core: CoreListener?
    }

    /// - Parameter audit: where bind decisions and denied or audited calls are recorded. The
    ///   caller owns it and shuts it down after ``stop()``.
    package init(
        settings: GatewaySettings,
        group: any EventLoopGroup,
        logger: Logger,
        metrics: GatewayMetrics = GatewayMetrics(),
        audit: AuditLog? = nil,
        tlsMetrics: TLSMetrics? = nil
    ) {
        self.group = group
        self.logger = logger
        self.metrics = metrics
        self.audit = audit
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
        self.state.withLockedValue { $0.expiryTask = expiry }
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
            let address = try Self.resolveIPv4(route.upstreamHost)
            routes[route.name] = RouteRuntime(
                settings: route,
                upstreamAddress: address,
                metrics: self.metrics.route(route.name),
                logger: self.logger,
                audit: self.audit
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
                let channel = try await self.bind(key, route: want.route, kind: want.kind)
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
                    "upstream": "\(runtime.upstreamAddress):\(route.upstreamEPMPort)",
                ]
            )
        }
        for name in existing.keys where routes[name] == nil {
            self.logger.info("route removed; its connections drain", metadata: ["route": "\(name)"])
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
        let connections = self.state.withLockedValue { Array($0.connections.values) }
        self.logger.info("draining", metadata: ["connections": "\(connections.count)", "deadline": "\(deadline)"])
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
        let (channels, expiry) = self.state.withLockedValue { state in
            let result = (state.listeners.values.map(\.channel), state.expiryTask)
            state.listeners = [:]
            state.expiryTask = nil
            return result
        }
        expiry?.cancel()
        for channel in channels { try? await channel.close() }
    }

    // MARK: - Listening

    private func bind(_ key: ListenerKey, route: String, kind: GatewayMetrics.Listener) async throws -> any Channel {
        do {
            return try await ServerBootstrap(group: self.group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
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
            route?.logger.warning("connection refused: connection cap reached or draining", metadata: ["client": "\(client.remoteAddress.map { "\($0)" } ?? "?")"])
            return client.close()
        }
        route.metrics.connectionOpened(listener: listener)

        let server: TCPEndpoint
        switch listener {
        case .epm:
            server = TCPEndpoint(address: route.upstreamAddress, port: route.identity.upstreamEPMPort)
        case .mapped:
            guard let mapped = route.pool.connectionOpened(port: listenerPort) else {
                self.released(route: route, listenerPort: nil, connectionID: connectionID)
                route.metrics.connectionRefused(reason: .unmappedPort)
                route.logger.notice(
                    "connection to an unmapped gateway port closed",
                    metadata: ["port": "\(listenerPort)", "client": "\(client.remoteAddress.map { "\($0)" } ?? "?")"]
                )
                return client.close()
            }
            server = mapped
        }
        let mappedPort: UInt16? = listener == .mapped ? listenerPort : nil
        let clientIP = client.remoteAddress?.ipAddress.flatMap { IPAddress($0) } ?? .v4(0)
        let facing = client.localAddress?.ipAddress.flatMap { IPv4Address($0) }
        let limits = settings.wireLimits
        let timeouts = settings.timeouts
        let machine = RPCConnectionStateMachine(
            role: listener == .epm ? .endpointMapper : .mapped,
            policy: route.policy.policy,
            client: clientIP,
            limits: limits
        )
        let connection = RPCProxyConnection(
            route: route,
            listener: listener,
            machine: machine,
            clientAddress: client.remoteAddress,
            clientFacingAddress: facing,
            serverEndpoint: server,
            eventLoop: client.eventLoop,
            timeouts: timeouts,
            limits: limits
        ) { [self] in
            self.released(route: route, listenerPort: mappedPort, connectionID: connectionID)
        }
        let bound = NIOLoopBound(connection, eventLoop: client.eventLoop)
        let peer: PeerRuntime? = self.state.withLockedValue { state in
            route.settings.via.flatMap { state.peers[$0] }
        }
        self.state.withLockedValue { $0.connections[connectionID] = bound }
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
        } else {
            connected = ClientBootstrap(group: client.eventLoop)
                .connectTimeout(TimeAmount(timeouts.connectDuration))
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: "\(server.address)", port: Int(server.port))
        }
        return connected
            .assumeIsolated()
            .flatMap { upstream in
                do {
                    try connection.install(client: client, server: upstream)
                } catch {
                    upstream.close(promise: nil)
                    connection.close(.protocolError)
                    return client.eventLoop.makeFailedFuture(error)
                }
                return client.eventLoop.makeSucceededVoidFuture()
            }
            .flatMapError { error in
                route.metrics.connectionRefused(reason: peer == nil ? .upstreamUnreachable : .peerUnreachable)
                route.logger.warning(
                    peer == nil ? "upstream unreachable" : "core gateway unreachable",
                    metadata: [
                        "server": "\(server)", "client": "\(client.remoteAddress.map { "\($0)" } ?? "?")",
                        "via": "\(peer.map { "\($0.settings.name) \($0.settings.host):\($0.settings.port)" } ?? "-")", "error": "\(error)",
                    ]
                )
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
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeouts.connectDuration))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
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
                audit: self.audit
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

    // MARK: - Resolution

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

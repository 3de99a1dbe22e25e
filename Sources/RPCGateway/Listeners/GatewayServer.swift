package import Logging
import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix
import RPCPolicy
import RPCWire

/// Errors that stop the gateway from starting.
package struct GatewayStartError: Error, CustomStringConvertible {
    package var description: String
}

/// The data plane: for every route, an endpoint-mapper listener and one listener per port of the
/// route's range, each connection spliced to the route's server through the inspection handlers.
///
/// All ports of a range are bound at start, so a connection to a port this instance did not hand
/// out is answered (closed and counted) rather than refused by the kernel.
package final class GatewayServer: Sendable {
    private let settings: GatewaySettings
    private let group: any EventLoopGroup
    private let logger: Logger
    private let metrics: GatewayMetrics
    private let state = NIOLockedValueBox(State())

    private struct State {
        var routes: [RouteRuntime] = []
        var channels: [any Channel] = []
        var activeConnections = 0
        var activeByRoute: [String: Int] = [:]
        var expiryTask: RepeatedTask?
    }

    package init(settings: GatewaySettings, group: any EventLoopGroup, logger: Logger, metrics: GatewayMetrics = GatewayMetrics()) {
        self.settings = settings
        self.group = group
        self.logger = logger
        self.metrics = metrics
    }

    /// Addresses of the endpoint-mapper listeners, by route name (useful with port 0 in tests).
    package var endpointMapperAddresses: [String: SocketAddress] {
        self.state.withLockedValue { state in
            var result: [String: SocketAddress] = [:]
            for (route, channel) in zip(state.routes, state.channels.prefix(state.routes.count)) {
                result[route.settings.name] = channel.localAddress
            }
            return result
        }
    }

    /// Resolves upstreams and binds every listener. Throws (after closing what it bound) when an
    /// address cannot be bound or an upstream cannot be resolved.
    package func start() async throws {
        var routes: [RouteRuntime] = []
        for route in self.settings.routes {
            let address = try Self.resolveIPv4(route.upstreamHost)
            routes.append(
                RouteRuntime(
                    settings: route,
                    upstreamAddress: address,
                    metrics: self.metrics.route(route.name),
                    timeouts: self.settings.timeouts,
                    wireLimits: self.settings.wireLimits,
                    logger: self.logger
                )
            )
        }
        var bound: [any Channel] = []
        do {
            // Endpoint-mapper listeners first, so `endpointMapperAddresses` can pair them by index.
            for route in routes {
                bound.append(try await self.bind(route: route, port: Int(route.settings.epmPort), listener: .epm))
            }
            for route in routes {
                for port in route.settings.ports {
                    bound.append(try await self.bind(route: route, port: Int(port), listener: .mapped))
                }
                self.logger.info(
                    "route listening",
                    metadata: [
                        "route": "\(route.settings.name)",
                        "epm": "\(route.settings.listenAddress):\(route.settings.epmPort)",
                        "ports": "\(route.settings.ports.lowerBound)-\(route.settings.ports.upperBound)",
                        "upstream": "\(route.upstreamAddress):\(route.settings.upstreamEPMPort)",
                    ]
                )
            }
        } catch {
            for channel in bound { try? await channel.close() }
            throw error
        }
        let frozenRoutes = routes
        let expiry = self.group.next().scheduleRepeatedTask(initialDelay: .seconds(5), delay: .seconds(5)) { _ in
            for route in frozenRoutes {
                let released = route.pool.expireIdle()
                if !released.isEmpty {
                    route.logger.debug("port mappings expired", metadata: ["ports": "\(released)"])
                }
            }
        }
        self.state.withLockedValue { state in
            state.routes = routes
            state.channels = bound
            state.expiryTask = expiry
        }
    }

    /// Closes every listener and every connection.
    package func stop() async {
        let (channels, expiry) = self.state.withLockedValue { state in
            let result = (state.channels, state.expiryTask)
            state.channels = []
            state.expiryTask = nil
            return result
        }
        expiry?.cancel()
        for channel in channels { try? await channel.close() }
    }

    // MARK: - Listening

    private func bind(route: RouteRuntime, port: Int, listener: GatewayMetrics.Listener) async throws -> any Channel {
        let host = route.settings.listenAddress
        do {
            return try await ServerBootstrap(group: self.group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { [self] channel in
                    self.accept(channel, route: route, listenerPort: UInt16(port), listener: listener)
                }
                .bind(host: host, port: port)
                .get()
        } catch {
            throw GatewayStartError(description: "route \(route.settings.name): cannot listen on \(host):\(port): \(error)")
        }
    }

    /// Admits a client connection: caps, the server it goes to, the upstream connection, then the
    /// handlers. Returning the connect future delays reads until the splice is in place.
    private func accept(_ client: any Channel, route: RouteRuntime, listenerPort: UInt16, listener: GatewayMetrics.Listener)
        -> EventLoopFuture<Void>
    {
        let name = route.settings.name
        let admitted = self.state.withLockedValue { state -> Bool in
            guard state.activeConnections < self.settings.limits.maximumConnections,
                state.activeByRoute[name, default: 0] < route.settings.maximumConnections
            else { return false }
            state.activeConnections += 1
            state.activeByRoute[name, default: 0] += 1
            return true
        }
        guard admitted else {
            route.metrics.connectionRefused(reason: .cap)
            route.logger.warning("connection refused: connection cap reached", metadata: ["client": "\(client.remoteAddress.map { "\($0)" } ?? "?")"])
            return client.close()
        }
        route.metrics.connectionOpened(listener: listener)

        let server: TCPEndpoint
        switch listener {
        case .epm:
            server = TCPEndpoint(address: route.upstreamAddress, port: route.settings.upstreamEPMPort)
        case .mapped:
            guard let mapped = route.pool.connectionOpened(port: listenerPort) else {
                self.released(route: route, listenerPort: nil)
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
        let machine = RPCConnectionStateMachine(
            role: listener == .epm ? .endpointMapper : .mapped,
            policy: route.settings.policy,
            client: clientIP,
            limits: route.wireLimits
        )
        let connection = RPCProxyConnection(
            route: route,
            listener: listener,
            machine: machine,
            clientAddress: client.remoteAddress,
            clientFacingAddress: facing,
            serverEndpoint: server,
            eventLoop: client.eventLoop
        ) { [self] in
            self.released(route: route, listenerPort: mappedPort)
        }
        let timeouts = self.settings.timeouts
        let limits = route.wireLimits
        return ClientBootstrap(group: client.eventLoop)
            .connectTimeout(TimeAmount(timeouts.connectDuration))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: "\(server.address)", port: Int(server.port))
            .assumeIsolated()
            .flatMap { upstream in
                do {
                    try connection.install(client: client, server: upstream, timeouts: timeouts, limits: limits)
                } catch {
                    upstream.close(promise: nil)
                    connection.close(.protocolError)
                    return client.eventLoop.makeFailedFuture(error)
                }
                return client.eventLoop.makeSucceededVoidFuture()
            }
            .flatMapError { error in
                route.metrics.connectionRefused(reason: .upstreamUnreachable)
                route.logger.warning(
                    "upstream unreachable",
                    metadata: ["server": "\(server)", "client": "\(client.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(error)"]
                )
                connection.close(.upstreamUnreachable)
                return client.close()
            }
            .nonisolated()
    }

    private func released(route: RouteRuntime, listenerPort: UInt16?) {
        self.state.withLockedValue { state in
            state.activeConnections -= 1
            state.activeByRoute[route.settings.name, default: 1] -= 1
        }
        route.metrics.connectionClosed()
        if let port = listenerPort {
            route.pool.connectionClosed(port: port)
        }
    }

    // MARK: - Resolution

    /// An IPv4 literal, or the address a host name resolves to (once, at start). The tower floor
    /// and the port pool are IPv4-only (C706 App. L has no IPv6 floor).
    static func resolveIPv4(_ host: String) throws -> IPv4Address {
        if let literal = IPv4Address(host) { return literal }
        guard let resolved = try? SocketAddress.makeAddressResolvingHost(host, port: 0),
            let text = resolved.ipAddress, let address = IPv4Address(text)
        else {
            throw GatewayStartError(description: "cannot resolve upstream \(host) to an IPv4 address")
        }
        return address
    }
}

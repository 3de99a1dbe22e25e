import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RPCPolicy
import RPCWire

/// Listening and accepting: each listener's connections are admitted (``Admission``), planned
/// (``AcceptPlan``) and started (``Splicer``).
extension GatewayServer {
    func bind(
        _ key: ListenerKey,
        route: String,
        kind: GatewayMetrics.Listener,
        reusePort: Bool
    ) async throws -> any Channel {
        do {
            return try await ServerBootstrap.proxiedConnections(group: self.group)
                .serverChannelOption(.socketOption(reusePortOption), value: reusePort ? 1 : 0)
                .childChannelInitializer { [self] channel in
                    do { try ProxiedChannelOptions.apply(to: channel) } catch { return channel.close() }
                    return self.accept(channel, routeName: route, listenerPort: key.port, listener: kind)
                }
                .bind(host: key.host, port: Int(key.port))
                .get()
        } catch {
            throw GatewayStartError(description: "route \(route): cannot listen on \(key.host):\(key.port): \(error)")
        }
    }

    /// Admits a client connection (caps), plans it (``AcceptPlan``) and starts it (``Splicer``).
    /// Returning the splice future delays reads until a connection whose server is known is
    /// spliced.
    private func accept(
        _ client: any Channel,
        routeName: String,
        listenerPort: UInt16,
        listener: GatewayMetrics.Listener
    )
        -> EventLoopFuture<Void>
    {
        let (route, settings, peers) = self.state.withLockedValue { ($0.routes[routeName], $0.settings, $0.peers) }
        guard let route else { return client.close() }
        // Read once: each read of a channel's address takes its lock.
        let remote = client.remoteAddress
        let clientIP = IPAddress(remote)
        let sourceLimits = settings.limits.perSource.overridden(
            maximumConnections: route.settings.maximumConnectionsPerSource,
            newConnectionsPerSecond: route.settings.newConnectionsPerSecondPerSource
        )
        let admission = self.admission.admit(
            route: routeName,
            routeLimit: route.settings.maximumConnections,
            globalLimit: settings.limits.maximumConnections,
            source: clientIP,
            sourceLimits: sourceLimits
        )
        let ticket: Admission.Ticket
        switch admission {
        case .success(let admitted):
            ticket = admitted
        case .failure(let refusal):
            Self.logRefusal(refusal, route: route, client: client)
            return client.close()
        }
        route.metrics.connectionOpened(listener: listener)
        let admitted = Splicer.Admitted(
            ticket: ticket,
            admission: self.admission,
            route: route,
            listener: listener,
            timeouts: settings.timeouts,
            limits: settings.wireLimits
        )
        let destination: EventLoopFuture<AcceptPlan.Destination>
        if case .transparent = route.identity.mode {
            // REDIRECT/DNAT: SO_ORIGINAL_DST. TPROXY: the socket's local address already is the
            // original destination (and a direct connection to the gateway names the gateway
            // itself, which is not in `servers`).
            destination = originalDestination(of: client).map { redirected in
                (redirected ?? localDestination(of: client)).map(AcceptPlan.Destination.original) ?? .unknown
            }
        } else {
            destination = client.eventLoop.makeSucceededFuture(.notAsked)
        }
        return destination.assumeIsolated().flatMap { [self] destination in
            let current = route.settings
            let plan = AcceptPlan.plan(
                mode: route.identity.mode,
                listener: listener,
                listenerPort: listenerPort,
                epmPort: route.identity.epmPort,
                upstream: route.upstreamAddress,
                upstreamEPMPort: route.identity.upstreamEPMPort,
                mapping: listener == .mapped ? route.pool.server(forPort: listenerPort) : nil,
                destination: destination,
                admitsServer: current.admitsServer,
                portMapping: route.identity.portMapping,
                serverPortsListen: route.identity.serverPortsListen,
                admitsServerPort: current.allowsServerPort,
                pinholeOpen: current.pinholes == .learned
                    ? { [pinholes = route.pinholes] in pinholes.isOpen(client: clientIP ?? .v4(0), server: $0) } : nil,
                passesProtectedEndpointMapper: current.passesProtectedEndpointMapper
            )
            guard
                let machine = plan.machine(
                    policy: route.policy.policy,
                    client: clientIP ?? .v4(0),
                    limits: admitted.limits
                )
            else {
                if case .refuse(let reason, let message) = plan.action {
                    Splicer.refuse(reason, message, admitted, client: remote)
                }
                return client.close()
            }
            let upstream: UpstreamConnector
            if let via = current.via {
                upstream = UpstreamConnection.tunnel(
                    via: via,
                    peer: peers[via],
                    client: remote,
                    gateway: client.localAddress,
                    timeouts: admitted.timeouts,
                    tlsMetrics: self.tlsMetrics,
                    logger: route.logger
                )
            } else {
                upstream = UpstreamConnection.direct(timeouts: admitted.timeouts)
            }
            let (handler, spliced) = self.splicer.start(
                plan,
                machine: machine,
                admitted,
                client: Splicer.Client(
                    address: remote,
                    ip: clientIP ?? .v4(0),
                    localAddress: client.localAddress,
                    facingAddress: IPv4Address(client.localAddress)
                ),
                eventLoop: client.eventLoop,
                upstream: upstream
            )
            do {
                try client.pipeline.syncOperations.addHandler(handler)
            } catch {
                handler.abandon()
                return client.eventLoop.makeFailedFuture(error)
            }
            // A failed upstream has closed the connection (and so the client) already.
            return spliced.recover { _ in }
        }.nonisolated()
    }

    /// Counts a refused connection and logs it: a source over its own limit at most once per
    /// interval (``SourceTable``), so a flood cannot flood the log.
    private static func logRefusal(_ refusal: Admission.Refusal, route: RouteRuntime, client: any Channel) {
        let metadata: Logger.Metadata = [
            "client": "\(HostPort.text(client.remoteAddress))", "gateway": "\(HostPort.text(client.localAddress))",
        ]
        switch refusal {
        case .draining:
            route.metrics.connectionRefused(reason: .draining)
            route.logger.notice("connection refused: draining", metadata: metadata)
        case .cap:
            route.metrics.connectionRefused(reason: .cap)
            route.logger.warning("connection refused: connection cap reached", metadata: metadata)
        case .source(let why, let source, let log, let suppressed):
            route.metrics.connectionRefused(reason: .sourceLimit)
            guard log else { return }
            var metadata = metadata
            metadata["source"] = "\(source)"
            metadata["suppressed"] = "\(suppressed)"
            route.logger.warning("connection refused: \(why) (logged once a minute per source)", metadata: metadata)
        }
    }
}

package import Logging
import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import RPCPolicy
package import RPCWire

/// The core role: one mutual-TLS listener for edge gateways.
///
/// Each connection must complete the TLS handshake with a certificate from the configured CA whose
/// subject alternative names include an allowed entry, then send a PROXY v2 header with the real
/// client's address and an ``RPCGateTarget`` TLV, all within `header_timeout`. The target must be
/// one of `core.upstreams` (the endpoint mapper on `upstream_epm_port`, or any port of it for a
/// mapped endpoint): anything else is refused and counted, so the core is never an open relay.
///
/// The connection is then inspected exactly like a plain gateway's, with the core's policy and the
/// real client address (policy `sources`, logs and the audit log see the client, not the edge).
/// Endpoint-mapper connections keep the server's ports in their replies (towers the core's policy
/// hides are still redacted): the edge, which the client talks to, rewrites them to its own ports.
package final class CoreListener: Sendable {
    private let group: any EventLoopGroup
    private let logger: Logger
    private let metrics: RouteMetrics
    private let tlsMetrics: TLSMetrics
    private let audit: AuditLog?
    /// Where refused binds and calls are kept for the status page (the gateway's).
    private let denials: RecentDenials?
    private let state: NIOLockedValueBox<State>
    /// Caps, ids and the registry of tunnelled connections.
    private let admission: Admission
    private let splicer: Splicer

    private struct State {
        var settings: CoreSettings
        var timeouts: Timeouts
        var limits: WireLimits
        var context: NIOSSLContext
        var runtimes: [IPv4Address: RouteRuntime] = [:]
        var channel: (any Channel)?
    }

    /// The route name core connections are logged and counted under.
    package static let routeName = "core"

    /// Builds the TLS context: throws when a certificate, key or CA file cannot be loaded.
    package init(
        settings: CoreSettings,
        timeouts: Timeouts,
        limits: WireLimits,
        group: any EventLoopGroup,
        logger: Logger,
        metrics: GatewayMetrics,
        tlsMetrics: TLSMetrics,
        audit: AuditLog?,
        denials: RecentDenials? = nil,
        ids: ConnectionIDs? = nil
    ) throws {
        self.group = group
        self.logger = logger
        self.metrics = metrics.route(Self.routeName)
        self.tlsMetrics = tlsMetrics
        self.audit = audit
        self.denials = denials
        self.admission = Admission(ids: ids ?? ConnectionIDs())
        self.splicer = Splicer(tlsMetrics: tlsMetrics)
        let context = try TLSContexts.server(settings.tls)
        self.state = NIOLockedValueBox(State(settings: settings, timeouts: timeouts, limits: limits, context: context))
        self.state.withLockedValue { state in
            state.runtimes = self.makeRuntimes(settings, existing: [:])
        }
    }

    /// The bound listener address (useful with port 0 in tests).
    package var localAddress: SocketAddress? { self.state.withLockedValue { $0.channel?.localAddress } }

    package var activeConnections: Int { self.admission.active }

    /// The allow list in force (the last one applied).
    var allowList: PeerAllowList { self.state.withLockedValue { PeerAllowList($0.settings.allowedPeers) } }

    package func start() async throws {
        let settings = self.state.withLockedValue { $0.settings }
        let channel = try await self.bind(settings)
        self.state.withLockedValue { $0.channel = channel }
        self.logger.info(
            "core listening",
            metadata: [
                "listen": "\(settings.listenHost):\(settings.listenPort)",
                "upstreams": "\(settings.upstreams.map(\.description).joined(separator: ","))",
                "allow": "\(settings.allowedPeers.joined(separator: ","))",
            ]
        )
    }

    /// Reload: new certificates, key and CA for new connections (established ones keep theirs), the
    /// new policy, upstreams and allow list; the listener is re-bound only if its address changed.
    /// Throws, changing nothing, when the new TLS files cannot be loaded.
    package func apply(_ settings: CoreSettings, timeouts: Timeouts, limits: WireLimits) async throws {
        let context = try TLSContexts.server(settings.tls)
        let rebind: (any Channel)? = self.state.withLockedValue { state in
            let moved =
                state.settings.listenHost != settings.listenHost || state.settings.listenPort != settings.listenPort
            state.runtimes = self.makeRuntimes(settings, existing: state.runtimes)
            state.settings = settings
            state.timeouts = timeouts
            state.limits = limits
            state.context = context
            return moved ? state.channel : nil
        }
        self.logger.info("core TLS context and settings reloaded")
        if let old = rebind {
            try? await old.close()
            let channel = try await self.bind(settings)
            self.state.withLockedValue { $0.channel = channel }
        }
    }

    /// Stops accepting, lets calls in flight finish for up to `deadline`, then closes the rest.
    package func drain(deadline: Duration) async {
        let channel = self.state.withLockedValue { state in
            defer { state.channel = nil }
            return state.channel
        }
        let connections = self.admission.beginDraining()
        try? await channel?.close()
        await self.admission.drain(connections, deadline: deadline, logger: self.logger)
    }

    // MARK: - Runtimes

    /// One route runtime per allowed upstream (the runtime carries the server address that tower
    /// checks compare against), all counted as route `core`.
    private func makeRuntimes(
        _ settings: CoreSettings,
        existing: [IPv4Address: RouteRuntime]
    ) -> [IPv4Address: RouteRuntime] {
        var runtimes: [IPv4Address: RouteRuntime] = [:]
        for upstream in settings.upstreams {
            var route = RouteSettings(
                name: Self.routeName,
                listenAddress: settings.listenHost,
                epmPort: UInt16(clamping: settings.listenPort),
                upstreamHost: "\(upstream)",
                upstreamEPMPort: settings.upstreamEPMPort,
                ports: 1...1,
                policy: settings.policy,
                maximumConnections: settings.maximumConnections
            )
            route.via = nil
            if let current = existing[upstream], current.identity == RouteIdentity(route) {
                current.update(route)
                runtimes[upstream] = current
            } else {
                runtimes[upstream] = RouteRuntime(
                    settings: route,
                    upstreamAddress: upstream,
                    metrics: self.metrics,
                    logger: self.logger,
                    audit: self.audit,
                    denials: self.denials
                )
            }
        }
        return runtimes
    }

    // MARK: - Accepting

    private func bind(_ settings: CoreSettings) async throws -> any Channel {
        do {
            return try await ServerBootstrap.proxiedConnections(group: self.group)
                .childChannelInitializer { [self] channel in
                    do { try ProxiedChannelOptions.apply(to: channel) } catch { return channel.close() }
                    let (context, timeout) = self.state.withLockedValue { ($0.context, $0.settings.headerTimeout) }
                    do {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                        try channel.pipeline.syncOperations.addHandler(
                            CoreAdmissionHandler(core: self, timeout: TimeAmount(timeout))
                        )
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                .bind(host: settings.listenHost, port: settings.listenPort)
                .get()
        } catch {
            throw GatewayStartError(
                description: "core: cannot listen on \(settings.listenHost):\(settings.listenPort): \(error)"
            )
        }
    }

    // MARK: - Events from the admission handler

    func handshake(
        _ result: TLSHandshakeResult,
        peer: String,
        address: SocketAddress?,
        identity: [PeerName],
        error: (any Error)? = nil
    ) {
        self.tlsMetrics.handshake(peer: peer, result: result)
        var metadata: Logger.Metadata = [
            "peer_address": "\(address.map { "\($0)" } ?? "?")",
            "identity": "\(identity.isEmpty ? "none" : identity.map(\.description).joined(separator: ","))",
            "result": "\(result.rawValue)",
        ]
        if let error { metadata["error"] = "\(error)" }
        if result == .success {
            self.logger.info("edge TLS handshake", metadata: metadata)
        } else {
            self.metrics.connectionRefused(reason: .tls)
            self.logger.warning("edge TLS handshake refused", metadata: metadata)
        }
    }

    func refuse(
        _ reason: GatewayMetrics.RefusalReason,
        _ message: Logger.Message,
        address: SocketAddress?,
        detail: String
    ) {
        self.metrics.connectionRefused(reason: reason)
        self.logger.warning(
            message,
            metadata: ["peer_address": "\(address.map { "\($0)" } ?? "?")", "detail": "\(detail)"]
        )
    }

    /// Whether a target is one this core may connect to.
    func allows(_ target: RPCGateTarget) -> Bool {
        self.state.withLockedValue { state in
            guard state.settings.upstreams.contains(target.server.address) else { return false }
            return target.kind == .mapped || target.server.port == state.settings.upstreamEPMPort
        }
    }

    /// Admits an authenticated tunnelled connection: caps, the upstream connection, the inspection
    /// handlers. Succeeds with the client-side handler to install in place of the admission
    /// handler once the upstream is connected.
    func admit(
        _ tunnel: any Channel,
        client: SocketAddress?,
        clientIP: IPAddress,
        target: RPCGateTarget,
        peer: String
    ) -> EventLoopFuture<[any ChannelHandler]> {
        let (route, settings, timeouts, limits) = self.state.withLockedValue { state in
            (state.runtimes[target.server.address], state.settings, state.timeouts, state.limits)
        }
        guard let route else {
            self.refuse(
                .cap,
                "tunnelled connection refused: no route",
                address: tunnel.remoteAddress,
                detail: "\(target)"
            )
            return tunnel.eventLoop.makeFailedFuture(GatewayStartError(description: "refused"))
        }
        let ticket: Admission.Ticket
        switch self.admission.admit(
            route: Self.routeName,
            routeLimit: settings.maximumConnections,
            globalLimit: settings.maximumConnections,
            source: clientIP,
            sourceLimits: settings.perSource
        ) {
        case .success(let admitted):
            ticket = admitted
        case .failure(.source(let why, let source, let log, let suppressed)):
            self.metrics.connectionRefused(reason: .sourceLimit)
            if log {
                self.logger.warning(
                    "tunnelled connection refused: \(why) (logged once a minute per source)",
                    metadata: [
                        "client": "\(client.map { "\($0)" } ?? "?")", "source": "\(source)",
                        "suppressed": "\(suppressed)", "edge": "\(peer)",
                    ]
                )
            }
            return tunnel.eventLoop.makeFailedFuture(GatewayStartError(description: "refused"))
        case .failure:
            self.refuse(
                .cap,
                "tunnelled connection refused: cap reached or draining",
                address: tunnel.remoteAddress,
                detail: "\(target)"
            )
            return tunnel.eventLoop.makeFailedFuture(GatewayStartError(description: "refused"))
        }
        let listener: GatewayMetrics.Listener = target.kind == .endpointMapper ? .epm : .mapped
        route.metrics.connectionOpened(listener: listener)
        route.logger.info(
            "tunnelled connection",
            metadata: ["client": "\(client.map { "\($0)" } ?? "?")", "edge": "\(peer)", "server": "\(target)"]
        )
        let role: ConnectionStateMachine.Role = target.kind == .endpointMapper ? .endpointMapper : .mapped
        let plan = AcceptPlan(action: .splice(role: role, server: target.server))
        let machine = ConnectionStateMachine(
            role: role,
            policy: route.policy.policy,
            client: clientIP,
            limits: limits,
            server: target.server
        )
        let (handler, spliced) = self.splicer.start(
            plan,
            machine: machine,
            Splicer.Admitted(
                ticket: ticket,
                admission: self.admission,
                route: route,
                listener: listener,
                timeouts: timeouts,
                limits: limits
            ),
            client: Splicer.Client(
                address: client,
                ip: clientIP,
                localAddress: tunnel.localAddress,
                facingAddress: nil
            ),
            eventLoop: tunnel.eventLoop,
            upstream: UpstreamConnection.direct(timeouts: timeouts),
            endpointMapperMode: .redactOnly
        )
        return spliced.assumeIsolated().map { [handler] as [any ChannelHandler] }.nonisolated()
    }
}

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

    private struct State {
        var settings: CoreSettings
        var timeouts: Timeouts
        var limits: WireLimits
        var context: NIOSSLContext
        var runtimes: [IPv4Address: RouteRuntime] = [:]
        var channel: (any Channel)?
        var connections: [Int: NIOLoopBound<RPCProxyConnection>] = [:]
        var nextConnectionID = 0
        var activeConnections = 0
        var draining = false
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
        denials: RecentDenials? = nil
    ) throws {
        self.group = group
        self.logger = logger
        self.metrics = metrics.route(Self.routeName)
        self.tlsMetrics = tlsMetrics
        self.audit = audit
        self.denials = denials
        let context = try TLSContexts.server(settings.tls)
        self.state = NIOLockedValueBox(State(settings: settings, timeouts: timeouts, limits: limits, context: context))
        self.state.withLockedValue { state in
            state.runtimes = self.makeRuntimes(settings, existing: [:])
        }
    }

    /// The bound listener address (useful with port 0 in tests).
    package var localAddress: SocketAddress? { self.state.withLockedValue { $0.channel?.localAddress } }

    package var activeConnections: Int { self.state.withLockedValue { $0.activeConnections } }

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
        let (channel, connections) = self.state.withLockedValue { state in
            state.draining = true
            let channel = state.channel
            state.channel = nil
            return (channel, Array(state.connections.values))
        }
        try? await channel?.close()
        for connection in connections {
            connection.eventLoop.execute { connection.value.drain() }
        }
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        while clock.now < end, self.activeConnections > 0 {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for connection in self.state.withLockedValue({ Array($0.connections.values) }) {
            connection.eventLoop.execute { connection.value.close(.shutdown) }
        }
        for _ in 0..<40 where self.activeConnections > 0 {
            try? await Task.sleep(for: .milliseconds(50))
        }
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
    /// handlers. Succeeds with the client-side handlers to install in place of the admission
    /// handler.
    func admit(
        _ tunnel: any Channel,
        client: SocketAddress?,
        clientIP: IPAddress,
        target: RPCGateTarget,
        peer: String
    ) -> EventLoopFuture<[any ChannelHandler]> {
        let admission = self.state.withLockedValue { state -> (RouteRuntime, Timeouts, WireLimits, Int)? in
            guard !state.draining, let route = state.runtimes[target.server.address],
                state.activeConnections < state.settings.maximumConnections
            else { return nil }
            state.activeConnections += 1
            state.nextConnectionID += 1
            return (route, state.timeouts, state.limits, state.nextConnectionID)
        }
        guard let (route, timeouts, limits, connectionID) = admission else {
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
        let machine = RPCConnectionStateMachine(
            role: target.kind == .endpointMapper ? .endpointMapper : .mapped,
            policy: route.policy.policy,
            client: clientIP,
            limits: limits
        )
        let connection = RPCProxyConnection(
            id: connectionID,
            route: route,
            listener: listener,
            machine: machine,
            clientAddress: client,
            localAddress: tunnel.localAddress,
            clientFacingAddress: nil,
            serverEndpoint: target.server,
            eventLoop: tunnel.eventLoop,
            timeouts: timeouts,
            limits: limits,
            endpointMapperMode: .redactOnly
        ) { [self] in
            self.state.withLockedValue { state in
                state.activeConnections -= 1
                state.connections.removeValue(forKey: connectionID)
            }
            route.metrics.connectionClosed()
        }
        route.logger.info(
            "tunnelled connection",
            metadata: ["client": "\(client.map { "\($0)" } ?? "?")", "edge": "\(peer)", "server": "\(target)"]
        )
        let bound = NIOLoopBound(connection, eventLoop: tunnel.eventLoop)
        self.state.withLockedValue { $0.connections[connectionID] = bound }
        let loop = tunnel.eventLoop
        return loop.makeCompletedFuture(withResultOf: { try target.server.socketAddress() })
            .flatMap { address in
                ClientBootstrap.proxiedConnection(on: loop, timeouts: timeouts)
                    .connect(to: address)
            }
            .assumeIsolated()
            .flatMapThrowing { upstream -> [any ChannelHandler] in
                let handlers = connection.makeHandlers()
                do {
                    try upstream.pipeline.syncOperations.addHandler(handlers.server)
                } catch {
                    upstream.close(promise: nil)
                    connection.close(.protocolError)
                    throw error
                }
                return [handlers.client]
            }
            .flatMapErrorThrowing { error in
                route.metrics.connectionRefused(reason: .upstreamUnreachable)
                route.logger.warning(
                    "upstream unreachable",
                    metadata: [
                        "server": "\(target.server)", "client": "\(client.map { "\($0)" } ?? "?")", "error": "\(error)",
                    ]
                )
                connection.close(.upstreamUnreachable)
                throw error
            }
            .nonisolated()
    }
}

/// The first handler after TLS on a core connection: checks the edge's certificate against the
/// allow list once the handshake completes, reads the PROXY v2 header (bounded in size by the
/// codec and in time by `timeout`), asks the core to admit the connection, then replaces itself
/// with the inspection handlers and passes on the bytes that followed the header.
final class CoreAdmissionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum State {
        case handshaking
        case awaitingHeader(peer: String)
        case connecting
        case admitted
        case refused
    }

    private let core: CoreListener
    private let timeout: TimeAmount
    private var state: State = .handshaking
    private var buffer = ByteBuffer()
    private var timer: Scheduled<Void>?
    private var identity: [PeerName] = []

    init(core: CoreListener, timeout: TimeAmount) {
        self.core = core
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) { [self] in
            let context = loopBound.value
            switch self.state {
            case .handshaking:
                self.core.handshake(.timeout, peer: "unknown", address: context.channel.remoteAddress, identity: [])
                self.refuse(context)
            case .awaitingHeader:
                self.core.refuse(
                    .proxyHeader,
                    "no PROXY header in time",
                    address: context.channel.remoteAddress,
                    detail: "timeout"
                )
                self.refuse(context)
            case .connecting, .admitted, .refused:
                break
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .handshaking = self.state, let tls = event as? TLSUserEvent, case .handshakeCompleted = tls else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let address = context.channel.remoteAddress
        let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
        guard let certificate, let der = try? certificate.toDERBytes() else {
            self.core.handshake(.noCertificate, peer: "unknown", address: address, identity: [])
            self.refuse(context)
            return
        }
        do {
            self.identity = try PeerName.names(ofDERCertificate: der)
        } catch {
            self.core.handshake(.badCertificate, peer: "unknown", address: address, identity: [], error: error)
            self.refuse(context)
            return
        }
        guard let peer = self.core.allowList.match(self.identity) else {
            self.core.handshake(.peerNotAllowed, peer: "unknown", address: address, identity: self.identity)
            self.refuse(context)
            return
        }
        self.core.handshake(.success, peer: peer, address: address, identity: self.identity)
        self.state = .awaitingHeader(peer: peer)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch self.state {
        case .handshaking:
            self.core.handshake(
                TLSHandshakeResult.classify(error),
                peer: "unknown",
                address: context.channel.remoteAddress,
                identity: [],
                error: error
            )
            self.refuse(context)
        case .awaitingHeader, .connecting:
            self.refuse(context)
        case .admitted, .refused:
            context.fireErrorCaught(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .handshaking = self.state {
            self.state = .refused
            self.core.handshake(.failed, peer: "unknown", address: context.channel.remoteAddress, identity: [])
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        switch self.state {
        case .awaitingHeader(let peer):
            self.buffer.writeBuffer(&bytes)
            self.readHeader(context: context, peer: peer)
        case .connecting:
            self.buffer.writeBuffer(&bytes)
        case .handshaking, .refused:
            break
        case .admitted:
            context.fireChannelRead(data)
        }
    }

    private func readHeader(context: ChannelHandlerContext, peer: String) {
        let address = context.channel.remoteAddress
        let header: ProxyHeader
        do {
            guard let decoded = try self.buffer.readProxyHeader() else { return }
            header = decoded
        } catch {
            self.core.refuse(.proxyHeader, "invalid PROXY header", address: address, detail: "\(error)")
            self.refuse(context)
            return
        }
        guard header.command == .proxy, let target = header.rpcGateTarget else {
            self.core.refuse(
                .proxyHeader,
                "PROXY header without a target",
                address: address,
                detail: "\(header.command)"
            )
            self.refuse(context)
            return
        }
        let client: SocketAddress?
        let clientIP: IPAddress
        switch header.addresses {
        case .tcp4(let source, let port, _, _):
            clientIP = .v4(source.value)
            client = try? clientIP.socketAddress(port: port)
        case .tcp6(let source, let port, _, _):
            var high: UInt64 = 0
            var low: UInt64 = 0
            for (index, byte) in source.enumerated() {
                if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
            }
            clientIP = .v6(high, low)
            client = try? clientIP.socketAddress(port: port)
        case .unspecified:
            self.core.refuse(
                .proxyHeader,
                "PROXY header without a client address",
                address: address,
                detail: "unspecified"
            )
            self.refuse(context)
            return
        }
        guard self.core.allows(target) else {
            self.core.refuse(
                .targetNotAllowed,
                "tunnelled connection to a server not in core.upstreams refused",
                address: address,
                detail: "\(target)"
            )
            self.refuse(context)
            return
        }
        self.state = .connecting
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.core.admit(context.channel, client: client, clientIP: clientIP, target: target, peer: peer)
            .assumeIsolated()
            .whenComplete { [self] result in
                let context = loopBound.value
                switch result {
                case .success(let handlers):
                    do {
                        try context.pipeline.syncOperations.addHandlers(handlers, position: .after(self))
                    } catch {
                        self.refuse(context)
                        return
                    }
                    self.state = .admitted
                    self.timer?.cancel()
                    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                    context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                case .failure:
                    self.refuse(context)
                }
            }
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if self.buffer.readableBytes > 0 {
            let rest = self.buffer
            self.buffer = ByteBuffer()
            context.fireChannelRead(Self.wrapInboundOut(rest))
            context.fireChannelReadComplete()
        }
        context.leavePipeline(removalToken: removalToken)
    }

    private func refuse(_ context: ChannelHandlerContext) {
        self.state = .refused
        self.timer?.cancel()
        self.buffer = ByteBuffer()
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension CoreAdmissionHandler: Sendable {}

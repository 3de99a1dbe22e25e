import Logging
import NIOCore
import RPCPolicy
import RPCWire

/// One proxied connection: the client channel, the server channel, and the state machine that
/// decides what crosses. Lives on one event loop (both channels share it), so it needs no locks.
///
/// It only executes the actions of ``RPCConnectionStateMachine`` and keeps the books (bytes,
/// metrics, the connection log line).
final class RPCProxyConnection {
    /// Unique per process; ties the connection's log lines together (`conn`).
    let id: Int
    let route: RouteRuntime
    let listener: GatewayMetrics.Listener
    let clientAddress: SocketAddress?
    /// The gateway address and port the client connected to.
    let localAddress: SocketAddress?
    let serverEndpoint: TCPEndpoint
    /// The IPv4 address the client reached us on: written into rewritten towers unless the route
    /// has `advertise`.
    let clientFacingAddress: IPv4Address?
    /// The server's address: the route's upstream, or a transparent connection's original
    /// destination.
    let upstreamAddress: IPv4Address
    /// Set on connections routed by their first bind: the endpoint mapper that resolved it, for
    /// checking later `alter_context`s.
    var bindRouting: (resolver: EndpointResolver, mapper: TCPEndpoint)?
    private var machine: RPCConnectionStateMachine
    private var clientHandler: RPCGlueHandler?
    private var serverHandler: RPCGlueHandler?
    private var respondedToClient = false
    private var inputClosed: (client: Bool, server: Bool) = (false, false)
    /// The side whose FIN or close came first: it ended the conversation (for the log line).
    private var firstToClose: ProxySide?
    private var closeReason: CloseReason?
    private var bytesFromClient = 0
    private var bytesFromServer = 0
    /// Requests (first fragments) received from the client.
    private var requests = 0
    private let started = NIODeadline.now()
    private let startedWallClock = AuditTimestamp.now()
    /// When bytes last arrived from either side (updated once per read burst), on the event
    /// loop's clock.
    private var lastActivity: NIODeadline
    private var timers: [Scheduled<Void>] = []
    private var idleCheck: Scheduled<Void>?
    private let eventLoop: any EventLoop
    private let onClose: @Sendable () -> Void
    private var finished = false
    private let timeouts: Timeouts
    private let limits: WireLimits
    private var policyGeneration: Int
    /// Set by a graceful shutdown: close as soon as no call is in flight.
    private var draining = false
    /// How endpoint-mapper replies are treated (core gateways leave ports to the edge).
    private let endpointMapperMode: EndpointMapperMode

    /// What the gateway does with the towers of an endpoint-mapper reply.
    enum EndpointMapperMode {
        /// Point towers at this gateway's ports (a plain or edge gateway: clients connect here).
        case rewrite
        /// Keep the server's ports, but still redact towers the policy hides or that name another
        /// host (a core gateway: the edge, which the client talks to, rewrites them).
        case redactOnly
    }

    init(
        id: Int,
        route: RouteRuntime,
        listener: GatewayMetrics.Listener,
        machine: RPCConnectionStateMachine,
        clientAddress: SocketAddress?,
        localAddress: SocketAddress?,
        clientFacingAddress: IPv4Address?,
        serverEndpoint: TCPEndpoint,
        upstreamAddress: IPv4Address? = nil,
        eventLoop: any EventLoop,
        timeouts: Timeouts,
        limits: WireLimits,
        endpointMapperMode: EndpointMapperMode = .rewrite,
        onClose: @escaping @Sendable () -> Void
    ) {
        self.id = id
        self.localAddress = localAddress
        self.upstreamAddress = upstreamAddress ?? route.upstreamAddress
        self.endpointMapperMode = endpointMapperMode
        self.timeouts = timeouts
        self.limits = limits
        self.policyGeneration = route.generation
        self.route = route
        self.listener = listener
        self.machine = machine
        self.clientAddress = clientAddress
        self.clientFacingAddress = clientFacingAddress
        self.serverEndpoint = serverEndpoint
        self.eventLoop = eventLoop
        self.lastActivity = eventLoop.now
        self.onClose = onClose
    }

    func handler(for side: ProxySide) -> RPCGlueHandler? {
        side == .client ? self.clientHandler : self.serverHandler
    }

    /// Adds the connection's glue handlers (which frame for themselves) to its two channels, which
    /// must share `eventLoop`, and starts the bind and idle timers.
    func install(client: any Channel, server: any Channel) throws {
        let handlers = self.makeHandlers()
        try client.pipeline.syncOperations.addHandler(handlers.client)
        try server.pipeline.syncOperations.addHandler(handlers.server)
    }

    /// Creates the two glue handlers and starts the bind and idle timers.
    func makeHandlers() -> (client: RPCGlueHandler, server: RPCGlueHandler) {
        let timeouts = self.timeouts
        let client = RPCGlueHandler(side: .client, connection: self, limits: self.limits)
        let server = RPCGlueHandler(side: .server, connection: self, limits: self.limits)
        self.clientHandler = client
        self.serverHandler = server
        let bindTimer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeouts.bindDuration)) { [self] in
            if !self.machine.isBound { self.close(.bindTimeout) }
        }
        self.timers.append(bindTimer)
        self.lastActivity = self.eventLoop.now
        self.scheduleIdleCheck(in: TimeAmount(timeouts.idleDuration))
        return (client, server)
    }

    /// The idle timeout, without a timer per read or a promise per write (what NIO's
    /// `IdleStateHandler` costs): every read burst stamps ``lastActivity`` and one scheduled check
    /// per connection either closes it or sleeps until the stamp plus the timeout. The gateway only
    /// writes what it read from the other side, so reads on both sides are all the activity there
    /// is. Uses the event loop's clock, so an `EmbeddedEventLoop` advanced in tests and in the
    /// fuzz harness drives it.
    private func scheduleIdleCheck(in delay: TimeAmount) {
        guard !self.finished else { return }
        self.idleCheck = self.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            let limit = TimeAmount(self.timeouts.idleDuration)
            let idleFor = self.eventLoop.now - self.lastActivity
            if idleFor >= limit {
                self.close(.idleTimeout)
            } else {
                self.scheduleIdleCheck(in: limit - idleFor)
            }
        }
    }

    /// Set once the connection has begun to close: later PDUs are ignored.
    var isClosing: Bool { self.closeReason != nil || self.finished }

    // MARK: - Events from the handlers

    func received(_ pdu: RawPDU, from side: ProxySide) {
        guard self.closeReason == nil else { return }
        let length = pdu.bytes.readableBytes
        switch side {
        case .client:
            self.bytesFromClient += length
            self.route.metrics.bytes(length, direction: .clientToServer)
            if pdu.header.packetType == .request, pdu.header.flags.contains(.firstFragment) { self.requests += 1 }
            self.refreshPolicy(for: pdu.header.packetType)
            if pdu.header.packetType == .alterContext, let refusal = self.alterContextRefusal(pdu) {
                self.respond(refusal)
                return
            }
            let action = self.machine.clientSent(pdu)
            self.recordEvents()
            self.execute(action, pdu)
        case .server:
            self.bytesFromServer += length
            self.route.metrics.bytes(length, direction: .serverToClient)
            let action = self.machine.serverSent(pdu)
            self.recordEvents()
            self.execute(action, pdu)
            if self.draining, !self.machine.hasCallsInFlight {
                self.clientHandler?.flush()
                self.close(.shutdown)
            }
        }
    }

    /// On a bind-routed connection, an `alter_context` to an interface the endpoint mapper places
    /// on another endpoint of the server cannot be served here: refused with an
    /// `alter_context_resp` that rejects every context. Interfaces not resolved yet are looked up
    /// in the background and forwarded (the server refuses what it does not serve).
    private func alterContextRefusal(_ raw: RawPDU) -> ByteBuffer? {
        guard let (resolver, mapper) = self.bindRouting,
            let pdu = try? raw.parse(limits: self.limits), case .alterContext(let body) = pdu.body
        else { return nil }
        let interfaces = body.contexts.filter { !$0.isBindTimeFeatureNegotiation }.map(\.abstractSyntax)
        let verdict = BindRouting.alterContext(interfaces: interfaces, serverPort: self.serverEndpoint.port) {
            resolver.cached($0, at: mapper)
        }
        guard verdict == .refuse else {
            let group = self.eventLoop
            // Only interfaces the policy may allow are looked up: a denied interface's UUID never
            // reaches the server, not even its endpoint mapper.
            for interface in interfaces where self.machine.mayLookUp(interface) && resolver.cached(interface, at: mapper) == nil {
                Task { _ = try? await resolver.resolve(interface, at: mapper, group: group) }
            }
            return nil
        }
        for interface in interfaces {
            self.route.metrics.bind(interface: self.route.interfaceLabel(interface), decision: .deny)
        }
        self.route.logger.notice(
            "alter_context to an interface served by another endpoint refused",
            metadata: ["client": "\(self.clientDescription)", "server": "\(self.serverEndpoint)"]
        )
        return PDU.bindRejection(answering: pdu).flatMap { try? $0.serialized() }
    }

    /// After a reload, binds and calls follow the route's new policy.
    private func refreshPolicy(for type: PacketType) {
        switch type {
        case .bind, .alterContext, .request:
            let (policy, generation) = self.route.policy
            if generation != self.policyGeneration {
                self.machine.policy = policy
                self.policyGeneration = generation
            }
        default:
            break
        }
    }

    /// Graceful shutdown: close now if idle, else as soon as the calls in flight complete.
    func drain() {
        self.draining = true
        if !self.machine.hasCallsInFlight {
            self.close(.shutdown)
        }
    }

    func readComplete(from side: ProxySide) {
        self.lastActivity = self.eventLoop.now
        self.handler(for: side.other)?.flush()
        if side == .client, self.respondedToClient {
            self.respondedToClient = false
            self.clientHandler?.flush()
        }
    }

    func inputClosed(on side: ProxySide) {
        if self.firstToClose == nil { self.firstToClose = side }
        switch side {
        case .client: self.inputClosed.client = true
        case .server: self.inputClosed.server = true
        }
        if self.inputClosed.client && self.inputClosed.server {
            self.close(self.closedReason)
            return
        }
        // Propagate the FIN, and bound how long the other direction may stay open.
        self.handler(for: side.other)?.closeOutput()
        let timer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(self.timeouts.halfCloseDuration)) { [self] in
            self.close(.halfCloseTimeout)
        }
        self.timers.append(timer)
    }

    func channelInactive(_ side: ProxySide) {
        // After we shut a channel's output, NIO reports the peer's FIN as the channel going
        // inactive rather than as inputClosed; the first side to close is what ended it.
        if self.firstToClose == nil { self.firstToClose = side }
        self.close(self.closedReason)
    }

    private var closedReason: CloseReason {
        self.firstToClose == .server ? .serverClosed : .clientClosed
    }

    func errorCaught(_ error: any Error, on side: ProxySide) {
        if let wire = error as? RPCWireError {
            self.route.metrics.pduError(wire.code)
            self.route.logger.notice(
                "malformed PDU",
                metadata: [
                    "conn": "\(self.id)", "side": "\(side)", "client": "\(self.clientDescription)", "error": "\(wire)",
                ]
            )
            self.close(.protocolError)
        } else {
            self.close(side == .client ? .clientError : .serverError)
        }
    }

    // MARK: - Executing actions

    private func execute(_ action: RPCConnectionStateMachine.ClientAction, _ pdu: RawPDU) {
        switch action {
        case .forward:
            self.serverHandler?.write(pdu.bytes)
        case .forwardHeld(let pdus):
            for held in pdus { self.serverHandler?.write(held.bytes) }
        case .hold, .drop:
            break
        case .respond(let bytes):
            self.respond(bytes)
        case .respondAndClose(let bytes, let reason):
            self.respond(bytes)
            self.clientHandler?.flush()
            self.close(reason)
        case .close(let reason):
            self.close(reason)
        }
    }

    private func execute(_ action: RPCConnectionStateMachine.ServerAction, _ pdu: RawPDU) {
        switch action {
        case .forward:
            self.clientHandler?.write(pdu.bytes)
        case .hold:
            break
        case .respond(let bytes):
            self.clientHandler?.write(bytes)
        case .rewriteEndpointMapperReply(let reply):
            for bytes in self.rewrite(reply) { self.clientHandler?.write(bytes) }
        case .close(let reason):
            self.close(reason)
        }
    }

    private func respond(_ bytes: ByteBuffer) {
        self.clientHandler?.write(bytes)
        self.respondedToClient = true
    }

    /// Rewrites an endpoint-mapper reply: every ncacn_ip_tcp tower of the route's server gets a
    /// gateway port; towers of denied interfaces, of other hosts, or that cannot be mapped are
    /// redacted (port 0, 0.0.0.0). An `ept_map` that ends up advertising nothing is answered
    /// "not registered" instead.
    private func rewrite(_ reply: RPCConnectionStateMachine.EndpointMapperReply) -> [ByteBuffer] {
        let route = self.route
        let settings = route.settings
        let upstreamAddress = self.upstreamAddress
        let advertised: IPv4Address
        if case .transparent = settings.mode {
            // The client keeps talking to the server's own address; nftables sends it back here.
            advertised = upstreamAddress
        } else {
            advertised = settings.advertiseAddress ?? self.clientFacingAddress ?? .any
        }
        let singlePort = settings.singlePort
        // This connection's server is the endpoint mapper that bind routing asks.
        let mapper = self.serverEndpoint
        let limits = self.limits
        let machine = self.machine
        let mode = self.endpointMapperMode
        var exhausted = false
        do {
            let result = try EPMReplyRewriter.rewrite(
                fragments: reply.fragments,
                operation: reply.operation,
                syntax: reply.syntax,
                limits: limits
            ) { tower -> TCPEndpoint? in
                let exposure = TowerExposure.classify(
                    tower,
                    route: settings,
                    upstreamAddress: upstreamAddress,
                    mayLookUp: machine.mayLookUp
                )
                if mode == .redactOnly {
                    switch exposure {
                    case .hidden, .foreignHost: return nil
                    case .endpointMapper, .mapped: return tower.endpoint
                    }
                }
                switch exposure {
                case .hidden, .foreignHost:
                    // Never an open relay: only the configured server, whatever the reply says.
                    return nil
                case .endpointMapper:
                    return TCPEndpoint(address: advertised, port: settings.epmPort)
                case .mapped(let server):
                    if let interface = tower.interface {
                        route.resolver.remember(interface, at: mapper, port: server.port)
                    }
                    if let singlePort { return TCPEndpoint(address: advertised, port: singlePort) }
                    switch route.pool.allocate(for: server) {
                    case .existing(let port), .allocated(let port):
                        return TCPEndpoint(address: advertised, port: port)
                    case .exhausted:
                        exhausted = true
                        return nil
                    }
                }
            }
            if exhausted {
                route.metrics.portPoolExhausted()
                route.logger.warning(
                    "port range exhausted: endpoint-mapper answer redacted",
                    metadata: [
                        "conn": "\(self.id)", "ports": "\(settings.ports)", "client": "\(self.clientDescription)",
                    ]
                )
            }
            route.metrics.towersRewritten(result.rewrittenTowers)
            if result.redactedTowers > 0 { route.metrics.towersRedacted(result.redactedTowers) }
            if reply.operation == .map, result.redactedTowers > 0 {
                if let notRegistered = RPCConnectionStateMachine.notRegisteredResponse(
                    callID: reply.callID,
                    contextID: reply.contextID,
                    maxTowers: reply.maxTowers,
                    syntax: reply.syntax,
                    dataRepresentation: reply.dataRepresentation
                ) {
                    return [notRegistered]
                }
            }
            return result.fragments.map(\.bytes)
        } catch {
            route.metrics.pduError(reason: (error as? RPCWireError)?.code.description ?? "epm_rewrite")
            route.logger.notice("endpoint-mapper reply not rewritable; connection closed", metadata: ["error": "\(error)"])
            self.close(.protocolError)
            return []
        }
    }

    private func recordEvents() {
        for event in self.machine.takeEvents() {
            self.route.record(
                event,
                connection: self.id,
                client: self.clientAddress,
                server: self.serverEndpoint,
                listener: self.listener,
                identity: self.machine.identity
            )
        }
    }

    // MARK: - Closing

    var clientDescription: String { HostPort.text(self.clientAddress) }

    /// What the status page shows about this connection.
    func snapshot(now: NIODeadline = .now()) -> ConnectionStatus {
        ConnectionStatus(
            id: self.id,
            route: self.route.name,
            listener: self.listener,
            client: self.clientDescription,
            gatewayPort: self.localAddress?.port.map { UInt16(truncatingIfNeeded: $0) },
            server: self.serverEndpoint,
            age: .nanoseconds((now - self.started).nanoseconds),
            idle: .nanoseconds(max(0, (now - self.lastActivity).nanoseconds)),
            bytesFromClient: self.bytesFromClient,
            bytesFromServer: self.bytesFromServer,
            interfaces: self.machine.acceptedInterfaces,
            authLevel: self.machine.authLevel,
            callInFlight: self.machine.hasCallsInFlight
        )
    }

    func close(_ reason: CloseReason) {
        if self.closeReason == nil { self.closeReason = reason }
        self.clientHandler?.close()
        self.serverHandler?.close()
        self.finish()
    }

    private func finish() {
        guard !self.finished else { return }
        self.finished = true
        for timer in self.timers { timer.cancel() }
        self.timers.removeAll()
        self.idleCheck?.cancel()
        self.idleCheck = nil
        let duration = NIODeadline.now() - self.started
        let interfaces = self.machine.acceptedInterfaces.map { self.route.interfaceLabel($0) }
        self.route.logger.info(
            "connection closed",
            metadata: [
                "conn": "\(self.id)",
                "listener": "\(self.listener.rawValue)",
                "client": "\(self.clientDescription)",
                "gateway": "\(HostPort.text(self.localAddress))",
                "server": "\(self.serverEndpoint)",
                "started": "\(self.startedWallClock.rfc3339)",
                "bytes_from_client": "\(self.bytesFromClient)",
                "bytes_from_server": "\(self.bytesFromServer)",
                "requests": "\(self.requests)",
                "interfaces": "\(interfaces.isEmpty ? "-" : interfaces.joined(separator: ","))",
                "duration_ms": "\(duration.nanoseconds / 1_000_000)",
                "reason": "\(self.closeReason?.rawValue ?? "closed")",
            ]
        )
        self.route.metrics.connectionClosed(reason: self.closeReason?.rawValue ?? "closed")
        self.onClose()
        // Break the handler <-> connection cycle once both channels are closing.
        self.eventLoop.assumeIsolated().execute { [self] in
            self.clientHandler = nil
            self.serverHandler = nil
        }
    }
}

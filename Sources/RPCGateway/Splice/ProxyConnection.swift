import Logging
import NIOCore
import RPCPolicy
import RPCWire

/// Opens the upstream side of a connection: a TCP connection to the server, or a TLS tunnel to a
/// core gateway that connects there (``Splicer`` chooses).
typealias UpstreamConnector = (_ server: TCPEndpoint, _ role: ConnectionStateMachine.Role, _ eventLoop: any EventLoop)
    ->
    EventLoopFuture<any Channel>

/// One proxied connection, from accept to close: the client channel, the server channel once
/// there is one, and the ``ConnectionStateMachine`` that decides what crosses. Lives on one event
/// loop (both channels share it), so it needs no locks.
///
/// It only executes the machine's actions (forward, answer, resolve, connect, close) and keeps
/// the books (bytes, metrics, the connection log line). Tower rewriting is in
/// `TowerRewriting.swift`.
final class ProxyConnection {
    /// Unique per process; ties the connection's log lines together (`conn`).
    let id: Int
    let route: RouteRuntime
    let listener: GatewayMetrics.Listener
    let clientAddress: SocketAddress?
    /// The gateway address and port the client connected to.
    let localAddress: SocketAddress?
    /// The IPv4 address the client reached us on: written into rewritten towers unless the route
    /// has `advertise`.
    let clientFacingAddress: IPv4Address?
    /// The server's address: the route's upstream, or a transparent connection's original
    /// destination.
    let upstreamAddress: IPv4Address
    /// How endpoint-mapper replies are treated (core gateways leave ports to the edge).
    let endpointMapperMode: EndpointMapperMode
    /// The three timeouts the connection's timer enforces (not the whole ``Timeouts``: every
    /// byte of this object is held per connection).
    let bindTimeout: TimeAmount
    let idleTimeout: TimeAmount
    let halfCloseTimeout: TimeAmount
    /// The wire limits are the machine's (one copy per connection).
    var limits: WireLimits { self.machine.limits }
    let eventLoop: any EventLoop
    var machine: ConnectionStateMachine
    var clientHandler: GlueHandler?
    var serverHandler: GlueHandler?
    let connector: UpstreamConnector
    let onClose: @Sendable () -> Void
    var respondedToClient = false
    var inputClosed: (client: Bool, server: Bool) = (false, false)
    /// The side whose FIN or close came first: it ended the conversation (for the log line).
    var firstToClose: ProxySide?
    var closeReason: CloseReason?
    /// Refused before it was spliced: counted as a refusal, not as a closed connection.
    var refused = false
    var bytesFromClient = 0
    var bytesFromServer = 0
    /// Requests (first fragments) received from the client.
    var requests = 0
    let started = NIODeadline.now()
    let startedWallClock = AuditTimestamp.now()
    /// When bytes last arrived from either side (updated once per read burst), on the event
    /// loop's clock.
    var lastActivity: NIODeadline
    /// The connection's one timer: the bind, idle and half-close deadlines share it (see
    /// `ProxyConnection+Lifecycle.swift`), so an idle connection holds one scheduled callback and
    /// no promise.
    var timer: NIOScheduledCallback?
    /// When ``timer`` fires.
    var timerDeadline: NIODeadline?
    /// Until the first bind is accepted: the connection closes at this deadline if it is not.
    var bindDeadline: NIODeadline?
    /// Set when one side half-closed: the other direction may stay open until then.
    var halfCloseDeadline: NIODeadline?
    var finished = false
    var policyGeneration: Int
    /// Set by a graceful shutdown: close as soon as no call is in flight.
    private(set) var draining = false
    /// Called once when a connection routed by its first bind is spliced.
    var onSpliced: (() -> Void)?

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
        machine: ConnectionStateMachine,
        clientAddress: SocketAddress?,
        localAddress: SocketAddress?,
        clientFacingAddress: IPv4Address?,
        upstreamAddress: IPv4Address? = nil,
        eventLoop: any EventLoop,
        timeouts: Timeouts,
        endpointMapperMode: EndpointMapperMode = .rewrite,
        connector: @escaping UpstreamConnector,
        onClose: @escaping @Sendable () -> Void
    ) {
        self.id = id
        self.route = route
        self.listener = listener
        self.machine = machine
        self.clientAddress = clientAddress
        self.localAddress = localAddress
        self.clientFacingAddress = clientFacingAddress
        self.upstreamAddress = upstreamAddress ?? route.upstreamAddress
        self.endpointMapperMode = endpointMapperMode
        self.bindTimeout = TimeAmount(timeouts.bindDuration)
        self.idleTimeout = TimeAmount(timeouts.idleDuration)
        self.halfCloseTimeout = TimeAmount(timeouts.halfCloseDuration)
        self.eventLoop = eventLoop
        self.policyGeneration = route.generation
        self.lastActivity = eventLoop.now
        self.connector = connector
        self.onClose = onClose
    }

    func handler(for side: ProxySide) -> GlueHandler? {
        side == .client ? self.clientHandler : self.serverHandler
    }

    /// The server this connection goes to (the endpoint mapper it asks, before the first bind
    /// chose one).
    var serverEndpoint: TCPEndpoint {
        self.machine.destination ?? TCPEndpoint(address: self.upstreamAddress, port: 0)
    }

    /// Creates the client's glue handler and starts the bind and idle timers. A connection whose
    /// server is known connects at once: the returned future completes when it is spliced (the
    /// accept returns it, so the client is read only then); one routed by its first bind waits
    /// for it and the future is already complete.
    func start() -> (handler: GlueHandler, spliced: EventLoopFuture<Void>) {
        let client = GlueHandler(side: .client, connection: self, limits: self.limits)
        self.clientHandler = client
        let now = self.eventLoop.now
        self.lastActivity = now
        self.bindDeadline = now + self.bindTimeout
        self.armTimer()
        if let server = self.machine.server, !self.machine.isSpliced {
            return (client, self.connect(to: server))
        }
        return (client, self.eventLoop.makeSucceededVoidFuture())
    }

    func attachServer(_ channel: any Channel) throws {
        let server = GlueHandler(side: .server, connection: self, limits: self.limits)
        try channel.pipeline.syncOperations.addHandler(server)
        self.serverHandler = server
    }

    /// Set once the connection has begun to close: later PDUs are ignored.
    var isClosing: Bool { self.closeReason != nil || self.finished }

    /// Whether `side`'s next PDU may be taken now: the client's waits while the runtime resolves
    /// or connects.
    func acceptsPDUs(from side: ProxySide) -> Bool {
        side == .server || self.machine.acceptsClientPDUs
    }

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
            self.execute(self.machine.clientSent(pdu), pdu)
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

    /// Graceful shutdown: close now if idle (or still waiting for a first bind), else as soon as
    /// the calls in flight complete.
    func drain() {
        self.draining = true
        if self.machine.isAwaitingFirstBind || (self.machine.isSpliced && !self.machine.hasCallsInFlight) {
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
        if side == .client, !self.machine.isSpliced {
            // Waiting for a first bind, nothing is left to route: close (released at once, not at
            // the bind timeout). (While routing, the glue handler holds the event until then.)
            self.firstToClose = .client
            self.close(.clientClosed)
            return
        }
        if self.firstToClose == nil { self.firstToClose = side }
        switch side {
        case .client: self.inputClosed.client = true
        case .server: self.inputClosed.server = true
        }
        if self.inputClosed.client && self.inputClosed.server {
            self.close(self.closedReason)
            return
        }
        // Propagate the FIN, and bound how long the other direction may stay open (from the
        // first half-close: a second one closes the connection above).
        self.handler(for: side.other)?.closeOutput()
        if self.halfCloseDeadline == nil {
            self.halfCloseDeadline = self.eventLoop.now + self.halfCloseTimeout
            self.armTimer()
        }
    }

    func channelInactive(_ side: ProxySide) {
        // After we shut a channel's output, NIO reports the peer's FIN as the channel going
        // inactive rather than as inputClosed; the first side to close is what ended it.
        if self.firstToClose == nil { self.firstToClose = side }
        self.close(self.closedReason)
    }

    var closedReason: CloseReason {
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

    func execute(_ action: ConnectionStateMachine.ClientAction, _ pdu: RawPDU? = nil) {
        // A first bind's decision is recorded once its server is chosen (the audit names it).
        if case .resolve = action {} else { self.recordEvents() }
        switch action {
        case .forward:
            if let pdu { self.serverHandler?.write(pdu.bytes) }
        case .forwardHeld(let pdus):
            for held in pdus { self.serverHandler?.write(held.bytes) }
            self.serverHandler?.flush()
        case .hold, .drop:
            break
        case .respond(let bytes):
            self.respond(bytes)
            if !self.machine.isSpliced {
                // A first bind refused here: the client may try another, unless the gateway drains.
                self.clientHandler?.flush()
                if self.draining { self.close(.shutdown) }
            }
        case .respondAndClose(let bytes, let reason):
            self.respond(bytes)
            self.clientHandler?.flush()
            self.close(reason)
        case .close(let reason):
            self.close(reason)
        case .resolve(let interface, let mapper):
            self.resolve(interface, at: mapper)
        case .connect(let server):
            _ = self.connect(to: server)
        case .refuse(let refusal):
            self.refuse(refusal)
        case .checkEndpoints(_, let mapper, let resolvable):
            let resolver = self.route.resolver
            let group = self.eventLoop
            for interface in resolvable where resolver.cached(interface, at: mapper) == nil {
                Task { _ = try? await resolver.resolve(interface, at: mapper, group: group) }
            }
            self.execute(self.machine.alterContextChecked { resolver.cached($0, at: mapper) })
        }
    }

    private func execute(_ action: ConnectionStateMachine.ServerAction, _ pdu: RawPDU) {
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

    func respond(_ bytes: ByteBuffer) {
        self.clientHandler?.write(bytes)
        self.respondedToClient = true
    }

    func recordEvents() {
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
}

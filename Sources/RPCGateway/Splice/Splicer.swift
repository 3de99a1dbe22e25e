import Logging
import NIOCore
import RPCPolicy
import RPCWire

/// Assembles one proxied connection for every listener: the state machine its plan calls for,
/// the ``ProxyConnection``, the upstream connector (the server itself, or a core gateway through
/// a TLS tunnel), and its books (admission ticket, pool mapping, route gauge), all released once
/// when it closes.
struct Splicer: Sendable {
    let tlsMetrics: TLSMetrics

    /// An accepted client, as the listener knows it.
    struct Client {
        /// The real client (a core's comes from the PROXY header).
        var address: SocketAddress?
        var ip: IPAddress
        /// The gateway address and port the client connected to.
        var localAddress: SocketAddress?
        /// The IPv4 address the client reached the gateway on (for rewritten towers).
        var facingAddress: IPv4Address?
    }

    /// What the listener admitted, counted until the connection closes.
    struct Admitted {
        var ticket: Admission.Ticket
        var admission: Admission
        var route: RouteRuntime
        var listener: GatewayMetrics.Listener
        var timeouts: Timeouts
        var limits: WireLimits
    }

    /// Creates and starts the connection `plan` calls for, decided by `machine`. Returns
    /// the client's glue handler, for the caller to install, and a future that completes when
    /// the connection is spliced (at once for one routed by its first bind) or fails when its
    /// upstream cannot be reached (the connection has closed itself then).
    func start(
        _ plan: AcceptPlan,
        machine: ConnectionStateMachine,
        _ admitted: Admitted,
        client: Client,
        eventLoop: any EventLoop,
        upstream: @escaping UpstreamConnector,
        endpointMapperMode: ProxyConnection.EndpointMapperMode = .rewrite,
        onClose: (@Sendable () -> Void)? = nil
    ) -> (handler: GlueHandler, spliced: EventLoopFuture<Void>) {
        let route = admitted.route
        // The pool mapping is counted only if it is still there.
        let mappedPort = plan.mappedPort.flatMap { route.pool.connectionOpened(port: $0) == nil ? nil : $0 }
        let ticket = admitted.ticket
        let admission = admitted.admission
        let connection = ProxyConnection(
            id: ticket.id,
            route: route,
            listener: admitted.listener,
            machine: machine,
            clientAddress: client.address,
            localAddress: client.localAddress,
            clientFacingAddress: client.facingAddress,
            upstreamAddress: plan.upstreamAddress,
            eventLoop: eventLoop,
            timeouts: admitted.timeouts,
            endpointMapperMode: endpointMapperMode,
            connector: upstream
        ) {
            admission.release(ticket)
            route.metrics.connectionClosed()
            if let mappedPort { route.pool.connectionClosed(port: mappedPort) }
            onClose?()
        }
        let routing = machine.isAwaitingFirstBind
        if routing { connection.onSpliced = { admission.spliced(ticket) } }
        admission.register(ticket, NIOLoopBound(connection, eventLoop: eventLoop), awaitingBind: routing)
        let started = connection.start()
        if admission.isDraining { connection.drain() }
        return started
    }

    /// Counts and logs a connection refused by its accept plan, and releases its ticket.
    static func refuse(
        _ reason: GatewayMetrics.RefusalReason,
        _ message: String,
        _ admitted: Admitted,
        client: SocketAddress?
    ) {
        admitted.admission.release(admitted.ticket)
        admitted.route.metrics.connectionClosed()
        admitted.route.metrics.connectionRefused(reason: reason)
        admitted.route.logger.notice(
            "connection refused: \(message)",
            metadata: ["conn": "\(admitted.ticket.id)", "client": "\(HostPort.text(client))", "reason": "\(reason)"]
        )
    }
}

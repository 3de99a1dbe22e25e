package import Logging
public import NIOCore
public import RPCPolicy
public import RPCWire

/// The splice of one proxied connection on two channels the caller already has, assembled by
/// ``Splicer`` as for every listener (framers, glue handlers, the
/// connection state machine, the route's port pool and metrics, bind and half-close timers),
/// without sockets. Every timer (bind, idle, half-close) runs on the event loop's clock, so a
/// harness drives them by advancing an `EmbeddedEventLoop`.
///
/// For the `RPCGatewayFuzz` target and other package code that drives the real pipeline in
/// `EmbeddedChannel`s without `@testable`.
package enum ProxySplice {
    /// Installs the pipeline on `client` and `server`, which must share one event loop.
    ///
    /// - Parameters:
    ///   - route: the route; its port pool is created for this splice alone.
    ///   - upstreamAddress: the route's resolved server address.
    ///   - listener: `.epm` for the endpoint-mapper listener, `.mapped` for a gateway port.
    ///   - clientAddress: the client's address, for source rules.
    ///   - clientFacingAddress: the address the client reached the gateway on (written into
    ///     rewritten towers unless the route has `advertise`).
    ///   - serverEndpoint: the server the splice forwards to (for logs).
    ///   - onClose: called once when the connection ends.
    package static func install(
        client: any Channel,
        server: any Channel,
        route: RouteSettings,
        upstreamAddress: IPv4Address,
        listener: GatewayMetrics.Listener,
        clientAddress: IPAddress,
        clientFacingAddress: IPv4Address?,
        serverEndpoint: TCPEndpoint,
        timeouts: Timeouts = Timeouts(),
        wireLimits: WireLimits = WireLimits(),
        metrics: GatewayMetrics = GatewayMetrics(),
        logger: Logger,
        onClose: @escaping @Sendable () -> Void = {}
    ) throws {
        let runtime = RouteRuntime(
            settings: route,
            upstreamAddress: upstreamAddress,
            metrics: metrics.route(route.name),
            logger: logger
        )
        let admission = Admission(ids: ConnectionIDs())
        guard let ticket = admission.admit(route: route.name, routeLimit: .max, globalLimit: .max) else {
            throw GatewayStartError(description: "not admitted")
        }
        runtime.metrics.connectionOpened(listener: listener)
        let role: ConnectionStateMachine.Role = listener == .epm ? .endpointMapper : .mapped
        var machine = ConnectionStateMachine(
            role: role,
            policy: route.policy,
            client: clientAddress,
            limits: wireLimits,
            server: serverEndpoint
        )
        machine.protectedEndpointMapper = route.passesProtectedEndpointMapper ? .passThrough : .refuse
        let (handler, _) = Splicer(tlsMetrics: TLSMetrics(factory: metrics.factory)).start(
            AcceptPlan(action: .splice(role: role, server: serverEndpoint)),
            machine: machine,
            Splicer.Admitted(
                ticket: ticket,
                admission: admission,
                route: runtime,
                listener: listener,
                timeouts: timeouts,
                limits: wireLimits
            ),
            client: Splicer.Client(
                address: nil,
                ip: clientAddress,
                localAddress: nil,
                facingAddress: clientFacingAddress
            ),
            eventLoop: client.eventLoop,
            // The server channel exists already: "connecting" hands it over.
            upstream: { _, _, eventLoop in eventLoop.makeSucceededFuture(server) },
            onClose: onClose
        )
        try client.pipeline.syncOperations.addHandler(handler)
    }
}

/// The splice of ``ProxySplice`` for the separate Benchmarks package (ordo-one/benchmark), which
/// reaches the gateway only through public API: the micro-benchmarks of the set-up path and of
/// forwarding drive the real glue handlers, ``ProxyConnection`` and state machine in two
/// `EmbeddedChannel`s and count their allocations. Default timeouts and wire limits, metrics
/// from the process's (unbootstrapped, so no-op) metrics system, no logging.
@_spi(Benchmarking)
public enum BenchmarkSplice {
    /// Installs a splice between `client` and `server` (which must share one event loop), as the
    /// endpoint-mapper listener (`endpointMapper`) or a mapped gateway port would.
    public static func install(
        client: any Channel,
        server: any Channel,
        route: RouteSettings,
        upstreamAddress: IPv4Address,
        endpointMapper: Bool,
        clientAddress: IPAddress,
        serverEndpoint: TCPEndpoint
    ) throws {
        try ProxySplice.install(
            client: client,
            server: server,
            route: route,
            upstreamAddress: upstreamAddress,
            listener: endpointMapper ? .epm : .mapped,
            clientAddress: clientAddress,
            clientFacingAddress: IPv4Address(127, 0, 0, 1),
            serverEndpoint: serverEndpoint,
            logger: Logger(label: "benchmark", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    }
}

package import Metrics
import NIOConcurrencyHelpers
package import RPCWire

// The swift-metrics API only: the exporter (Prometheus) is chosen and bootstrapped by `rpcgate`.
//
// Caching. Creating a swift-metrics object goes through the factory (for Prometheus: a lock, a
// dictionary lookup and a dimensions array), so the data path must not create one per event.
// Each route gets one `RouteMetrics`, built once at start-up and shared by every handler of that
// route:
// - label sets that are fixed for a route (listener, direction, the gauges) are created eagerly
//   in `RouteMetrics.init` and recorded without any lock;
// - label sets that depend on the event (bind interface and decision, PDU error reason, refusal
//   reason, denied interface) are created on first use and cached in a lock-protected dictionary.
//   The caller bounds their cardinality: interface labels are catalog names, configured UUIDs or
//   `unknown`, never a UUID taken from the wire; reasons are stable short codes.

/// Metric names and label values of the gateway, and the factory that `RouteMetrics` are made from.
package struct GatewayMetrics: Sendable {
    /// Metric names, as exported.
    package enum Name {
        /// Counter `{route, listener}`: client connections accepted.
        package static let connectionsTotal = "rpcgate_connections_total"
        /// Gauge `{route}`: client connections open now.
        package static let connectionsActive = "rpcgate_connections_active"
        /// Counter `{route, interface, decision}`: presentation contexts offered in bind and
        /// alter_context PDUs, by policy decision.
        package static let bindsTotal = "rpcgate_binds_total"
        /// Counter `{route}`: endpoint-mapper towers rewritten to a gateway port.
        package static let epmTowersRewrittenTotal = "rpcgate_epm_towers_rewritten_total"
        /// Counter `{route}`: endpoint-mapper towers redacted (port 0, `0.0.0.0`): a denied
        /// interface, a host other than the route's server, or no free gateway port.
        package static let epmTowersRedactedTotal = "rpcgate_epm_towers_redacted_total"
        /// Gauge `{route}`: gateway ports mapped to a server endpoint now.
        package static let portMappingsActive = "rpcgate_port_mappings_active"
        /// Counter `{route}`: tower rewrites that found no free gateway port.
        package static let portPoolExhaustedTotal = "rpcgate_port_pool_exhausted_total"
        /// Counter `{route, direction}`: payload bytes forwarded.
        package static let bytesTotal = "rpcgate_bytes_total"
        /// Counter `{route, reason}`: connections closed because of a malformed or unexpected PDU.
        package static let pduErrorsTotal = "rpcgate_pdu_errors_total"
        /// Counter `{route, reason}`: client connections refused or closed before forwarding.
        package static let connectionsRefusedTotal = "rpcgate_connections_refused_total"
        /// Counter `{route, interface}`: requests refused by the operation policy.
        package static let callsDeniedTotal = "rpcgate_calls_denied_total"
        /// Counter `{route, source, decision}`: policy decisions (binds and inspected calls) by
        /// client network (`source`: the client's /24, IPv6 /64; `other` beyond
        /// ``RouteMetrics/maximumSourceLabels`` networks), for "top sources" panels.
        package static let sourceDecisionsTotal = "rpcgate_source_decisions_total"
        /// Counter `{route, reason}`: spliced connections that ended, by why (a ``CloseReason``:
        /// `client_closed`, `bind_timeout`, `idle_timeout`, `server_error`, ...).
        package static let connectionsClosedTotal = "rpcgate_connections_closed_total"
        /// Counter `{reason}`: audit lines not written: `queue_full` (the writer was behind by the
        /// whole buffer), `write_error`, or `syslog_error` (records not delivered to `audit.syslog`).
        package static let auditDroppedTotal = "rpcgate_audit_dropped_total"
        /// Gauge `{route}`: 1 when the last readiness probe (a TCP connect) reached the route's
        /// upstream endpoint mapper, 0 when it failed.
        package static let upstreamUp = "rpcgate_upstream_up"
        /// Counter `{route}`: connections routed by the interface of their first bind (single-port
        /// mode, ports this instance did not hand out, transparent mode).
        package static let bindRoutedTotal = "rpcgate_connections_bind_routed_total"
        /// Counter `{route}`: bind_ack/alter_context_resp PDUs on a mapped connection whose
        /// secondary address (the server's port) was passed unchanged because the PDU carries an
        /// auth verifier (rewriting would change what it authenticates).
        package static let secondaryAddressKeptTotal = "rpcgate_secondary_address_kept_total"
        /// Counter `{route}`: endpoint-mapper replies carrying an auth verifier (signed or
        /// sealed) forwarded byte for byte (preserve mapping, transparent `server_ports_listen`).
        package static let epmProtectedRepliesTotal = "rpcgate_epm_protected_replies_total"
        /// Counter `{route}`: towers of a preserve route's server naming a port outside the
        /// route's `ports` (the server's range is wider than the gateway's): redacted, or, in a
        /// signed reply, passed and unreachable through the gateway.
        package static let epmTowersOutsideRangeTotal = "rpcgate_epm_towers_outside_range_total"
    }

    /// The listener a client connected to (`listener` label).
    package enum Listener: String, Hashable, Sendable, CaseIterable {
        /// The route's endpoint-mapper port (135).
        case epm
        /// A gateway port mapped to a dynamic server endpoint.
        case mapped
    }

    /// Which way bytes went (`direction` label).
    package enum Direction: String, Hashable, Sendable, CaseIterable {
        case clientToServer = "client_to_server"
        case serverToClient = "server_to_client"
    }

    /// The policy decision for a bind (`decision` label).
    package enum BindDecision: String, Hashable, Sendable, CaseIterable {
        case allow
        case deny
    }

    /// Why a client connection was refused (`reason` label of `rpcgate_connections_refused_total`).
    ///
    /// A stable, low-cardinality code. The known codes are static members; new ones are added here
    /// rather than built from runtime strings.
    package struct RefusalReason: Hashable, Sendable, CustomStringConvertible {
        package let code: String

        package init(code: String) {
            self.code = code
        }

        /// The global or the route's connection cap was reached.
        package static let cap = RefusalReason(code: "cap")
        /// The client's source (address, or IPv6 prefix) is over its own concurrent-connection or
        /// new-connections-per-second limit.
        package static let sourceLimit = RefusalReason(code: "source_limit")
        /// Connecting to the upstream server failed or timed out.
        package static let upstreamUnreachable = RefusalReason(code: "upstream_unreachable")
        /// A connection arrived on a gateway port that is not mapped to any server.
        package static let unmappedPort = RefusalReason(code: "unmapped_port")
        /// The gateway is shutting down and no longer accepts connections.
        package static let draining = RefusalReason(code: "draining")
        /// Transparent mode: the original destination is outside the route's `servers`.
        package static let destinationNotAllowed = RefusalReason(code: "destination_not_allowed")
        /// Transparent mode: the connection was not redirected (no original destination).
        package static let noOriginalDestination = RefusalReason(code: "no_original_destination")
        /// Transparent `server_ports_listen` with `pinholes: learned`: no readable reply told the
        /// client about the endpoint it connects to (or it expired).
        package static let noPinhole = RefusalReason(code: "no_pinhole")
        /// Bind routing: the first PDU was not a bind, or no bind came within the bind timeout.
        package static let noBind = RefusalReason(code: "no_bind")
        /// Core: a tunnelled connection without a valid PROXY v2 header (or its target TLV) in time.
        package static let proxyHeader = RefusalReason(code: "proxy_header")
        /// Core: the PROXY header names a server outside `core.upstreams`: never an open relay.
        package static let targetNotAllowed = RefusalReason(code: "target_not_allowed")
        /// Core: the TLS handshake failed or the edge's certificate is not allowed.
        package static let tls = RefusalReason(code: "tls")
        /// Edge: the core gateway could not be reached or its TLS handshake failed.
        package static let peerUnreachable = RefusalReason(code: "peer_unreachable")

        package var description: String { self.code }
    }

    /// The factory metrics are created from: `MetricsSystem.factory` in production, a test factory
    /// in tests (so tests need not bootstrap the process-wide metrics system).
    package let factory: any MetricsFactory

    package init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    /// The metrics of one route. Create it once per route at start-up and share it.
    package func route(_ name: String) -> RouteMetrics {
        RouteMetrics(route: name, factory: self.factory)
    }
}

/// The metrics of one route, with every fixed label set pre-created. See the note at the top of
/// this file for the caching strategy. Thread-safe.
package final class RouteMetrics: Sendable {
    package typealias Listener = GatewayMetrics.Listener
    package typealias Direction = GatewayMetrics.Direction
    package typealias BindDecision = GatewayMetrics.BindDecision
    package typealias RefusalReason = GatewayMetrics.RefusalReason
    private typealias Name = GatewayMetrics.Name

    /// The `route` label value.
    package let route: String

    private let factory: any MetricsFactory
    private let connectionsEPM: Counter
    private let connectionsMapped: Counter
    private let connectionsActive: Meter
    private let towersRewritten: Counter
    private let towersRedacted: Counter
    private let portMappingsActive: Meter
    private let portPoolExhaustedCounter: Counter
    private let bytesClientToServer: Counter
    private let bytesServerToClient: Counter
    private let upstreamUp: Meter
    private let bindRoutedCounter: Counter
    private let secondaryAddressKeptCounter: Counter
    private let protectedRepliesCounter: Counter
    private let towersOutsideRangeCounter: Counter
    private let labelled: NIOLockedValueBox<LabelledCounters>

    private struct BindKey: Hashable {
        var interface: String
        var decision: BindDecision
    }

    /// Counters whose labels depend on the event, created on first use.
    private struct LabelledCounters {
        var binds: [BindKey: Counter] = [:]
        var pduErrors: [String: Counter] = [:]
        var refused: [String: Counter] = [:]
        var callsDenied: [String: Counter] = [:]
        var closed: [String: Counter] = [:]
        var sources: [SourceKey: Counter] = [:]
    }

    private struct SourceKey: Hashable {
        var network: String
        var denied: Bool
    }

    /// Most client networks given a label of their own per route; later ones count as `other`,
    /// so a scan from many networks cannot grow the metric without bound.
    package static let maximumSourceLabels = 256

    package init(route: String, factory: any MetricsFactory) {
        self.route = route
        self.factory = factory
        let routeOnly = [("route", route)]
        self.connectionsEPM = Counter(
            label: Name.connectionsTotal,
            dimensions: [("route", route), ("listener", Listener.epm.rawValue)],
            factory: factory
        )
        self.connectionsMapped = Counter(
            label: Name.connectionsTotal,
            dimensions: [("route", route), ("listener", Listener.mapped.rawValue)],
            factory: factory
        )
        self.connectionsActive = Meter(label: Name.connectionsActive, dimensions: routeOnly, factory: factory)
        self.towersRewritten = Counter(label: Name.epmTowersRewrittenTotal, dimensions: routeOnly, factory: factory)
        self.towersRedacted = Counter(label: Name.epmTowersRedactedTotal, dimensions: routeOnly, factory: factory)
        self.portMappingsActive = Meter(label: Name.portMappingsActive, dimensions: routeOnly, factory: factory)
        self.portPoolExhaustedCounter = Counter(
            label: Name.portPoolExhaustedTotal,
            dimensions: routeOnly,
            factory: factory
        )
        self.bytesClientToServer = Counter(
            label: Name.bytesTotal,
            dimensions: [("route", route), ("direction", Direction.clientToServer.rawValue)],
            factory: factory
        )
        self.bytesServerToClient = Counter(
            label: Name.bytesTotal,
            dimensions: [("route", route), ("direction", Direction.serverToClient.rawValue)],
            factory: factory
        )
        self.upstreamUp = Meter(label: Name.upstreamUp, dimensions: routeOnly, factory: factory)
        self.bindRoutedCounter = Counter(label: Name.bindRoutedTotal, dimensions: routeOnly, factory: factory)
        self.secondaryAddressKeptCounter = Counter(
            label: Name.secondaryAddressKeptTotal,
            dimensions: routeOnly,
            factory: factory
        )
        self.protectedRepliesCounter = Counter(
            label: Name.epmProtectedRepliesTotal,
            dimensions: routeOnly,
            factory: factory
        )
        self.towersOutsideRangeCounter = Counter(
            label: Name.epmTowersOutsideRangeTotal,
            dimensions: routeOnly,
            factory: factory
        )
        self.labelled = NIOLockedValueBox(LabelledCounters())
        // No `set(0)` here: a second `RouteMetrics` for the same route (say, after a reload) shares
        // the backend's gauge and must not reset a live connection count. Backends export a newly
        // created gauge as 0; `PortPool` publishes its own count when it is created.
    }

    // MARK: - Connections

    /// A client connection was accepted on `listener`: counts it and raises the active gauge.
    /// Balance every call with ``connectionClosed()``.
    package func connectionOpened(listener: Listener) {
        switch listener {
        case .epm: self.connectionsEPM.increment()
        case .mapped: self.connectionsMapped.increment()
        }
        self.connectionsActive.increment()
    }

    /// A connection was routed by the interface of its first bind.
    package func bindRouted() {
        self.bindRoutedCounter.increment()
    }

    /// A signed or sealed endpoint-mapper reply was forwarded unchanged.
    package func protectedReplyPassed() {
        self.protectedRepliesCounter.increment()
    }

    /// `count` towers named server ports outside a preserve route's range.
    package func towersOutsideRange(_ count: Int = 1) {
        self.towersOutsideRangeCounter.increment(by: count)
    }

    /// An authenticated bind_ack's secondary address was left naming the server's port.
    package func secondaryAddressKept() {
        self.secondaryAddressKeptCounter.increment()
    }

    /// A connection counted by ``connectionOpened(listener:)`` ended.
    package func connectionClosed() {
        self.connectionsActive.decrement()
    }

    /// A spliced connection ended; `reason` is a ``CloseReason`` raw value (a bounded set).
    package func connectionClosed(reason: String) {
        self.labelledCounter(\.closed, key: reason, name: Name.connectionsClosedTotal) {
            [("route", self.route), ("reason", reason)]
        }.increment()
    }

    /// A client connection was refused, or closed before anything was forwarded.
    package func connectionRefused(reason: RefusalReason) {
        self.labelledCounter(\.refused, key: reason.code, name: Name.connectionsRefusedTotal) {
            [("route", self.route), ("reason", reason.code)]
        }.increment()
    }

    /// `count` payload bytes were forwarded in `direction`.
    package func bytes(_ count: Int, direction: Direction) {
        switch direction {
        case .clientToServer: self.bytesClientToServer.increment(by: count)
        case .serverToClient: self.bytesServerToClient.increment(by: count)
        }
    }

    // MARK: - DCE/RPC

    /// One presentation context of a bind or alter_context was allowed or denied.
    ///
    /// - Parameter interface: a bounded label: the catalog name, the configured UUID, or `unknown`.
    package func bind(interface: String, decision: BindDecision) {
        self.labelledCounter(\.binds, key: BindKey(interface: interface, decision: decision), name: Name.bindsTotal) {
            [("route", self.route), ("interface", interface), ("decision", decision.rawValue)]
        }.increment()
    }

    /// A request was refused by the operation policy.
    ///
    /// - Parameter interface: a bounded label, as for ``bind(interface:decision:)``.
    package func callDenied(interface: String) {
        self.labelledCounter(\.callsDenied, key: interface, name: Name.callsDeniedTotal) {
            [("route", self.route), ("interface", interface)]
        }.increment()
    }

    /// A policy decision for a client in `network` (a CIDR text such as `10.1.2.0/24`).
    package func sourceDecision(network: String, denied: Bool) {
        let known = self.labelled.withLockedValue { counters in
            counters.sources[SourceKey(network: network, denied: denied)] != nil
                || counters.sources[SourceKey(network: network, denied: !denied)] != nil
                || counters.sources.count < 2 * Self.maximumSourceLabels
        }
        let label = known ? network : "other"
        let decision = denied ? "deny" : "allow"
        self.labelledCounter(\.sources, key: SourceKey(network: label, denied: denied), name: Name.sourceDecisionsTotal)
        {
            [("route", self.route), ("source", label), ("decision", decision)]
        }.increment()
    }

    /// A malformed or unexpected PDU ended a connection; `reason` is a stable short code.
    package func pduError(reason: String) {
        self.labelledCounter(\.pduErrors, key: reason, name: Name.pduErrorsTotal) {
            [("route", self.route), ("reason", reason)]
        }.increment()
    }

    /// A decoding error ended a connection; labelled with the error's stable code.
    package func pduError(_ code: RPCWireError.Code) {
        self.pduError(reason: code.description)
    }

    /// `count` endpoint-mapper towers were rewritten to gateway ports.
    package func towersRewritten(_ count: Int = 1) {
        self.towersRewritten.increment(by: count)
    }

    /// `count` endpoint-mapper towers were redacted instead of rewritten.
    package func towersRedacted(_ count: Int = 1) {
        self.towersRedacted.increment(by: count)
    }

    // MARK: - Port pool

    /// A tower could not be rewritten because every gateway port of the route is in use.
    package func portPoolExhausted() {
        self.portPoolExhaustedCounter.increment()
    }

    /// The number of mapped gateway ports changed.
    package func portMappings(active: Int) {
        self.portMappingsActive.set(active)
    }

    // MARK: - Upstream

    /// The result of the last readiness probe of the route's upstream endpoint mapper.
    package func upstreamReachable(_ reachable: Bool) {
        self.upstreamUp.set(reachable ? 1 : 0)
    }

    // MARK: - Cache

    private func labelledCounter<Key: Hashable>(
        _ table: WritableKeyPath<LabelledCounters, [Key: Counter]>,
        key: Key,
        name: String,
        dimensions: () -> [(String, String)]
    ) -> Counter {
        self.labelled.withLockedValue { counters in
            if let counter = counters[keyPath: table][key] {
                return counter
            }
            let counter = Counter(label: name, dimensions: dimensions(), factory: self.factory)
            counters[keyPath: table][key] = counter
            return counter
        }
    }
}

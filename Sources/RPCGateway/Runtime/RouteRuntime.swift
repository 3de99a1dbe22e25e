import Logging
import NIOConcurrencyHelpers
import NIOCore
import RPCPolicy
import RPCWire

/// What ties a route's listeners, pool and upstream together. A reload that keeps a route's
/// identity updates it in place (policy, advertise, caps); a reload that changes it replaces the
/// route: the old one drains, the new one starts with a fresh pool.
struct RouteIdentity: Hashable, Sendable {
    var listenAddress: String
    var epmPort: UInt16
    var ports: ClosedRange<UInt16>
    var upstreamHost: String
    var upstreamEPMPort: UInt16
    var mode: RouteMode
    var portMapping: PortMappingMode
    var serverPortsListen: UInt16?

    init(_ settings: RouteSettings) {
        self.mode = settings.mode
        self.portMapping = settings.portMapping
        self.serverPortsListen = settings.serverPortsListen
        self.listenAddress = settings.listenAddress
        self.epmPort = settings.epmPort
        self.ports = settings.ports
        self.upstreamHost = settings.upstreamHost
        self.upstreamEPMPort = settings.upstreamEPMPort
    }
}

/// A route at run time: its current settings, the resolved upstream address, its port pool,
/// metrics, logger, audit log and upstream probe state. Shared by every connection of the route,
/// on every event loop.
final class RouteRuntime: Sendable {
    let name: String
    let identity: RouteIdentity
    let upstreamAddress: IPv4Address
    let pool: PortPool
    let metrics: RouteMetrics
    let logger: Logger
    let audit: AuditLog?
    /// Where refused binds and calls are kept for the status page (shared by all routes).
    let denials: RecentDenials?
    /// Resolves interfaces at the server's endpoint mapper for bind routing (single-port mode,
    /// ports handed out by another instance, transparent connections).
    let resolver: EndpointResolver
    /// Server endpoints each client was told about in readable replies (transparent mode with
    /// `pinholes: learned`; the DCOM resolver may feed it too), for `mapping_idle_timeout`.
    let pinholes: PinholeTable
    /// Clients already warned that the pool mode refuses their authenticated lookups.
    let protectedLookupWarnings = OnceTable<IPAddress>(capacity: 1024)
    /// Server endpoints already logged as outside a preserve route's range.
    let outsideRangeWarnings = OnceTable<TCPEndpoint>(capacity: 1024)
    private let current: NIOLockedValueBox<Current>
    private let probeState = NIOLockedValueBox(UpstreamProbeState())

    private struct Current {
        var settings: RouteSettings
        /// Bumped by every update, so connections re-read the policy only when it changed.
        var generation: Int
    }

    init(
        settings: RouteSettings,
        upstreamAddress: IPv4Address,
        metrics: RouteMetrics,
        logger: Logger,
        audit: AuditLog? = nil,
        denials: RecentDenials? = nil
    ) {
        self.name = settings.name
        self.identity = RouteIdentity(settings)
        self.audit = audit
        self.denials = denials
        self.upstreamAddress = upstreamAddress
        self.metrics = metrics
        self.resolver = EndpointResolver()
        self.pinholes = PinholeTable(lifetime: settings.mappingIdleTimeout)
        self.pool = PortPool(
            ports: settings.ports,
            idleTimeout: TimeAmount(settings.mappingIdleTimeout),
            metrics: metrics
        )
        self.current = NIOLockedValueBox(Current(settings: settings, generation: 0))
        var logger = logger
        logger[metadataKey: "route"] = "\(settings.name)"
        self.logger = logger
    }

    /// The route's settings as of the last reload.
    var settings: RouteSettings { self.current.withLockedValue { $0.settings } }

    /// The policy and its generation, read together.
    var policy: (policy: Policy, generation: Int) {
        self.current.withLockedValue { ($0.settings.policy, $0.generation) }
    }

    var generation: Int { self.current.withLockedValue { $0.generation } }

    /// Applies reloaded settings with the same identity. The port pool keeps its idle timeout
    /// (a changed `mapping_idle_timeout` takes effect for a replaced route or after a restart).
    func update(_ settings: RouteSettings) {
        self.current.withLockedValue { current in
            current.settings = settings
            current.generation += 1
        }
    }

    // MARK: - Upstream probe

    /// The upstream endpoint mapper (what a direct route's readiness probe connects to).
    var upstreamEndpointMapper: TCPEndpoint {
        TCPEndpoint(address: self.upstreamAddress, port: self.identity.upstreamEPMPort)
    }

    var probe: UpstreamProbeState { self.probeState.withLockedValue { $0 } }

    /// Marks a probe as started; `false` when one is still running.
    func beginProbe() -> Bool {
        self.probeState.withLockedValue { state in
            guard !state.inProgress else { return false }
            state.inProgress = true
            return true
        }
    }

    func probeSucceeded(_ target: ProbeTarget, at now: NIODeadline = .now()) {
        let recovered = self.probeState.withLockedValue { state in
            defer { state.succeeded(at: now, wallClock: .now()) }
            return state.consecutiveFailures > 0
        }
        self.metrics.upstreamReachable(true)
        if recovered {
            self.logger.notice("\(target.what) reachable again", metadata: ["upstream": "\(target)"])
        }
    }

    func probeFailed(_ target: ProbeTarget, error: String, at now: NIODeadline = .now()) {
        let first = self.probeState.withLockedValue { state in
            state.failed(at: now, error: error)
            return state.consecutiveFailures == 1
        }
        self.metrics.upstreamReachable(false)
        // Once per outage at warning level; repeats at debug.
        let metadata: Logger.Metadata = ["upstream": "\(target)", "error": "\(error)"]
        if first {
            self.logger.warning("\(target.what) unreachable", metadata: metadata)
        } else {
            self.logger.debug("\(target.what) still unreachable", metadata: metadata)
        }
    }
}

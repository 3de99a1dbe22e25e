import Logging
import NIOCore
import RPCPolicy
import RPCWire

/// A route at run time: its settings, the resolved upstream address, its port pool, metrics,
/// logger and audit log. Shared by every connection of the route.
final class RouteRuntime: Sendable {
    let settings: RouteSettings
    let upstreamAddress: IPv4Address
    let pool: PortPool
    let metrics: RouteMetrics
    let logger: Logger
    let timeouts: Timeouts
    let wireLimits: WireLimits
    let audit: AuditLog?

    init(
        settings: RouteSettings,
        upstreamAddress: IPv4Address,
        metrics: RouteMetrics,
        timeouts: Timeouts,
        wireLimits: WireLimits,
        logger: Logger,
        audit: AuditLog? = nil
    ) {
        self.settings = settings
        self.audit = audit
        self.upstreamAddress = upstreamAddress
        self.metrics = metrics
        self.pool = PortPool(ports: settings.ports, idleTimeout: TimeAmount(settings.mappingIdleTimeout), metrics: metrics)
        self.timeouts = timeouts
        self.wireLimits = wireLimits
        var logger = logger
        logger[metadataKey: "route"] = "\(settings.name)"
        self.logger = logger
    }

    /// The label for an interface: its catalog name, or `unknown`, so clients cannot grow the
    /// metric's label set.
    func interfaceLabel(_ interface: SyntaxID) -> String {
        InterfaceCatalog.name(of: interface) ?? "unknown"
    }

    /// Turns a connection event into metrics, a log line and, for decisions, an audit record.
    func record(_ event: ConnectionEvent, client: SocketAddress?, server: TCPEndpoint, listener: GatewayMetrics.Listener) {
        let clientText = client.map { "\($0)" } ?? "unknown"
        switch event {
        case .bindDecision(let interface, let decision, let level, let type):
            self.metrics.bind(interface: self.interfaceLabel(interface), decision: decision.permits ? .allow : .deny)
            self.logger.info(
                "bind \(decision.permits ? "allowed" : "denied")",
                metadata: [
                    "listener": "\(listener.rawValue)",
                    "client": "\(clientText)",
                    "server": "\(server)",
                    "interface": "\(self.interfaceLabel(interface))",
                    "uuid": "\(interface)",
                    "auth_type": "\(type)",
                    "auth_level": "\(level)",
                    "decision": "\(decision)",
                ]
            )
            self.recordAudit(.bind, interface, nil, decision, level, type, client: client, server: server, listener: listener)
        case .callDenied(let interface, let opnum, let decision, let level, let type):
            self.metrics.callDenied(interface: self.interfaceLabel(interface))
            self.logger.notice(
                "call denied",
                metadata: [
                    "client": "\(clientText)", "server": "\(server)", "interface": "\(self.interfaceLabel(interface))",
                    "uuid": "\(interface)", "opnum": "\(opnum)", "auth_level": "\(level)", "decision": "\(decision)",
                ]
            )
            self.recordAudit(.call, interface, opnum, decision, level, type, client: client, server: server, listener: listener)
        case .callAudited(let interface, let opnum, let decision, let level, let type):
            self.logger.notice(
                "call audited",
                metadata: [
                    "client": "\(clientText)", "server": "\(server)", "interface": "\(self.interfaceLabel(interface))",
                    "uuid": "\(interface)", "opnum": "\(opnum)", "auth_level": "\(level)", "decision": "\(decision)",
                ]
            )
            self.recordAudit(.call, interface, opnum, decision, level, type, client: client, server: server, listener: listener)
        case .unknownContext(let contextID):
            self.metrics.pduError(reason: "unknown_context")
            self.logger.notice("request on a context never accepted", metadata: ["client": "\(clientText)", "context_id": "\(contextID)"])
        case .endpointLookupDenied(let interface):
            self.logger.info(
                "endpoint lookup denied",
                metadata: ["client": "\(clientText)", "interface": "\(self.interfaceLabel(interface))", "uuid": "\(interface)"]
            )
        case .protocolError(let reason, let detail):
            self.metrics.pduError(reason: reason)
            self.logger.notice("protocol error", metadata: ["client": "\(clientText)", "reason": "\(reason)", "detail": "\(detail)"])
        }
    }

    /// Queues an audit record; the JSON is built on the audit writer thread.
    private func recordAudit(
        _ event: AuditRecord.Event,
        _ interface: SyntaxID,
        _ opnum: UInt16?,
        _ decision: PolicyDecision,
        _ level: AuthLevel,
        _ type: AuthType,
        client: SocketAddress?,
        server: TCPEndpoint,
        listener: GatewayMetrics.Listener
    ) {
        guard let audit = self.audit else { return }
        audit.record(
            AuditRecord(
                time: .now(),
                route: self.settings.name,
                event: event,
                client: client,
                server: server,
                listener: listener,
                interface: interface,
                opnum: opnum,
                authType: type,
                authLevel: level,
                decision: decision,
                policy: self.settings.policy.name
            )
        )
    }
}

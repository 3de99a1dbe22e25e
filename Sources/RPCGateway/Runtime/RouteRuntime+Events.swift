import Logging
import NIOCore
import RPCPolicy
import RPCWire

/// Connection events become metrics, log lines, audit records and, for refusals, the status page's
/// list of recent denials.
extension RouteRuntime {
    /// The label for an interface: its catalog name, or `unknown`, so clients cannot grow the
    /// metric's label set.
    func interfaceLabel(_ interface: SyntaxID) -> String {
        InterfaceCatalog.name(of: interface) ?? "unknown"
    }

    /// Turns a connection event into metrics, a log line and, for decisions, an audit record;
    /// refusals are also kept for the status page.
    func record(
        _ event: ConnectionEvent,
        connection: Int,
        client: SocketAddress?,
        server: TCPEndpoint,
        listener: GatewayMetrics.Listener,
        identity: AuthIdentity? = nil
    ) {
        // Formatted only when a line is logged (the metadata is an autoclosure): a bind at the
        // default log level formats nothing.
        var clientText: String { HostPort.text(client) }
        self.countForTraffic(event, client: client, listener: listener)
        switch event {
        case .bindDecision(let interface, let decision, let level, let type):
            self.metrics.bind(interface: self.interfaceLabel(interface), decision: decision.permits ? .allow : .deny)
            self.logger.log(
                level: decision.permits ? .info : .notice,
                "bind \(decision.permits ? "allowed" : "denied")",
                metadata: [
                    "conn": "\(connection)",
                    "listener": "\(listener.rawValue)",
                    "client": "\(clientText)",
                    "server": "\(server)",
                    "interface": "\(self.interfaceLabel(interface))",
                    "uuid": "\(interface)",
                    "auth_type": "\(type)",
                    "auth_level": "\(level)",
                    "decision": "\(decision.action.rawValue)",
                    "rule": "\(decision.origin.map(\.description) ?? "default")",
                ]
            )
            self.recordDecision(
                .bind,
                interface,
                nil,
                decision,
                level,
                type,
                client: client,
                server: server,
                listener: listener,
                identity: identity
            )
        case .callDenied(let interface, let opnum, let decision, let level, let type, let objectUUID),
            .callAudited(let interface, let opnum, let decision, let level, let type, let objectUUID):
            if !decision.permits { self.metrics.callDenied(interface: self.interfaceLabel(interface)) }
            // A refusal and an audit rule's call are notable; a learning policy's default audits
            // every call, which the audit log records: those log lines stay at debug.
            self.logger.log(
                level: decision.permits && decision.origin == nil ? .debug : .notice,
                decision.permits ? "call audited" : "call denied",
                metadata: [
                    "conn": "\(connection)", "client": "\(clientText)", "server": "\(server)",
                    "interface": "\(self.interfaceLabel(interface))", "uuid": "\(interface)", "opnum": "\(opnum)",
                    "auth_level": "\(level)", "decision": "\(decision.action.rawValue)",
                    "rule": "\(decision.origin.map(\.description) ?? "default")",
                    "ipid": "\(objectUUID.map(\.description) ?? "-")",
                ]
            )
            self.recordDecision(
                .call,
                interface,
                opnum,
                decision,
                level,
                type,
                client: client,
                server: server,
                listener: listener,
                identity: identity,
                dcom: objectUUID.map { AuditRecord.DCOM(ipids: [$0]) }
            )
        case .activation(let interface, let opnum, let activation, let decision, let level, let type):
            let readable: Bool
            if case .known = activation { readable = true } else { readable = false }
            self.metrics.dcomActivation(decision: decision.action.rawValue, sealed: !readable)
            if !decision.permits { self.metrics.callDenied(interface: self.interfaceLabel(interface)) }
            self.logger.log(
                level: decision.permits && decision.origin == nil ? .info : .notice,
                decision.permits ? "DCOM activation allowed" : "DCOM activation denied",
                metadata: [
                    "conn": "\(connection)", "client": "\(clientText)", "server": "\(server)",
                    "interface": "\(self.interfaceLabel(interface))", "opnum": "\(opnum)",
                    "clsid": "\(activation)", "auth_level": "\(level)", "decision": "\(decision.action.rawValue)",
                    "rule": "\(decision.origin.map(\.description) ?? "default")",
                ]
            )
            self.recordDecision(
                .activation,
                interface,
                opnum,
                decision,
                level,
                type,
                client: client,
                server: server,
                listener: listener,
                identity: identity,
                dcom: AuditRecord.DCOM(activation: activation)
            )
        case .dcomEndpointsAnnounced(let announcement):
            // Readable replies only: a sealed one announces nothing the gateway can see.
            self.metrics.dcomPortsAnnounced(count: announcement.ports.count)
            self.logger.info(
                "DCOM object exporter announced",
                metadata: [
                    "conn": "\(connection)", "client": "\(clientText)", "server": "\(server)",
                    "source": "\(announcement.source.rawValue)",
                    "oxid": "\(announcement.oxid.map(AuditRecord.DCOM.hex) ?? "-")",
                    "ports": "\(announcement.ports.map(String.init).joined(separator: ","))",
                    "bindings": "\(announcement.bindings.joined(separator: " "))",
                ]
            )
            self.recordDecision(
                announcement.source == .activation ? .activationReply : .oxidResolution,
                announcement.interface,
                announcement.opnum,
                announcement.decision,
                announcement.authLevel,
                .none,
                client: client,
                server: server,
                listener: listener,
                identity: identity,
                dcom: AuditRecord.DCOM(
                    classID: announcement.classID,
                    oxid: announcement.oxid,
                    ports: announcement.ports,
                    bindings: announcement.bindings,
                    ipids: announcement.ipids
                )
            )
            self.learnPinholes(from: announcement, client: client, server: server)
        case .unknownContext(let contextID):
            self.metrics.pduError(reason: "unknown_context")
            self.logger.notice(
                "request on a context never accepted",
                metadata: ["conn": "\(connection)", "client": "\(clientText)", "context_id": "\(contextID)"]
            )
        case .endpointLookupDenied(let interface):
            self.logger.info(
                "endpoint lookup denied",
                metadata: [
                    "conn": "\(connection)", "client": "\(clientText)",
                    "interface": "\(self.interfaceLabel(interface))", "uuid": "\(interface)",
                ]
            )
        case .authenticatedEndpointMapperRefused(let level, let type):
            // Once per client: a hardened Windows client retries every lookup.
            let metadata: Logger.Metadata = [
                "conn": "\(connection)", "client": "\(clientText)", "auth_type": "\(type)", "auth_level": "\(level)",
            ]
            if let address = IPAddress(client), self.protectedLookupWarnings.first(address) {
                let message =
                    "authenticated endpoint-mapper lookup refused (authenticated_epm): this route's port pool "
                    + "cannot rewrite a signed or sealed reply. Routes that serve such clients: "
                    + "port_mapping: preserve, or mode transparent with server_ports and server_ports_listen "
                    + "(docs/DEPLOYMENT.md, Hardened Windows clients and DCOM). Logged once per client."
                self.logger.warning("\(message)", metadata: metadata)
            } else {
                self.logger.debug(
                    "authenticated endpoint-mapper lookup refused (authenticated_epm)",
                    metadata: metadata
                )
            }
        case .protectedEndpointLookupDenied(let interface):
            self.logger.notice(
                "signed endpoint lookup for a denied interface refused (fault, connection closed)",
                metadata: [
                    "conn": "\(connection)", "client": "\(clientText)",
                    "interface": "\(self.interfaceLabel(interface))", "uuid": "\(interface)",
                ]
            )
        case .firstBindRouted(let server, let handedOutFor):
            self.metrics.bindRouted()
            if let handedOutFor {
                self.logger.notice(
                    "gateway port mapped to another endpoint than the bind's interface; routed by the bind",
                    metadata: ["conn": "\(connection)", "mapping": "\(handedOutFor)", "server": "\(server)"]
                )
            }
        case .firstBindNotRegistered(let interface):
            self.logger.info(
                "bind to an interface the server does not register refused",
                metadata: ["conn": "\(connection)", "client": "\(clientText)", "uuid": "\(interface)"]
            )
        case .alterContextServedElsewhere(let interfaces):
            for interface in interfaces {
                self.metrics.bind(interface: self.interfaceLabel(interface), decision: .deny)
            }
            self.logger.notice(
                "alter_context to an interface served by another endpoint refused",
                metadata: ["conn": "\(connection)", "client": "\(clientText)", "server": "\(server)"]
            )
        case .secondaryAddressKept(let serverPort):
            self.metrics.secondaryAddressKept()
            self.logger.debug(
                "authenticated bind_ack passed with the server's port as its secondary address",
                metadata: ["conn": "\(connection)", "client": "\(clientText)", "secondary_address": "\(serverPort)"]
            )
        case .protocolError(let reason, let detail):
            self.metrics.pduError(reason: reason)
            self.logger.notice(
                "protocol error",
                metadata: [
                    "conn": "\(connection)", "client": "\(clientText)", "reason": "\(reason)", "detail": "\(detail)",
                ]
            )
        }
    }

    /// A readable DCOM reply told the client where the object exporter listens: on a transparent
    /// route with `server_ports_listen`, open those (server, port) pairs for `pinholes: learned`,
    /// as readable endpoint-mapper towers do. The exporter is on the SCM's host (the connection's
    /// server); ports outside `server_ports` are not opened (that listener would refuse them).
    private func learnPinholes(from announcement: DCOMAnnouncement, client: SocketAddress?, server: TCPEndpoint) {
        let settings = self.settings
        guard settings.learnsPinholes, let address = IPAddress(client) else { return }
        for port in announcement.ports where settings.allowsServerPort(port) {
            self.pinholes.open(client: address, server: TCPEndpoint(address: server.address, port: port))
        }
    }

    /// One record per decision: queued for the audit log (the JSON is built on the audit writer
    /// thread) and, for a refusal, kept for the status page.
    private func recordDecision(
        _ event: AuditRecord.Event,
        _ interface: SyntaxID,
        _ opnum: UInt16?,
        _ decision: PolicyDecision,
        _ level: AuthLevel,
        _ type: AuthType,
        client: SocketAddress?,
        server: TCPEndpoint,
        listener: GatewayMetrics.Listener,
        identity: AuthIdentity?,
        dcom: AuditRecord.DCOM? = nil
    ) {
        let refused = !decision.permits
        guard self.audit != nil || (refused && self.denials != nil) else { return }
        let settings = self.settings
        let record = AuditRecord(
            time: .now(),
            route: settings.name,
            event: event,
            client: client,
            server: server,
            listener: listener,
            interface: interface,
            opnum: opnum,
            authType: type,
            authLevel: level,
            identity: identity,
            decision: decision,
            policy: settings.policy.name,
            dcom: dcom
        )
        self.audit?.record(record)
        if refused { self.denials?.record(record) }
    }
}

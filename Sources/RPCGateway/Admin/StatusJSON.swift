import RPCPolicy
import RPCWire

// `/status.json`: the same snapshot as the status page. Durations are whole seconds (`*_seconds`,
// rounded down), times RFC 3339 UTC with milliseconds; absent values are `null`.

extension GatewayStatus {
    package var json: JSONValue {
        .object([
            ("version", .string(self.version)),
            ("generated_at", .string(self.generatedAt.rfc3339)),
            ("started_at", .string(self.startedAt.rfc3339)),
            ("uptime_seconds", .int(self.uptime.components.seconds)),
            ("ready", .bool(self.readiness.isReady)),
            ("draining", .bool(self.draining)),
            ("active_connections", .int(Int64(self.activeConnections))),
            ("max_connections", .int(Int64(self.maximumConnections))),
            ("routes", .array(self.routes.map(\.json))),
            ("connections", .array(self.connections.map(\.json))),
            ("connections_omitted", .int(Int64(self.connectionsOmitted))),
            ("connections_awaiting_bind", .int(Int64(self.connectionsAwaitingBind))),
            ("denials", .array(self.denials.map(\.json))),
            ("denials_total", .int(Int64(self.denialsTotal))),
            ("top", self.traffic.json),
        ])
    }
}

extension TrafficSummary.Snapshot {
    var json: JSONValue {
        func interfaces(_ rows: [TrafficSummary.Row<SyntaxID>]) -> JSONValue {
            .array(
                rows.map { row in
                    .object([
                        ("interface", .string(InterfaceCatalog.name(of: row.key) ?? "unknown")),
                        ("uuid", .string("\(row.key.uuid)")),
                        ("version", .string("\(row.key.majorVersion).\(row.key.minorVersion)")),
                        ("seen", .int(Int64(row.counts.seen))),
                        ("denied", .int(Int64(row.counts.denied))),
                    ])
                }
            )
        }
        func sources(_ rows: [TrafficSummary.Row<String>]) -> JSONValue {
            .array(
                rows.map { row in
                    .object([
                        ("source", .string(row.key)),
                        ("seen", .int(Int64(row.counts.seen))),
                        ("denied", .int(Int64(row.counts.denied))),
                    ])
                }
            )
        }
        return .object([
            ("interfaces", interfaces(self.interfaces)),
            ("sources", sources(self.sources)),
            ("denied_interfaces", interfaces(self.deniedInterfaces)),
            ("denied_sources", sources(self.deniedSources)),
            (
                "other_interfaces",
                .object([
                    ("seen", .int(Int64(self.otherInterfaces.seen))),
                    ("denied", .int(Int64(self.otherInterfaces.denied))),
                ])
            ),
            (
                "other_sources",
                .object([
                    ("seen", .int(Int64(self.otherSources.seen))), ("denied", .int(Int64(self.otherSources.denied))),
                ])
            ),
        ])
    }
}

extension RouteStatus {
    var json: JSONValue {
        .object([
            ("name", .string(self.name)),
            ("mode", .string(self.mode)),
            ("servers", .array(self.servers.map(JSONValue.string))),
            ("listen", .string(self.listenAddress)),
            ("epm_port", .int(Int64(self.epmPort))),
            (
                "ports",
                .object([("first", .int(Int64(self.ports.lowerBound))), ("last", .int(Int64(self.ports.upperBound)))])
            ),
            ("advertise", .string(orNull: self.advertiseAddress.map { "\($0)" })),
            ("upstream", .string(self.upstreamHost)),
            ("upstream_address", .string("\(self.upstreamAddress)")),
            ("upstream_epm_port", .int(Int64(self.upstreamEPMPort))),
            ("via", .string(orNull: self.via)),
            (
                "policy",
                .object([
                    ("name", .string(self.policyName)),
                    ("default", .string(self.policyDefault.rawValue)),
                    ("rules", .int(Int64(self.ruleCount))),
                ])
            ),
            ("active_connections", .int(Int64(self.activeConnections))),
            ("max_connections", .int(Int64(self.maximumConnections))),
            ("mapping_idle_timeout_seconds", .int(self.mappingIdleTimeout.components.seconds)),
            ("mappings", .array(self.mappings.map(\.json))),
            ("upstream_probe", self.readiness.json),
        ])
    }
}

extension MappingStatus {
    var json: JSONValue {
        .object([
            ("gateway_port", .int(Int64(self.gatewayPort))),
            ("server", .string("\(self.server)")),
            ("active_connections", .int(Int64(self.activeConnections))),
            ("idle_seconds", .int(orNull: self.idle.map { $0.components.seconds })),
            ("expires_in_seconds", .int(orNull: self.expiresIn.map { $0.components.seconds })),
        ])
    }
}

extension ConnectionStatus {
    var json: JSONValue {
        .object([
            ("id", .int(Int64(self.id))),
            ("route", .string(self.route)),
            ("listener", .string(self.listener.rawValue)),
            ("client", .string(self.client)),
            ("gateway_port", .int(orNull: self.gatewayPort)),
            ("server", .string("\(self.server)")),
            ("age_seconds", .int(self.age.components.seconds)),
            ("idle_seconds", .int(self.idle.components.seconds)),
            ("bytes_from_client", .int(Int64(self.bytesFromClient))),
            ("bytes_from_server", .int(Int64(self.bytesFromServer))),
            ("interfaces", .array(self.interfaceNames.map(JSONValue.string))),
            ("auth_level", .string("\(self.authLevel)")),
            ("call_in_flight", .bool(self.callInFlight)),
        ])
    }
}

extension AuditRecord {
    var json: JSONValue {
        .object([
            ("time", .string(self.time.rfc3339)),
            ("route", .string(self.route)),
            ("event", .string(self.event.rawValue)),
            ("client", .string(self.clientText)),
            ("identity", .string(orNull: self.identity == nil ? nil : self.identityText)),
            ("listener", .string(self.listener.rawValue)),
            ("server", .string("\(self.server)")),
            ("interface", .string(self.interfaceName)),
            ("uuid", .string("\(self.interface.uuid)")),
            ("version", .string("\(self.interface.majorVersion).\(self.interface.minorVersion)")),
            ("opnum", .int(orNull: self.opnum)),
            ("auth_level", .string("\(self.authLevel)")),
            ("decision", .string(self.decision.action.rawValue)),
            ("rule", .int(orNull: self.decision.origin.map(\.index))),
            ("profile", .string(orNull: self.decision.origin?.profile)),
            ("policy", .string(self.policy)),
        ])
    }
}

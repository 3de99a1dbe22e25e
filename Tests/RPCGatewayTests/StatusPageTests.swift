import Foundation
import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// Snapshots for the admin tests: two routes, one mapping, one connection, two refusals.
enum StatusFixtures {
    static func readiness(failing: Set<String>) -> ReadinessReport {
        ReadinessReport(
            draining: false,
            routes: [("dc1", "10.0.0.2:135"), ("dc2", "10.0.0.3:135")].map { name, upstream in
                ReadinessReport.Route(
                    name: name,
                    upstream: upstream,
                    ready: !failing.contains(name),
                    lastSuccessAge: failing.contains(name) ? nil : .seconds(4),
                    lastError: failing.contains(name) ? "Connection refused" : nil,
                    consecutiveFailures: failing.contains(name) ? 3 : 0
                )
            }
        )
    }

    static func denial(
        route: String = "dc1",
        client: String = "10.1.2.3:50123",
        interface: SyntaxID = InterfaceCatalog.named("wkssvc")!.syntax,
        opnum: UInt16? = nil,
        origin: RuleOrigin? = nil
    ) -> AuditRecord {
        // The client is a socket address now: text that is none (a hostile string) becomes none.
        let parts = client.split(separator: ":")
        let address =
            parts.count == 2 ? Int(parts[1]).flatMap { try? SocketAddress(ipAddress: String(parts[0]), port: $0) } : nil
        return AuditRecord(
            time: AuditTimestamp(millisecondsSinceEpoch: 1_795_000_000_123),
            route: route,
            event: opnum == nil ? .bind : .call,
            client: address,
            server: TCPEndpoint(address: IPv4Address("10.0.0.2")!, port: 49667),
            listener: .mapped,
            interface: interface,
            opnum: opnum,
            authType: .none,
            authLevel: .none,
            decision: PolicyDecision(action: .deny, origin: origin),
            policy: "dc"
        )
    }

    static func route(name: String, readiness: ReadinessReport, mappings: [MappingStatus]) -> RouteStatus {
        RouteStatus(
            name: name,
            listenAddress: "10.99.0.1",
            epmPort: 135,
            ports: 50000...50019,
            advertiseAddress: nil,
            upstreamHost: "dc1.example.test",
            upstreamAddress: IPv4Address("10.0.0.2")!,
            upstreamEPMPort: 135,
            policyName: "dc",
            policyDefault: .deny,
            ruleCount: 3,
            activeConnections: 1,
            maximumConnections: 1024,
            mappingIdleTimeout: .seconds(600),
            mappings: mappings,
            readiness: readiness.routes.first { $0.name == name }
                ?? ReadinessReport.Route(
                    name: name,
                    upstream: "10.0.0.2:135",
                    ready: true,
                    lastSuccessAge: .seconds(4),
                    lastError: nil,
                    consecutiveFailures: 0
                )
        )
    }

    static func status(
        routeName: String = "dc1",
        denials: [AuditRecord] = [
            denial(),
            denial(
                interface: InterfaceCatalog.named("drsuapi")!.syntax,
                opnum: 3,
                origin: RuleOrigin(index: 0, profile: "block-dcsync")
            ),
        ],
        error: String? = nil
    ) -> GatewayStatus {
        var readiness = Self.readiness(failing: error == nil ? [] : ["dc2"])
        if let error { readiness.routes[1].lastError = error }
        let mapping = MappingStatus(
            gatewayPort: 50003,
            server: TCPEndpoint(address: IPv4Address("10.0.0.2")!, port: 49667),
            activeConnections: 0,
            idle: .seconds(75),
            expiresIn: .seconds(525)
        )
        return GatewayStatus(
            version: "0.1.0",
            generatedAt: AuditTimestamp(millisecondsSinceEpoch: 1_795_000_100_000),
            startedAt: AuditTimestamp(millisecondsSinceEpoch: 1_795_000_000_000),
            uptime: .seconds(100),
            draining: false,
            activeConnections: 1,
            maximumConnections: 4096,
            routes: [
                Self.route(name: routeName, readiness: Self.readiness(failing: []), mappings: [mapping]),
                Self.route(name: "dc2", readiness: readiness, mappings: []),
            ],
            connections: [
                ConnectionStatus(
                    id: 7,
                    route: routeName,
                    listener: .mapped,
                    client: "10.1.2.3:50123",
                    gatewayPort: 50003,
                    server: TCPEndpoint(address: IPv4Address("10.0.0.2")!, port: 49667),
                    age: .seconds(12),
                    idle: .seconds(3),
                    bytesFromClient: 1200,
                    bytesFromServer: 3400,
                    interfaces: [InterfaceCatalog.named("samr")!.syntax],
                    authLevel: .privacy,
                    callInFlight: true
                )
            ],
            connectionsOmitted: 0,
            denials: denials,
            denialsTotal: denials.count + 5,
            readiness: readiness
        )
    }
}

@Suite("Status page")
struct StatusPageTests {
    @Test("shows routes, mappings with server endpoints and idle times, connections and refusals")
    func content() {
        let html = StatusPage.render(StatusFixtures.status())
        #expect(html.hasPrefix("<!DOCTYPE html>\n<html lang=\"en\">"))
        #expect(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"))
        #expect(!html.lowercased().contains("<script"))
        // Routes: listener, range, upstream (configured name and resolved address), policy.
        #expect(html.contains("<td class=\"mono\">10.99.0.1:135</td>"))
        #expect(html.contains("<td class=\"mono\">50000-50019</td><td class=\"num\">1 / 20</td>"))
        #expect(html.contains("dc1.example.test:135 (10.0.0.2)"))
        #expect(html.contains("dc (3 rules, default deny)"))
        // The mapping and its idle time.
        #expect(html.contains("<td class=\"mono num gateway-port\">50003</td><td class=\"mono\">10.0.0.2:49667</td>"))
        #expect(html.contains("<td class=\"num\">1 m 15 s</td><td class=\"num\">8 m 45 s</td>"))
        // The connection.
        #expect(html.contains("<td>samr</td><td>privacy</td>"))
        #expect(html.contains("in flight"))
        // Refusals, newest first as given, with rule text.
        #expect(html.contains("Recent refused binds and calls (last 2 of 7)"))
        #expect(html.contains("<td class=\"interface\">wkssvc</td>"))
        #expect(html.contains("6bffd098-a112-3610-9833-46c3f87e345a v1.0"))
        #expect(html.contains("<td>rule 0 (profile block-dcsync)</td>"))
        #expect(html.contains("<td>default</td>"))
        #expect(html.contains("2026-11-18T"))
        #expect(html.contains("<span class=\"badge good\">ready</span>"))
    }

    @Test("everything from the configuration or the wire is escaped")
    func escaping() {
        let hostile = "<script>alert('x')</script>&\""
        let status = StatusFixtures.status(
            routeName: hostile,
            denials: [StatusFixtures.denial(route: hostile)],
            error: "</td><script>bad()</script>\"><img src=x onerror=alert(1)>"
        )
        let html = StatusPage.render(status)
        #expect(!html.contains("<script"))
        #expect(!html.contains("<img"))
        #expect(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"))
        #expect(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"))
        #expect(html.contains("&lt;/td&gt;&lt;script&gt;bad()&lt;/script&gt;"))
        #expect(html.contains("<span class=\"badge bad\">not ready</span>"))
        #expect(HTML.escape("a&b<c>d\"e'f") == "a&amp;b&lt;c&gt;d&quot;e&#39;f")
        #expect(HTML.escape("plain é") == "plain é")
    }

    @Test("empty sections say so")
    func empty() {
        var status = StatusFixtures.status(denials: [])
        status.connections = []
        status.routes = status.routes.map { route in
            var route = route
            route.mappings = []
            return route
        }
        let html = StatusPage.render(status)
        #expect(html.contains("No gateway port is mapped."))
        #expect(html.contains("No spliced connection.</p>"))
        status.connectionsAwaitingBind = 2
        status.connectionsOmitted = 3
        let counted = StatusPage.render(status)
        #expect(
            counted.contains(
                "No spliced connection. 2 waiting for their first bind (routed by its interface). 3 more not listed."
            )
        )
        #expect(html.contains("Nothing refused since start."))
    }

    @Test("/status.json has the same facts, valid JSON, strings escaped")
    func json() throws {
        let status = StatusFixtures.status(routeName: "dc\"1\n")
        let text = status.json.text
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["ready"] as? Bool == true)
        #expect(object["uptime_seconds"] as? Int == 100)
        #expect(object["denials_total"] as? Int == 7)
        let routes = try #require(object["routes"] as? [[String: Any]])
        #expect(routes.first?["name"] as? String == "dc\"1\n")
        #expect((routes.first?["ports"] as? [String: Any])?["first"] as? Int == 50000)
        let mapping = try #require((routes.first?["mappings"] as? [[String: Any]])?.first)
        #expect(mapping["idle_seconds"] as? Int == 75)
        #expect(mapping["expires_in_seconds"] as? Int == 525)
        let connection = try #require((object["connections"] as? [[String: Any]])?.first)
        #expect(connection["interfaces"] as? [String] == ["samr"])
        #expect(connection["call_in_flight"] as? Bool == true)
        #expect(connection["gateway_port"] as? Int == 50003)
    }

    @Test("mappings seen at a time: in use, or idle with the time left")
    func mappingStatus() {
        let now = NIODeadline.uptimeNanoseconds(10_000_000_000_000)
        let server = TCPEndpoint(address: IPv4Address("10.0.0.2")!, port: 49667)
        let busy = MappingStatus(
            PortMapping(gatewayPort: 50000, server: server, activeConnections: 2, lastUsed: now - .seconds(900)),
            now: now,
            idleTimeout: .seconds(600)
        )
        #expect(busy.idle == nil && busy.expiresIn == nil)
        let idle = MappingStatus(
            PortMapping(gatewayPort: 50000, server: server, activeConnections: 0, lastUsed: now - .seconds(100)),
            now: now,
            idleTimeout: .seconds(600)
        )
        #expect(idle.idle == .seconds(100) && idle.expiresIn == .seconds(500))
        let overdue = MappingStatus(
            PortMapping(gatewayPort: 50000, server: server, activeConnections: 0, lastUsed: now - .seconds(700)),
            now: now,
            idleTimeout: .seconds(600)
        )
        #expect(overdue.expiresIn == .zero)
    }
}

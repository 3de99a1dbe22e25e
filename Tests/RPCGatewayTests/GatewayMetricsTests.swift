import MetricsTestKit
import RPCGateway
import RPCWire
import Testing

@Suite("GatewayMetrics")
struct GatewayMetricsTests {
    @Test("connection metrics carry route and listener labels")
    func connections() throws {
        let metrics = TestMetrics()
        let route = GatewayMetrics(factory: metrics).route("dc1")

        route.connectionOpened(listener: .epm)
        route.connectionOpened(listener: .mapped)
        route.connectionOpened(listener: .mapped)
        route.connectionClosed()

        let epm = try metrics.expectCounter("rpcgate_connections_total", [("route", "dc1"), ("listener", "epm")])
        let mapped = try metrics.expectCounter("rpcgate_connections_total", [("route", "dc1"), ("listener", "mapped")])
        #expect(epm.totalValue == 1)
        #expect(mapped.totalValue == 2)
        #expect(try metrics.expectMeter("rpcgate_connections_active", [("route", "dc1")]).lastValue == 2)

        route.connectionRefused(reason: .cap)
        route.connectionRefused(reason: .upstreamUnreachable)
        route.connectionRefused(reason: .unmappedPort)
        route.connectionRefused(reason: .unmappedPort)
        let refused = "rpcgate_connections_refused_total"
        #expect(try metrics.expectCounter(refused, [("route", "dc1"), ("reason", "cap")]).totalValue == 1)
        #expect(
            try metrics.expectCounter(refused, [("route", "dc1"), ("reason", "upstream_unreachable")]).totalValue == 1
        )
        #expect(try metrics.expectCounter(refused, [("route", "dc1"), ("reason", "unmapped_port")]).totalValue == 2)

        route.connectionClosed(reason: CloseReason.bindTimeout.rawValue)
        route.connectionClosed(reason: CloseReason.serverError.rawValue)
        route.connectionClosed(reason: CloseReason.serverError.rawValue)
        let closed = "rpcgate_connections_closed_total"
        #expect(try metrics.expectCounter(closed, [("route", "dc1"), ("reason", "bind_timeout")]).totalValue == 1)
        #expect(try metrics.expectCounter(closed, [("route", "dc1"), ("reason", "server_error")]).totalValue == 2)
    }

    @Test("DCE/RPC metrics: binds, denied calls, PDU errors, towers")
    func rpc() throws {
        let metrics = TestMetrics()
        let route = GatewayMetrics(factory: metrics).route("dc1")

        route.bind(interface: "samr", decision: .allow)
        route.bind(interface: "samr", decision: .allow)
        route.bind(interface: "unknown", decision: .deny)
        route.callDenied(interface: "drsuapi")
        route.pduError(RPCWireError.Code.fragmentTooLong)
        route.pduError(reason: "fragment_too_long")
        route.towersRewritten(3)
        route.towersRewritten()
        route.towersRedacted(2)

        #expect(try metrics.expectCounter("rpcgate_epm_towers_redacted_total", [("route", "dc1")]).totalValue == 2)
        let binds = "rpcgate_binds_total"
        #expect(
            try metrics.expectCounter(binds, [("route", "dc1"), ("interface", "samr"), ("decision", "allow")])
                .totalValue == 2
        )
        #expect(
            try metrics.expectCounter(binds, [("route", "dc1"), ("interface", "unknown"), ("decision", "deny")])
                .totalValue == 1
        )
        #expect(metrics.counters(label: binds).count == 2)
        #expect(
            try metrics.expectCounter("rpcgate_calls_denied_total", [("route", "dc1"), ("interface", "drsuapi")])
                .totalValue == 1
        )
        #expect(
            try metrics.expectCounter("rpcgate_pdu_errors_total", [("route", "dc1"), ("reason", "fragment_too_long")])
                .totalValue == 2
        )
        #expect(try metrics.expectCounter("rpcgate_epm_towers_rewritten_total", [("route", "dc1")]).totalValue == 4)
    }

    @Test("bytes and port-pool metrics")
    func bytesAndPool() throws {
        let metrics = TestMetrics()
        let route = GatewayMetrics(factory: metrics).route("dc1")

        route.bytes(100, direction: .clientToServer)
        route.bytes(5, direction: .clientToServer)
        route.bytes(7, direction: .serverToClient)
        route.portPoolExhausted()
        route.portMappings(active: 12)

        let bytes = "rpcgate_bytes_total"
        #expect(
            try metrics.expectCounter(bytes, [("route", "dc1"), ("direction", "client_to_server")]).totalValue == 105
        )
        #expect(
            try metrics.expectCounter(bytes, [("route", "dc1"), ("direction", "server_to_client")]).totalValue == 7
        )
        #expect(try metrics.expectCounter("rpcgate_port_pool_exhausted_total", [("route", "dc1")]).totalValue == 1)
        #expect(try metrics.expectMeter("rpcgate_port_mappings_active", [("route", "dc1")]).lastValue == 12)
    }

    @Test("routes are labelled apart; every fixed label set exists from the start")
    func routesAreSeparate() throws {
        let metrics = TestMetrics()
        let gateway = GatewayMetrics(factory: metrics)
        let one = gateway.route("one")
        let two = gateway.route("two")
        #expect(one.route == "one")

        one.connectionOpened(listener: .epm)
        two.bind(interface: "lsarpc", decision: .deny)

        // Created up front (so exported as 0), without a value recorded yet.
        #expect(try metrics.expectMeter("rpcgate_connections_active", [("route", "two")]).lastValue == nil)
        #expect(try metrics.expectMeter("rpcgate_port_mappings_active", [("route", "two")]).lastValue == nil)
        #expect(
            try metrics.expectCounter("rpcgate_bytes_total", [("route", "two"), ("direction", "server_to_client")])
                .totalValue == 0
        )
        #expect(try metrics.expectMeter("rpcgate_connections_active", [("route", "one")]).lastValue == 1)
        let oneEPM = try metrics.expectCounter("rpcgate_connections_total", [("route", "one"), ("listener", "epm")])
        let twoEPM = try metrics.expectCounter("rpcgate_connections_total", [("route", "two"), ("listener", "epm")])
        #expect(oneEPM.totalValue == 1)
        #expect(twoEPM.totalValue == 0)
        #expect(metrics.counters(label: "rpcgate_binds_total").map(\.dimensions.first?.1) == ["two"])
    }

    @Test("a second RouteMetrics for the same route shares the counts and resets nothing")
    func recreatedRoute() throws {
        let metrics = TestMetrics()
        let gateway = GatewayMetrics(factory: metrics)
        let first = gateway.route("dc1")
        first.connectionOpened(listener: .mapped)
        first.connectionOpened(listener: .mapped)

        let second = gateway.route("dc1")
        second.connectionClosed()
        second.connectionOpened(listener: .epm)

        #expect(try metrics.expectMeter("rpcgate_connections_active", [("route", "dc1")]).lastValue == 2)
        #expect(metrics.counterTotal(label: "rpcgate_connections_total") == 3)
    }
}

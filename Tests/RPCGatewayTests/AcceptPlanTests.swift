import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

/// ``AcceptPlan``: mode × listener × pool × original destination, without sockets.
@Suite("Accept plan")
struct AcceptPlanTests {
    static let upstream = IPv4Address("10.99.0.2")!
    static let epm = TCPEndpoint(address: Self.upstream, port: 135)

    func plan(
        _ mode: RouteMode,
        _ listener: GatewayMetrics.Listener,
        port: UInt16 = 50_000,
        mapping: TCPEndpoint? = nil,
        destination: AcceptPlan.Destination = .notAsked
    ) -> AcceptPlan {
        AcceptPlan.plan(
            mode: mode,
            listener: listener,
            listenerPort: port,
            epmPort: 135,
            upstream: Self.upstream,
            upstreamEPMPort: 135,
            mapping: mapping,
            destination: destination,
            admitsServer: { $0 == Self.upstream }
        )
    }

    @Test("The endpoint-mapper listener splices to the server's endpoint mapper in every mode")
    func endpointMapperListener() {
        #expect(self.plan(.mapped, .epm) == AcceptPlan(action: .splice(role: .endpointMapper, server: Self.epm)))
        #expect(self.plan(.singlePort, .epm) == AcceptPlan(action: .splice(role: .endpointMapper, server: Self.epm)))
        #expect(
            self.plan(.transparent(servers: []), .epm, destination: .original(Self.epm))
                == AcceptPlan(action: .splice(role: .endpointMapper, server: Self.epm), upstreamAddress: Self.upstream)
        )
    }

    @Test("Mapped mode: a handed-out port prefers its server, and counts against its mapping; others route by bind")
    func mappedPorts() {
        let server = TCPEndpoint(address: Self.upstream, port: 49_152)
        #expect(
            self.plan(.mapped, .mapped, mapping: server)
                == AcceptPlan(
                    action: .routeByBind(FirstBindRouting(mapper: Self.epm, preferred: server)),
                    mappedPort: 50_000,
                    gatewayPort: 50_000
                )
        )
        #expect(
            self.plan(.mapped, .mapped)
                == AcceptPlan(action: .routeByBind(FirstBindRouting(mapper: Self.epm)), gatewayPort: 50_000)
        )
        #expect(
            self.plan(.mapped, .mapped).machine(
                policy: Policy(name: "p", defaultAction: .allow, rules: []),
                client: .v4(1),
                limits: WireLimits()
            )?.gatewayPort == 50_000
        )
        #expect(
            self.plan(.mapped, .epm).machine(
                policy: Policy(name: "p", defaultAction: .allow, rules: []),
                client: .v4(1),
                limits: WireLimits()
            )?.gatewayPort == nil
        )
    }

    @Test("Single-port mode routes by bind; the EPM port also serves the endpoint mapper")
    func singlePort() {
        #expect(
            self.plan(.singlePort, .mapped)
                == AcceptPlan(action: .routeByBind(FirstBindRouting(mapper: Self.epm)), gatewayPort: 50_000)
        )
        #expect(
            self.plan(.singlePort, .mapped, port: 135)
                == AcceptPlan(
                    action: .routeByBind(FirstBindRouting(mapper: Self.epm, servesEndpointMapper: true)),
                    gatewayPort: 135
                )
        )
    }

    @Test("Transparent mode: refused without an allowed original destination; spliced when the port maps there")
    func transparent() {
        let mode = RouteMode.transparent(servers: [])
        guard case .refuse(.noOriginalDestination, _) = self.plan(mode, .mapped, destination: .unknown).action else {
            Issue.record("expected a refusal")
            return
        }
        let outside = TCPEndpoint(address: IPv4Address("10.99.0.3")!, port: 49_152)
        guard case .refuse(.destinationNotAllowed, _) = self.plan(mode, .mapped, destination: .original(outside)).action
        else {
            Issue.record("expected a refusal")
            return
        }
        let server = TCPEndpoint(address: Self.upstream, port: 49_152)
        #expect(
            self.plan(mode, .mapped, mapping: server, destination: .original(server))
                == AcceptPlan(
                    action: .splice(role: .mapped, server: server),
                    mappedPort: 50_000,
                    upstreamAddress: Self.upstream
                )
        )
        let otherServer = TCPEndpoint(address: IPv4Address("10.99.0.9")!, port: 49_152)
        #expect(
            self.plan(mode, .mapped, mapping: otherServer, destination: .original(server))
                == AcceptPlan(action: .routeByBind(FirstBindRouting(mapper: Self.epm)), upstreamAddress: Self.upstream),
            "a mapping to another server is not this connection's"
        )
    }

    @Test("The plan makes the machine it needs")
    func machines() {
        let policy = Policy(name: "p", defaultAction: .allow, rules: [])
        let client = IPAddress("10.1.2.3")!
        let splice = self.plan(.mapped, .epm).machine(policy: policy, client: client, limits: WireLimits())
        #expect(splice?.role == .endpointMapper)
        #expect(splice?.server == Self.epm)
        #expect(splice?.acceptsClientPDUs == false)
        let routed = self.plan(.mapped, .mapped).machine(policy: policy, client: client, limits: WireLimits())
        #expect(routed?.isAwaitingFirstBind == true)
        #expect(
            self.plan(.transparent(servers: []), .mapped, destination: .unknown).machine(
                policy: policy,
                client: client,
                limits: WireLimits()
            ) == nil
        )
    }
}

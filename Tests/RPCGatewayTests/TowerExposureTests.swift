import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

/// ``TowerExposure``: what one ncacn_ip_tcp tower of an endpoint-mapper reply may reveal.
@Suite("Tower exposure")
struct TowerExposureTests {
    static let upstream = IPv4Address("10.99.0.2")!
    static let samr = InterfaceCatalog.named("samr")!.syntax

    static func route(serverPorts: [ClosedRange<UInt16>]?) -> RouteSettings {
        var route = RouteSettings(
            name: "dc1",
            listenAddress: "10.99.0.1",
            upstreamHost: "10.99.0.2",
            ports: 50000...50009,
            policy: Policy(name: "open", defaultAction: .allow, rules: [])
        )
        route.allowedServerPorts = serverPorts
        return route
    }

    func classify(port: UInt16, host: IPv4Address = Self.upstream, serverPorts: [ClosedRange<UInt16>]?) -> TowerExposure
    {
        TowerExposure.classify(
            EPMTowerEndpoint(interface: Self.samr, endpoint: TCPEndpoint(address: host, port: port)),
            route: Self.route(serverPorts: serverPorts),
            upstreamAddress: Self.upstream,
            mayLookUp: { _ in true }
        )
    }

    @Test("Without server_ports any port of the server is mapped")
    func anyPort() {
        #expect(self.classify(port: 22, serverPorts: nil) == .mapped(TCPEndpoint(address: Self.upstream, port: 22)))
        #expect(
            self.classify(port: 49154, serverPorts: nil) == .mapped(TCPEndpoint(address: Self.upstream, port: 49154))
        )
    }

    @Test("With server_ports a port outside them is redacted; the EPM port and other hosts as before")
    func allowedPorts() {
        let allowed: [ClosedRange<UInt16>] = [49152...65535, 3268...3268]
        #expect(
            self.classify(port: 49154, serverPorts: allowed)
                == .mapped(TCPEndpoint(address: Self.upstream, port: 49154))
        )
        #expect(
            self.classify(port: 3268, serverPorts: allowed) == .mapped(TCPEndpoint(address: Self.upstream, port: 3268))
        )
        #expect(self.classify(port: 22, serverPorts: allowed) == .portNotAllowed)
        #expect(self.classify(port: 445, serverPorts: allowed) == .portNotAllowed)
        #expect(self.classify(port: 135, serverPorts: allowed) == .endpointMapper)
        #expect(self.classify(port: 22, host: IPv4Address("10.99.0.9")!, serverPorts: allowed) == .foreignHost)
    }
}

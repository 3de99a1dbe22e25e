import Foundation
import RPCGateway
import RPCGatewayConfig
import Testing

@Suite("Fair admission configuration")
struct SourceLimitsConfigurationTests {
    @Test("Defaults, global keys and per-route overrides")
    func keys() throws {
        let defaults = try ConfigurationLoader.parse(yaml: minimalConfig)
        #expect(defaults.limits.perSource == SourceLimits())
        #expect(defaults.limits.perSource.maximumConnections == 256)
        #expect(defaults.limits.perSource.newConnectionsPerSecond == 100)
        #expect(defaults.routes[0].maximumConnectionsPerSource == nil)

        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                upstream: 10.99.0.2
                ports: 50000-50099
                policy: dc
                max_connections_per_source: 900
                new_connections_per_second_per_source: 500
            policies:
              dc:
                default: deny
            limits:
              max_connections_per_source: 32
              new_connections_per_second_per_source: 10
              source_prefix_ipv4: 24
              source_prefix_ipv6: 56
            """
        let settings = try ConfigurationLoader.parse(yaml: yaml)
        let global = settings.limits.perSource
        #expect(
            global
                == SourceLimits(
                    maximumConnections: 32,
                    newConnectionsPerSecond: 10,
                    ipv4PrefixLength: 24,
                    ipv6PrefixLength: 56
                )
        )
        let route = settings.routes[0]
        let effective = global.overridden(
            maximumConnections: route.maximumConnectionsPerSource,
            newConnectionsPerSecond: route.newConnectionsPerSecondPerSource
        )
        #expect(
            effective
                == SourceLimits(
                    maximumConnections: 900,
                    newConnectionsPerSecond: 500,
                    ipv4PrefixLength: 24,
                    ipv6PrefixLength: 56
                )
        )
    }

    @Test("Out-of-range values name their key")
    func problemsNameTheKey() {
        let yaml =
            minimalConfig + """
                limits:
                  max_connections_per_source: 0
                  new_connections_per_second_per_source: lots
                  source_prefix_ipv4: 33
                  source_prefix_ipv6: 8
                """
        let found = problems(yaml)
        #expect(
            found.map(\.keyPath) == [
                "limits.max_connections_per_source", "limits.new_connections_per_second_per_source",
                "limits.source_prefix_ipv4", "limits.source_prefix_ipv6",
            ]
        )
        #expect(found.first?.message == "0 is out of range (1-10000000)")
        #expect(found.dropFirst().first?.message == "expected a number of connections per second, found \"lots\"")
    }

    @Test("server_ports: a port, a range or a list; an empty list or a bad item is an error")
    func serverPorts() throws {
        func yaml(_ value: String) -> String {
            minimalConfig.replacingOccurrences(
                of: "    policy: dc\n",
                with: "    policy: dc\n    server_ports: \(value)\n"
            )
        }
        #expect(try ConfigurationLoader.parse(yaml: minimalConfig).routes[0].allowedServerPorts == nil)
        #expect(
            try ConfigurationLoader.parse(yaml: yaml("49152-65535")).routes[0].allowedServerPorts == [49152...65535]
        )
        #expect(
            try ConfigurationLoader.parse(yaml: yaml("[3268, 49152-65535]")).routes[0].allowedServerPorts == [
                3268...3268, 49152...65535,
            ]
        )
        let empty = problems(yaml("[]"))
        #expect(empty.map(\.keyPath) == ["routes[0].server_ports"])
        let bad = problems(yaml("[49152-65535, lots]"))
        #expect(bad.map(\.keyPath) == ["routes[0].server_ports[1]"])
        #expect(bad.first?.message == "\"lots\" is not a port or a port range (LOW-HIGH, 1-65535)")
    }
}

import Foundation
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

/// `port_mapping`, `server_ports_listen` and `pinholes` (issue 18), and the ephemeral-port
/// warning of `check-config` and `run`.
@Suite("Protected endpoint-mapper configuration")
struct ProtectedLookupConfigTests {
    static let policies = RouteModeTests.policies

    @Test("port_mapping: preserve loads; pool is the default")
    func preserve() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                upstream: 10.99.0.2
                ports: 49152-49160
                port_mapping: preserve
                policy: dc

            """ + Self.policies
        let route = try #require(try ConfigurationLoader.parse(yaml: yaml, fileName: "t.yaml").routes.first)
        #expect(route.portMapping == .preserve)
        #expect(route.passesProtectedEndpointMapper)
        let plain = try ConfigurationLoader.parse(yaml: minimalConfig, fileName: "t.yaml").routes.first
        #expect(plain?.portMapping == .pool)
        #expect(plain?.passesProtectedEndpointMapper == false)
    }

    @Test("An unknown port_mapping is reported at its line and column, with a suggestion")
    func unknownPortMapping() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                upstream: 10.99.0.2
                ports: 49152-49160
                port_mapping: preserv
                policy: dc

            """ + Self.policies
        let found = try #require(problem(at: "routes[0].port_mapping", in: yaml))
        #expect(found.message.contains("preserve"))
        #expect(found.line == 6)
        #expect(found.column == 19)
    }

    @Test("Transparent server_ports_listen: one listener, server_ports required, pinholes any by default")
    func serverPortsListen() throws {
        let yaml = """
            routes:
              - name: segment-a
                mode: transparent
                listen: 0.0.0.0
                servers: [10.99.0.0/24]
                server_ports: 49152-65535
                server_ports_listen: 40135
                policy: dc

            """ + Self.policies
        let route = try #require(try ConfigurationLoader.parse(yaml: yaml, fileName: "t.yaml").routes.first)
        #expect(route.serverPortsListen == 40135)
        #expect(route.ports == 40135...40135)
        #expect(route.pinholes == .any)
        #expect(route.allowedServerPorts == [49152...65535])
        #expect(route.passesProtectedEndpointMapper)

        let learned = try ConfigurationLoader.parse(
            yaml: yaml.replacingOccurrences(of: "    policy: dc\n", with: "    policy: dc\n    pinholes: learned\n"),
            fileName: "t.yaml"
        )
        #expect(learned.routes.first?.pinholes == .learned)
    }

    @Test("Keys in the wrong mode or without their partner are reported")
    func misplacedKeys() {
        let transparent = """
            routes:
              - name: t
                mode: transparent
                listen: 0.0.0.0
                servers: [10.99.0.0/24]
                server_ports_listen: 40135
                ports: 50000-50099
                port_mapping: preserve
                pinholes: sometimes
                policy: dc

            """ + Self.policies
        let all = problems(transparent)
        #expect(all.contains { $0.keyPath == "routes[0].server_ports_listen" && $0.message.contains("server_ports") })
        #expect(all.contains { $0.keyPath == "routes[0].ports" && $0.message.contains("server_ports_listen") })
        #expect(all.contains { $0.keyPath == "routes[0].port_mapping" && $0.message.contains("does not apply") })
        #expect(all.contains { $0.keyPath == "routes[0].pinholes" && $0.message.contains("any or learned") })
        #expect(all.allSatisfy { $0.line != nil })

        let mappedWithListen = minimalConfig.replacingOccurrences(
            of: "    policy: dc\n",
            with: "    policy: dc\n    server_ports_listen: 40135\n"
        )
        #expect(
            problem(at: "routes[0].server_ports_listen", in: mappedWithListen)?.message.contains("does not apply")
                == true
        )

        let neither = """
            routes:
              - name: t
                mode: transparent
                listen: 0.0.0.0
                servers: [10.99.0.0/24]
                policy: dc

            """ + Self.policies
        #expect(problems(neither).contains { $0.message.contains("missing required key \"ports\"") })
    }

    // MARK: - Ephemeral ports

    @Test("The kernel's files parse")
    func parseKernelFiles() {
        #expect(EphemeralPorts.parseEphemeralRange("32768\t60999\n") == 32768...60999)
        #expect(EphemeralPorts.parseEphemeralRange("60999 32768") == nil)
        #expect(EphemeralPorts.parseEphemeralRange("") == nil)
        #expect(
            EphemeralPorts.parseReservedPorts("50000-52999,135, 8080\n") == [50000...52999, 135...135, 8080...8080]
        )
        #expect(EphemeralPorts.parseReservedPorts("\n").isEmpty)
        #expect(EphemeralPorts.parseReservedPorts("9-3,x").isEmpty)
    }

    @Test("Only ports inside the ephemeral range and not reserved are reported")
    func unreserved() {
        let kernel = EphemeralPorts.KernelRanges(ephemeral: 32768...60999, reserved: [50010...50019])
        #expect(EphemeralPorts.unreservedEphemeral(1000...2000, kernel: kernel).isEmpty)
        #expect(EphemeralPorts.unreservedEphemeral(50000...50099, kernel: kernel) == [50000...50009, 50020...50099])
        #expect(EphemeralPorts.unreservedEphemeral(60990...61010, kernel: kernel) == [60990...60999])
        #expect(EphemeralPorts.unreservedEphemeral(50010...50019, kernel: kernel).isEmpty)
        #expect(
            EphemeralPorts.unreservedEphemeral(
                32768...32768,
                kernel: EphemeralPorts.KernelRanges(ephemeral: 32768...32768, reserved: [])
            )
                == [32768...32768]
        )
    }

    @Test("check-config's warning names the route, the ports and the sysctl that reserves them")
    func warnings() throws {
        let settings = try ConfigurationLoader.parse(yaml: minimalConfig, fileName: "t.yaml")
        let ports = try #require(settings.routes.first?.ports)
        let inside = EphemeralPorts.KernelRanges(ephemeral: 32768...60999, reserved: [])
        let text = EphemeralPorts.warnings(for: settings, kernel: inside)
        #expect(ports == 50000...50099)
        #expect(text.count == 1)
        #expect(text.first?.contains("route dc1: ports 50000-50099") == true)
        #expect(text.first?.contains("net.ipv4.ip_local_reserved_ports=50000-50099") == true)
        let reserved = EphemeralPorts.KernelRanges(ephemeral: 32768...60999, reserved: [ports])
        #expect(EphemeralPorts.warnings(for: settings, kernel: reserved).isEmpty)
        let elsewhere = EphemeralPorts.KernelRanges(ephemeral: 61000...61001, reserved: [])
        #expect(EphemeralPorts.warnings(for: settings, kernel: elsewhere).isEmpty)
    }
}

import Foundation
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

@Suite("Route modes")
struct RouteModeTests {
    static let policies = """
        policies:
          dc:
            default: deny
            rules:
              - action: allow
                interfaces: [samr]

        """

    @Test("The keys of the issue load as written")
    func issueExample() throws {
        let yaml = """
            routes:
              - name: segment-a
                mode: transparent            # default mode is `mapped`
                listen: 0.0.0.0
                ports: 50000-50099
                servers: [10.99.0.0/24]
                policy: dc
              - name: dc1-one-port
                mode: single-port
                listen: 10.99.0.1
                port: 50000
                upstream: 10.99.0.2
                policy: dc

            """ + Self.policies
        let settings = try ConfigurationLoader.parse(yaml: yaml, fileName: "test.yaml")
        #expect(settings.routes.count == 2)
        let transparent = settings.routes[0]
        #expect(transparent.mode == .transparent(servers: [try #require(IPNetwork("10.99.0.0/24"))]))
        #expect(transparent.ports == 50000...50099)
        #expect(transparent.epmPort == 135)
        let single = settings.routes[1]
        #expect(single.mode == .singlePort)
        #expect(single.ports == 50000...50000)
        #expect(single.singlePort == 50000)
        #expect(single.upstreamHost == "10.99.0.2")
    }

    @Test("mapped is the default")
    func defaultMode() throws {
        let settings = try ConfigurationLoader.parse(yaml: minimalConfig, fileName: "test.yaml")
        #expect(settings.routes.first?.mode == .mapped)
    }

    @Test("A single port may be the EPM port")
    func singlePortOnEPMPort() throws {
        let yaml = """
            routes:
              - name: one
                mode: single-port
                listen: 10.99.0.1
                epm_port: 135
                port: 135
                upstream: 10.99.0.2
                policy: dc

            """ + Self.policies
        let settings = try ConfigurationLoader.parse(yaml: yaml, fileName: "test.yaml")
        #expect(settings.routes.first?.singlePort == 135)
    }

    @Test("Each mode reports the keys it needs and the keys it does not take")
    func modeKeys() {
        let transparentWithUpstream = """
            routes:
              - name: t
                mode: transparent
                listen: 0.0.0.0
                upstream: 10.99.0.2
                ports: 50000-50099
                policy: dc

            """ + Self.policies
        let all = problems(transparentWithUpstream)
        #expect(all.contains { $0.message == "missing required key \"servers\"" })
        #expect(all.contains { $0.keyPath == "routes[0].upstream" && $0.message.contains("does not apply") })

        let singleWithoutPort = """
            routes:
              - name: s
                mode: single-port
                listen: 10.99.0.1
                upstream: 10.99.0.2
                ports: 50000-50099
                policy: dc

            """ + Self.policies
        let single = problems(singleWithoutPort)
        #expect(single.contains { $0.message == "missing required key \"port\"" })
        #expect(single.contains { $0.keyPath == "routes[0].ports" })

        let mappedWithServers = minimalConfig.replacingOccurrences(
            of: "    policy: dc\n",
            with: "    policy: dc\n    servers: [10.0.0.0/8]\n"
        )
        #expect(problem(at: "routes[0].servers", in: mappedWithServers) != nil)
    }

    @Test("Unknown modes and bad networks are reported")
    func badValues() {
        let badMode = minimalConfig.replacingOccurrences(
            of: "    policy: dc\n",
            with: "    policy: dc\n    mode: transparant\n"
        )
        let modeProblem = problem(at: "routes[0].mode", in: badMode)
        #expect(modeProblem?.message.contains("transparent") == true)

        let badNetwork = """
            routes:
              - name: t
                mode: transparent
                listen: 0.0.0.0
                ports: 50000-50099
                servers: [10.99.0.1/24]
                policy: dc

            """ + Self.policies
        #expect(problem(at: "routes[0].servers[0]", in: badNetwork) != nil)
    }
}

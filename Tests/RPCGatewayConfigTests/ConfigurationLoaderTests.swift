import Foundation
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

@Suite("Loading configuration")
struct ConfigurationLoaderTests {
    @Test("The example configuration loads as documented")
    func exampleLoads() throws {
        let path = configDirectory.appendingPathComponent("rpcgate.example.yaml").path
        let settings = try ConfigurationLoader.load(path: path)

        #expect(settings.routes.count == 1)
        let route = try #require(settings.routes.first)
        #expect(route.name == "dc1")
        #expect(route.listenAddress == "127.0.0.1")
        #expect(route.epmPort == 10135)
        #expect(route.advertiseAddress == IPv4Address(127, 0, 0, 1))
        #expect(route.upstreamHost == "127.0.0.1")
        #expect(route.upstreamEPMPort == 135)
        #expect(route.ports == 50000...50099)
        #expect(route.maximumConnections == 1024)
        #expect(route.mappingIdleSeconds == 600)
        #expect(route.policy.name == "domain-controller")
        #expect(route.policy.defaultAction == .deny)
        #expect(settings.admin == AdminSettings(host: "127.0.0.1", port: 9135))
        #expect(settings.limits.maximumConnections == 4096)
        #expect(settings.timeouts == Timeouts(connect: 5, idle: 900, bind: 10, halfClose: 30))

        // The policy does what its comments say, for a quick-start client on loopback.
        let policy = route.policy
        let loopback = try #require(IPAddress("127.0.0.1"))
        let samr = try #require(InterfaceCatalog.named("samr")).syntax
        let drsuapi = try #require(InterfaceCatalog.named("drsuapi")).syntax
        let spoolss = try #require(InterfaceCatalog.named("spoolss")).syntax
        #expect(policy.evaluate(PolicyQuery(interface: samr, client: loopback)).action == .allow)
        #expect(policy.evaluate(PolicyQuery(interface: drsuapi, client: loopback)).action == .allow)
        #expect(policy.evaluate(PolicyQuery(interface: drsuapi, opnum: 3, client: loopback)).action == .deny)
        #expect(
            policy.evaluate(PolicyQuery(interface: drsuapi, opnum: 3, client: try #require(IPAddress("10.0.0.11"))))
                .action == .allow
        )
        #expect(policy.evaluate(PolicyQuery(interface: spoolss, client: loopback)).action == .deny)
    }

    @Test("Every key of the documented schema is read")
    func fullSchema() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                epm_port: 135
                advertise: 10.99.0.1
                upstream: dc1.corp.example
                upstream_epm_port: 1135
                ports: 50000-50099
                policy: dc
                max_connections: 512
                mapping_idle_timeout: 90
              - name: dc1-v6
                listen: "fd00::1"
                upstream: "fd00::2"
                ports: 50000-50099
                policy: dc
            policies:
              dc:
                default: audit
                rules:
                  - action: allow
                    interfaces: [samr, lsarpc, netlogon, dssetup, drsuapi, "12345778-1234-abcd-ef00-0123456789ac@1.0"]
                    opnums: [0, 4-9, 12]
                    sources: [10.0.0.0/8, "fd00::/8"]
                    except_sources: [10.0.0.10/32]
                    min_auth_level: privacy
            admin:
              listen: "[::1]:9135"
            limits:
              max_connections: 100
            timeouts:
              connect: 500ms
              idle: 1h
              bind: 30
              half_close: 1m30s
            """
        let settings = try ConfigurationLoader.parse(yaml: yaml)
        #expect(settings.routes.map(\.name) == ["dc1", "dc1-v6"])
        let route = settings.routes[0]
        #expect(route.upstreamHost == "dc1.corp.example")
        #expect(route.upstreamEPMPort == 1135)
        #expect(route.maximumConnections == 512)
        #expect(route.mappingIdleTimeout == .seconds(90))
        #expect(settings.routes[1].epmPort == 135)
        #expect(settings.routes[1].upstreamEPMPort == 135)
        #expect(settings.routes[1].advertiseAddress == nil)
        #expect(route.policy.defaultAction == .audit)

        let rule = try #require(route.policy.rules.first)
        #expect(rule.action == .allow)
        #expect(
            rule.interfaces?.map(\.label) == [
                "samr", "lsarpc", "netlogon", "dssetup", "drsuapi", "12345778-1234-abcd-ef00-0123456789ac@1.0",
            ]
        )
        #expect(rule.interfaces?.last?.majorVersion == 1)
        #expect(rule.interfaces?.last?.minorVersion == 0)
        #expect(rule.opnums == OpnumSet([0...0, 4...9, 12...12]))
        #expect(rule.sources == [IPNetwork("10.0.0.0/8")!, IPNetwork("fd00::/8")!])
        #expect(rule.exceptSources == [IPNetwork("10.0.0.10/32")!])
        #expect(rule.minimumAuthLevel == .privacy)
        #expect(rule.origin == RuleOrigin(index: 0))

        #expect(settings.admin == AdminSettings(host: "::1", port: 9135))
        #expect(settings.limits.maximumConnections == 100)
        #expect(settings.timeouts.connectDuration == .milliseconds(500))
        #expect(settings.timeouts.connect == 1)  // rounded up, never zero
        #expect(settings.timeouts.idle == 3600)
        #expect(settings.timeouts.bind == 30)
        #expect(settings.timeouts.halfClose == 90)
    }

    @Test("Optional sections and keys take the GatewaySettings defaults")
    func defaults() throws {
        let settings = try ConfigurationLoader.parse(yaml: minimalConfig)
        let defaults = GatewaySettings(routes: [])
        #expect(settings.admin == nil)
        #expect(settings.limits == defaults.limits)
        #expect(settings.timeouts == defaults.timeouts)
        #expect(settings.wireLimits == defaults.wireLimits)
        let route = try #require(settings.routes.first)
        #expect(route.epmPort == 135)
        #expect(route.upstreamEPMPort == 135)
        #expect(route.advertiseAddress == nil)
        #expect(route.maximumConnections == 1024)
        #expect(route.mappingIdleSeconds == 600)
    }

    @Test("Rules keep their order and their index as origin")
    func ruleOrder() throws {
        let yaml = """
            routes:
              - {name: r, listen: 10.0.0.1, upstream: 10.0.0.2, ports: 50000-50009, policy: p}
            policies:
              p:
                rules:
                  - action: deny
                    interfaces: [drsuapi]
                    opnums: [3]
                  - action: audit
                    interfaces: [backupkey]
                  - action: allow
                    interfaces: [samr]
                  - action: allow
                    sources: [10.0.0.0/8]
                  - action: deny
            """
        let policy = try #require(try ConfigurationLoader.parse(yaml: yaml).routes.first?.policy)
        #expect(policy.defaultAction == .deny)  // the default of `default`
        #expect(policy.rules.map(\.action) == [.deny, .audit, .allow, .allow, .deny])
        #expect(policy.rules.map(\.origin) == (0..<5).map { RuleOrigin(index: $0) })
        #expect(policy.rules[0].interfaces?.map(\.label) == ["drsuapi"])
        #expect(policy.rules[1].interfaces?.map(\.label) == ["backupkey"])
        #expect(policy.rules[2].interfaces?.map(\.label) == ["samr"])
        #expect(policy.rules[3].interfaces == nil)
        #expect(policy.rules[4].sources == nil)
    }

    @Test("YAML anchors and merge keys work")
    func mergeKeys() throws {
        // Unknown top-level keys are errors, so the anchor is on the first route itself.
        let settings = try ConfigurationLoader.parse(
            yaml: """
                routes:
                  - &first
                    name: a
                    listen: 10.0.0.1
                    upstream: 10.0.0.2
                    ports: 50000-50009
                    policy: p
                  - <<: *first
                    name: b
                    listen: 10.0.0.3
                policies:
                  p: {default: allow}
                """
        )
        #expect(settings.routes.map(\.name) == ["a", "b"])
        #expect(settings.routes[1].listenAddress == "10.0.0.3")
        #expect(settings.routes[1].ports == 50000...50009)
        #expect(settings.routes[1].upstreamHost == "10.0.0.2")
    }

    @Test("A missing file is a problem naming the file")
    func missingFile() throws {
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(path: "/nonexistent/rpcgate.yaml")
        }
        #expect(error.problems.count == 1)
        #expect(error.problems[0].fileName == "/nonexistent/rpcgate.yaml")
        #expect(error.problems[0].message.hasPrefix("cannot read the configuration file"))
    }

    @Test("Problems describe themselves as file:line:column: key.path: message")
    func problemDescription() {
        let problem = ConfigurationProblem(
            fileName: "config.yaml",
            keyPath: "routes[0].ports",
            line: 12,
            column: 5,
            message: "\"50100-50000\" is not a port range (LOW-HIGH, LOW <= HIGH, 1-65535)"
        )
        #expect(
            problem.description
                == "config.yaml:12:5: routes[0].ports: \"50100-50000\" is not a port range (LOW-HIGH, LOW <= HIGH, 1-65535)"
        )
        let error = ConfigurationError(problems: [
            problem,
            ConfigurationProblem(fileName: "config.yaml", keyPath: "", line: nil, column: nil, message: "empty"),
        ])
        #expect(error.description.split(separator: "\n").count == 2)
        #expect(error.description.hasSuffix("config.yaml: empty"))
    }
}

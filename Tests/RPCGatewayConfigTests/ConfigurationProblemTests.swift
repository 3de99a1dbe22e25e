import Foundation
import RPCGateway
import RPCGatewayConfig
import Testing

/// Each invalid file yields a problem with the right key path, line and message.
@Suite("Configuration problems")
struct ConfigurationProblemTests {
    @Test("Unknown top-level key, with a did-you-mean hint")
    func unknownTopLevelKey() throws {
        let yaml =
            minimalConfig + """
                timeout:
                  idle: 10m
                """
        let found = try #require(problem(at: "timeout", in: yaml))
        #expect(found.line == 13)
        #expect(found.column == 1)
        #expect(found.message == "unknown key \"timeout\"; did you mean \"timeouts\"?")
        #expect(found.description == "test.yaml:13:1: timeout: unknown key \"timeout\"; did you mean \"timeouts\"?")
    }

    @Test("Unknown key far from every known key lists the known keys")
    func unknownKeyWithoutHint() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                upstream: 10.99.0.2
                ports: 50000-50099
                policy: dc
                tls_certificate: /etc/cert.pem
            """
        let found = try #require(problem(at: "routes[0].tls_certificate", in: yaml))
        #expect(found.line == 7)
        #expect(found.column == 5)
        #expect(found.message.hasPrefix("unknown key \"tls_certificate\" (expected \"name\", \"listen\""))
    }

    @Test("Misspelt rule key in a policy is an error, not ignored")
    func misspeltRuleKey() throws {
        let yaml =
            minimalConfig + """
                      - action: deny
                        interface: [drsuapi]
                """
        let found = try #require(problem(at: "policies.dc.rules[1].interface", in: yaml))
        #expect(found.line == 14)
        #expect(found.message == "unknown key \"interface\"; did you mean \"interfaces\"?")
    }

    @Test("Unknown interface name lists close catalog names")
    func unknownInterface() throws {
        let yaml = minimalConfig.replacingOccurrences(of: "[samr]", with: "[samr, lsarcp, netlogon]")
        let found = try #require(problem(at: "policies.dc.rules[0].interfaces[1]", in: yaml))
        #expect(found.line == 12)
        #expect(found.message.hasPrefix("unknown interface \"lsarcp\"; did you mean \"lsarpc\""))
        #expect(found.message.contains("a catalog name, a UUID, or UUID@MAJOR.MINOR"))

        let far = try #require(
            problem(
                at: "policies.dc.rules[0].interfaces",
                in: minimalConfig.replacingOccurrences(of: "[samr]", with: "frobnicator")
            )
        )
        #expect(far.message.hasPrefix("unknown interface \"frobnicator\" (not in the interface catalog"))

        let badUUID = try #require(
            problem(
                at: "policies.dc.rules[0].interfaces[0]",
                in: minimalConfig.replacingOccurrences(
                    of: "[samr]",
                    with: "[\"12345778-1234-abcd-ef00-0123456789ac@1\"]"
                )
            )
        )
        #expect(
            badUUID.message.hasSuffix(
                "is not an interface UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, optionally @MAJOR.MINOR)"
            )
        )
    }

    @Test("Bad CIDR blocks")
    func badCIDR() throws {
        let yaml =
            minimalConfig + """
                        sources:
                          - 10.0.0.0/8
                          - 10.0.0.1/8
                          - 10.0.0.0/33
                          - 10.0.0.300/24
                          - "fd00::1/8"
                """
        let all = problems(yaml)
        #expect(all.map(\.keyPath) == (1...4).map { "policies.dc.rules[0].sources[\($0)]" })
        #expect(all.map(\.line) == [15, 16, 17, 18])
        #expect(all.map(\.column) == [13, 13, 13, 13])
        #expect(all[0].message == "\"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?")
        #expect(all[1].message.hasPrefix("\"10.0.0.0/33\" is not an IP network: the prefix length must be 0-32"))
        #expect(all[2].message.hasPrefix("\"10.0.0.300/24\" is not an IP network (ADDRESS/PREFIX"))
        #expect(all[3].message == "\"fd00::1/8\" has host bits set; did you mean fd00::/8?")
    }

    @Test("Bad opnums: reversed range, out of range, not a number")
    func badOpnums() throws {
        let yaml =
            minimalConfig + """
                        opnums: [0, 9-4, 70000, "x", 4-9, 65535]
                """
        let all = problems(yaml)
        #expect(all.map(\.keyPath) == [1, 2, 3].map { "policies.dc.rules[0].opnums[\($0)]" })
        #expect(all.allSatisfy { $0.line == 13 })
        #expect(all.map(\.column) == [21, 26, 33])  // a quoted scalar starts at its quote
        #expect(all[0].message == "\"9-4\" is a reversed range (write 4-9)")
        #expect(all[1].message == "70000 is out of range (opnums are 0-65535)")
        #expect(all[2].message == "\"x\" is not an opnum or range (N or LOW-HIGH, 0-65535)")
    }

    @Test("Unknown policy reference")
    func unknownPolicy() throws {
        let yaml = minimalConfig.replacingOccurrences(of: "policy: dc", with: "policy: dcc")
        let found = try #require(problem(at: "routes[0].policy", in: yaml))
        #expect(found.line == 6)
        #expect(found.column == 13)
        #expect(found.message == "unknown policy \"dcc\"; did you mean \"dc\"?")

        let noPolicies = """
            routes:
              - {name: dc1, listen: 10.99.0.1, upstream: 10.99.0.2, ports: 50000-50099, policy: dc}
            """
        let other = try #require(problem(at: "routes[0].policy", in: noPolicies))
        #expect(other.line == 2)
        #expect(other.message == "unknown policy \"dc\" (no policies are defined)")
    }

    @Test("Unknown profile")
    func unknownProfile() throws {
        let yaml =
            minimalConfig + """
                      - profile: block-dcsnc
                """
        let found = try #require(problem(at: "policies.dc.rules[1].profile", in: yaml))
        #expect(found.line == 13)
        #expect(found.column == 18)
        #expect(found.message.hasPrefix("unknown profile \"block-dcsnc\"; did you mean \"block-dcsync\"?"))
    }

    @Test("Overlapping port ranges on a shared or wildcard listen address")
    func overlappingPorts() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                upstream: 10.99.0.2
                ports: 50000-50099
                policy: dc
              - name: dc2
                listen: 10.99.0.1
                epm_port: 136
                upstream: 10.99.0.3
                ports: 50050-50149
                policy: dc
              - name: other-address
                listen: 10.99.0.9
                upstream: 10.99.0.4
                ports: 50000-50099
                policy: dc
              - name: wildcard
                listen: 0.0.0.0
                epm_port: 137
                upstream: 10.99.0.5
                ports: 50090-50095
                policy: dc
              - name: ipv6-wildcard
                listen: "::"
                upstream: 10.99.0.6
                ports: 50000-50099
                policy: dc
            policies:
              dc: {default: allow}
            """
        let all = problems(yaml)
        #expect(all.map(\.keyPath) == ["routes[1].ports", "routes[3].ports", "routes[3].ports", "routes[3].ports"])
        #expect(all.map(\.line) == [11, 22, 22, 22])
        #expect(all[0].message == "ports 50050-50149 overlap the ports 50000-50099 of route \"dc1\" (routes[0])")
        #expect(
            all[1].message
                == "ports 50090-50095 overlap the ports 50000-50099 of route \"dc1\" (routes[0]) (listening on 10.99.0.1)"
        )
        #expect(all[2].message.contains("of route \"dc2\" (routes[1])"))
        #expect(all[3].message.contains("of route \"other-address\" (routes[2])"))
    }

    @Test("EPM ports: inside the route's own range, shared, or inside another route's range")
    func epmPortInsideRange() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                epm_port: 50010
                upstream: 10.99.0.2
                ports: 50000-50099
                policy: dc
              - name: dc2
                listen: 10.99.0.2
                upstream: 10.99.0.3
                ports: 100-200
                policy: dc
              - name: dc3
                listen: 10.99.0.2
                epm_port: 150
                upstream: 10.99.0.4
                ports: 50000-50099
                policy: dc
            policies:
              dc: {default: allow}
            """
        let all = problems(yaml)
        #expect(all.map(\.keyPath) == ["routes[0].epm_port", "routes[1].ports", "routes[2].epm_port"])
        #expect(all.map(\.line) == [4, 11, 15])
        #expect(all[0].message == "EPM port 50010 is inside this route's ports 50000-50099")
        #expect(all[0].column == 15)
        #expect(all[1].message == "EPM port 135 is inside this route's ports 100-200")
        #expect(all[2].message == "EPM port 150 is inside the ports 100-200 of route \"dc2\" (routes[1])")
    }

    @Test("Bad durations")
    func badDuration() throws {
        let yaml =
            minimalConfig + """
                timeouts:
                  connect: 5 seconds
                  idle: 0s
                  bind: -3
                  half_close: 10d
                """
        let all = problems(yaml)
        #expect(all.map(\.keyPath) == ["timeouts.connect", "timeouts.idle", "timeouts.bind", "timeouts.half_close"])
        #expect(all.map(\.line) == [14, 15, 16, 17])
        #expect(all[0].message == "\"5 seconds\" is not a duration (use 500ms, 30s, 10m, 1h, or a number of seconds)")
        #expect(all[1].message == "\"0s\" must be longer than zero")
        #expect(all[2].message.hasPrefix("\"-3\" is not a duration"))
        #expect(all[3].message.hasPrefix("\"10d\" is not a duration"))

        let route = try #require(
            problem(
                at: "routes[0].mapping_idle_timeout",
                in: minimalConfig.replacingOccurrences(
                    of: "policy: dc\n",
                    with: "policy: dc\n    mapping_idle_timeout: soon\n"
                )
            )
        )
        #expect(route.line == 7)
    }

    @Test("YAML syntax errors carry their line")
    func yamlSyntaxError() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: [10.99.0.1
                upstream: 10.99.0.2
            """
        let all = problems(yaml)
        #expect(all.count == 1)
        #expect(all.first?.keyPath == "")
        #expect(all.first?.line == 4)
        #expect(all.first?.message.hasPrefix("YAML syntax error: ") == true, "\(all)")

        let tab = problems("routes:\n\t- name: x\n")
        #expect(tab.first?.line == 2)

        let duplicate = problems(
            minimalConfig.replacingOccurrences(
                of: "    upstream: 10.99.0.2\n",
                with: "    upstream: 10.99.0.2\n    upstream: 10.99.0.3\n"
            )
        )
        #expect(duplicate.first?.message == "duplicate key \"upstream\" in the same mapping")
        #expect(duplicate.first?.line == 4)
    }

    @Test("An empty file or a root that is not a mapping")
    func emptyOrNotMapping() {
        for text in ["", "# only a comment\n", "~\n"] {
            let all = problems(text)
            #expect(all.count == 1)
            #expect(all.first?.message.contains("empty") == true)
        }
        let list = problems("- routes\n- policies\n")
        #expect(
            list.first?.message
                == "the configuration must be a mapping with keys such as routes and policies; found a list"
        )
        #expect(list.first?.line == 1)
        let missing = problems("policies: {}\n")
        #expect(missing.first?.message == "missing required key \"routes\"")
        let none = problems("routes: []\npolicies: {}\n")
        #expect(none.first?.message == "at least one route is required")
    }

    @Test("Integers as strings and wrong types")
    func wrongTypes() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                epm_port: "135"
                upstream: 10.99.0.2
                upstream_epm_port: [135]
                ports: 50000-50099
                policy: dc
                max_connections: lots
            policies:
              dc:
                rules: {action: allow}
            limits:
              max_connections: 0
            """
        let all = problems(yaml)
        #expect(
            all.map(\.keyPath) == [
                "routes[0].epm_port", "routes[0].upstream_epm_port", "routes[0].max_connections",
                "policies.dc.rules", "limits.max_connections",
            ]
        )
        #expect(all.map(\.line) == [4, 6, 9, 12, 14])
        #expect(all[0].message == "expected a port number, found the string \"135\" (write it without quotes)")
        #expect(all[1].message == "expected a port number, found a list")
        #expect(all[2].message == "expected a number of connections, found \"lots\"")
        #expect(all[3].message == "expected a list of rules, found a mapping")
        #expect(all[4].message == "0 is out of range (1-10000000)")
    }

    @Test("Route fields: addresses, upstream, port range, names")
    func routeFields() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1:135
                advertise: "fd00::1"
                upstream: 10.99.0.2:135
                ports: 50100-50000
                policy: dc
              - name: dc1
                listen: 10.99.0.300
                upstream: ""
                ports: 1000-20000
                policy: dc
              - name: ""
                listen: 10.99.0.5
                epm_port: 70000
                upstream: 10.99.0.6
                ports: 50000-50099
                policy: dc
            policies:
              dc: {default: allow}
            """
        let all = problems(yaml)
        let byPath = Dictionary(all.map { ($0.keyPath, $0) }, uniquingKeysWith: { first, _ in first })
        #expect(all.count == 10, "\(all.map(\.description).joined(separator: "\n"))")
        #expect(
            byPath["routes[0].listen"]?.message
                == "\"10.99.0.1:135\": listen takes an address only; give the port as epm_port"
        )
        #expect(
            byPath["routes[0].advertise"]?.message
                == "\"fd00::1\" is IPv6; advertise must be an IPv4 address (towers carry IPv4 only)"
        )
        #expect(
            byPath["routes[0].upstream"]?.message
                == "\"10.99.0.2:135\": upstream takes a host only; give the port as upstream_epm_port"
        )
        #expect(
            byPath["routes[0].ports"]?.message == "\"50100-50000\" is not a port range (LOW-HIGH, LOW <= HIGH, 1-65535)"
        )
        #expect(
            byPath["routes[0].ports"]?.description
                == "test.yaml:6:12: routes[0].ports: \"50100-50000\" is not a port range (LOW-HIGH, LOW <= HIGH, 1-65535)"
        )
        #expect(byPath["routes[1].name"]?.message == "duplicate route name \"dc1\" (also routes[0])")
        #expect(byPath["routes[1].listen"]?.message == "\"10.99.0.300\" is not an IPv4 or IPv6 address")
        #expect(byPath["routes[1].upstream"]?.message == "the upstream must not be empty")
        #expect(byPath["routes[1].ports"]?.message == "\"1000-20000\" has 19001 ports; a route may have at most 10000")
        #expect(byPath["routes[2].name"]?.message == "the route name must not be empty")
        #expect(byPath["routes[2].epm_port"]?.message == "70000 is out of range (1-65535)")
    }

    @Test("A route whose upstream is its own EPM listener")
    func forwardingLoop() throws {
        let yaml = minimalConfig.replacingOccurrences(of: "upstream: 10.99.0.2", with: "upstream: 10.99.0.1")
        let found = try #require(problem(at: "routes[0].upstream", in: yaml))
        #expect(found.line == 4)
        #expect(found.message.hasPrefix("upstream 10.99.0.1 port 135 is this route's own EPM listener"))
        // A different upstream EPM port is fine (the example's quick-start setup).
        _ = try ConfigurationLoader.parse(
            yaml: yaml.replacingOccurrences(of: "    policy: dc\n", with: "    policy: dc\n    epm_port: 10135\n")
        )
    }

    @Test("Missing required keys point at the mapping that lacks them")
    func missingKeys() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
            policies:
              dc:
                rules:
                  - interfaces: [samr]
            """
        let all = problems(yaml)
        #expect(
            all.map(\.message) == [
                "missing required key \"upstream\"", "missing required key \"ports\"",
                "missing required key \"policy\"",
                "missing required key \"action\"",
            ]
        )
        #expect(all.map(\.keyPath) == ["routes[0]", "routes[0]", "routes[0]", "policies.dc.rules[0]"])
        #expect(all.map(\.line) == [2, 2, 2, 7])
    }

    @Test("Admin listener")
    func adminListener() throws {
        func adminProblem(_ listen: String) -> String? {
            problem(at: "admin.listen", in: minimalConfig + "admin:\n  listen: \(listen)\n")?.message
        }
        #expect(adminProblem("9135") == "\"9135\" has no port (HOST:PORT, such as 127.0.0.1:9135 or [::1]:9135)")
        #expect(adminProblem("\"::1:9135\"") == "\"::1:9135\": write an IPv6 address in brackets, such as [::1]:9135")
        #expect(adminProblem("127.0.0.1:99999") == "\"99999\" is not a port number (1-65535)")
        #expect(
            adminProblem("10.99.0.1:50005") == "port 50005 is already used by route \"dc1\" (routes[0]) on 10.99.0.1"
        )
        let settings = try ConfigurationLoader.parse(yaml: minimalConfig + "admin:\n  listen: localhost:9135\n")
        #expect(settings.admin?.host == "localhost")
    }

    @Test("Several errors in one file are all reported, in document order")
    func severalErrors() throws {
        let yaml = """
            routes:
              - name: dc1
                listen: 10.99.0.1
                upstream: 10.99.0.2
                ports: 50000-50099
                policy: dcc
                max_conections: 10
            policies:
              dc:
                default: deny
                rules:
                  - action: permit
                    interfaces: [samr, sammr]
                    opnums: [9-4]
                    sources: [10.0.0.1/8]
                    min_auth_level: private
                  - profile: block-dcsnc
            timeouts:
              idle: forever
            """
        let all = problems(yaml)
        #expect(
            all.map(\.keyPath) == [
                "routes[0].policy", "routes[0].max_conections", "policies.dc.rules[0].action",
                "policies.dc.rules[0].interfaces[1]", "policies.dc.rules[0].opnums[0]",
                "policies.dc.rules[0].sources[0]", "policies.dc.rules[0].min_auth_level",
                "policies.dc.rules[1].profile", "timeouts.idle",
            ]
        )
        #expect(all.map(\.line) == [6, 7, 12, 13, 14, 15, 16, 17, 19])
        #expect(all[1].message == "unknown key \"max_conections\"; did you mean \"max_connections\"?")
        #expect(all[2].message == "unknown action \"permit\" (\"allow\", \"deny\" or \"audit\")")
        #expect(all[3].message.hasPrefix("unknown interface \"sammr\"; did you mean \"samr\""))
        #expect(
            all[6].message
                == "unknown auth level \"private\"; did you mean \"privacy\"? (\"none\", \"connect\", \"call\", \"packet\", \"integrity\" or \"privacy\")"
        )
        let error = try #require(throws: ConfigurationError.self) { try ConfigurationLoader.parse(yaml: yaml) }
        #expect(error.description.split(separator: "\n").count == 9)
    }
}

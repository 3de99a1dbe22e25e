import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

@testable import rpcgate

@Suite("rpcgate init: the starter configuration")
struct StarterConfigurationTests {
    static func entry(_ name: String, port: UInt16 = 49152, annotation: String = "") -> EPMEntry {
        let syntax = InterfaceCatalog.named(name)?.syntax ?? .endpointMapper
        return Self.entry(syntax, port: port, annotation: annotation)
    }

    static func entry(_ syntax: SyntaxID, port: UInt16 = 49152, annotation: String = "") -> EPMEntry {
        EPMEntry(
            object: .zero,
            tower: ProtocolTower.ncacnIPTCP(
                interface: syntax,
                endpoint: TCPEndpoint(address: IPv4Address(10, 0, 0, 2), port: port)
            ),
            annotation: Array(annotation.utf8) + [0]
        )
    }

    /// What a Samba DC registers over TCP, roughly, plus an interface no catalog knows and an
    /// entry without a tower.
    static let unknown = SyntaxID(
        uuid: DCEUUID(high: 0x0102_0304_0506_0708, low: 0x0910_1112_1314_1516),
        majorVersion: 2,
        minorVersion: 1
    )
    static let entries: [EPMEntry] = [
        entry("samr", annotation: "SAM \"quoted\"\u{7}"), entry("lsarpc"), entry("wkssvc"),
        entry("netlogon", port: 49153),
        entry("drsuapi", port: 49154), entry("dssetup"), entry("backupkey"), entry("dnsserver", port: 49155),
        entry("samr"), entry(unknown, annotation: "something else"),
        EPMEntry(object: .zero, tower: nil, annotation: [0]),
    ]

    static func starter(_ entries: [EPMEntry] = Self.entries) -> StarterConfiguration {
        StarterConfiguration(
            server: "dc1.example.test",
            serverAddress: "10.0.0.2",
            serverPort: 135,
            entries: entries,
            truncated: false,
            listen: "0.0.0.0",
            epmPort: 135,
            ports: "50000-50099",
            route: "dc",
            admin: "127.0.0.1:9135",
            version: "0.1.0"
        )
    }

    @Test("groups the interfaces: needed allowed, backupkey audited, the rest listed once")
    func grouping() {
        let starter = Self.starter()
        #expect(starter.allowed.map(\.ruleEntry) == ["epmapper", "samr", "lsarpc", "netlogon", "dssetup", "drsuapi"])
        #expect(starter.audited.map(\.ruleEntry) == ["backupkey"])
        #expect(starter.others.map(\.ruleEntry) == ["wkssvc", "dnsserver", "01020304-0506-0708-0910-111213141516@2.1"])
    }

    @Test("the file loads as written, with the profiles first and default deny")
    func loads() throws {
        let settings = try ConfigurationLoader.parse(yaml: Self.starter().yaml, fileName: "init.yaml")
        let route = try #require(settings.routes.first)
        #expect(route.name == "dc" && route.upstreamHost == "dc1.example.test" && route.epmPort == 135)
        #expect(route.policy.defaultAction == .deny)
        let profiles = route.policy.rules.compactMap(\.origin.profile)
        #expect(Set(profiles) == ["block-dcsync", "block-coercion", "block-remote-exec"])
        let client = IPAddress.v4(0x0a00_0005)
        for name in ["samr", "lsarpc", "netlogon", "dssetup", "drsuapi"] {
            let interface = try #require(InterfaceCatalog.named(name)).syntax
            #expect(
                route.policy.evaluate(PolicyQuery(interface: interface, client: client)).action == .allow,
                "\(name)"
            )
        }
        for name in ["wkssvc", "dnsserver", "spoolss"] {
            let interface = try #require(InterfaceCatalog.named(name)).syntax
            #expect(route.policy.evaluate(PolicyQuery(interface: interface, client: client)).action == .deny, "\(name)")
        }
        let drsuapi = try #require(InterfaceCatalog.named("drsuapi")).syntax
        #expect(route.policy.evaluate(PolicyQuery(interface: drsuapi, opnum: 3, client: client)).action == .deny)
        #expect(settings.admin?.host == "127.0.0.1" && settings.admin?.port == 9135)
    }

    @Test("uncommenting the commented-out rule allows those interfaces, and the file still loads")
    func uncommented() throws {
        let text = Self.starter().yaml
            .split(separator: "\n", omittingEmptySubsequences: false)
            .map { line in
                line.hasPrefix("      # - action: allow") || line.hasPrefix("      #   ")
                    ? "      " + line.dropFirst(8) : String(line)
            }
            .joined(separator: "\n")
        let settings = try ConfigurationLoader.parse(yaml: text, fileName: "init.yaml")
        let route = try #require(settings.routes.first)
        let wkssvc = try #require(InterfaceCatalog.named("wkssvc")).syntax
        #expect(route.policy.evaluate(PolicyQuery(interface: wkssvc, client: .v4(0x0a00_0005))).action == .allow)
        #expect(route.policy.evaluate(PolicyQuery(interface: Self.unknown, client: .v4(0x0a00_0005))).action == .allow)
    }

    @Test("a server that registered only the needed interfaces gets no commented-out rule")
    func nothingElse() throws {
        let starter = Self.starter([Self.entry("samr"), Self.entry("lsarpc")])
        #expect(starter.others.isEmpty)
        #expect(starter.yaml.contains("The server registered nothing else over TCP."))
        #expect(!starter.yaml.contains("backupkey"))
        _ = try ConfigurationLoader.parse(yaml: starter.yaml, fileName: "init.yaml")
    }

    @Test("annotations become one-line comments without quotes or control characters")
    func annotations() {
        #expect(StarterConfiguration.printable("SAM \"quoted\"\u{7}\n") == "SAM quoted")
        #expect(StarterConfiguration.quotedIfNeeded("dc1.example.test") == "dc1.example.test")
        #expect(StarterConfiguration.quotedIfNeeded("a b") == "\"a b\"")
    }
}

import RPCGateway
import RPCPolicy
import RPCWire
import Testing

@Suite("Endpoint inventory (what the gateway would reveal)")
struct EndpointInventoryTests {
    static func catalog(_ name: String) -> SyntaxID { InterfaceCatalog.named(name)!.syntax }

    static func tcp(_ interface: SyntaxID, _ port: UInt16, host: IPv4Address = .any) -> EPMEntry {
        EPMEntry(
            object: .zero,
            tower: ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: host, port: port)),
            annotation: Array("a".utf8) + [0]
        )
    }

    static func pipe(_ interface: SyntaxID, _ name: String) -> EPMEntry {
        let tower = ProtocolTower(floors: [
            ProtocolTower.uuidFloor(interface),
            ProtocolTower.uuidFloor(.ndr),
            TowerFloor(lhs: [TowerProtocol.rpcConnectionOriented], rhs: [0, 0]),
            TowerFloor(lhs: [TowerProtocol.namedPipe], rhs: Array(name.utf8) + [0]),
            TowerFloor(lhs: [TowerProtocol.netbios], rhs: Array("DC1".utf8) + [0]),
        ])
        return EPMEntry(object: .zero, tower: tower, annotation: [])
    }

    static let route = RouteSettings(
        name: "dc1",
        listenAddress: "10.99.0.1",
        epmPort: 10135,
        upstreamHost: "10.99.0.2",
        ports: 50000...50001,
        policy: Policy(
            name: "dc",
            defaultAction: .deny,
            rules: [
                PolicyRule(
                    action: .audit,
                    interfaces: [InterfaceMatcher(parsing: "lsarpc")!],
                    origin: RuleOrigin(index: 0, profile: "watch")
                ),
                PolicyRule(
                    action: .allow,
                    interfaces: ["samr", "netlogon", "dnsserver"].map { InterfaceMatcher(parsing: $0)! },
                    sources: [IPNetwork("10.0.0.0/8")!],
                    origin: RuleOrigin(index: 1)
                ),
            ]
        )
    )

    @Test("ncacn_ip_tcp towers are classified and given ports as the gateway would, in reply order")
    func simulation() throws {
        let upstream = IPv4Address(10, 99, 0, 2)
        let entries = [
            Self.tcp(Self.catalog("samr"), 49154),
            Self.tcp(Self.catalog("drsuapi"), 49154),
            Self.tcp(Self.catalog("lsarpc"), 49155, host: IPv4Address(10, 0, 0, 9)),
            Self.tcp(.endpointMapper, 135),
            Self.tcp(Self.catalog("netlogon"), 49156, host: upstream),
            Self.tcp(Self.catalog("dnsserver"), 49157),
            Self.tcp(Self.catalog("lsarpc"), 49154),
            Self.pipe(Self.catalog("samr"), "\\pipe\\samr"),
            EPMEntry(object: .zero, tower: nil, annotation: []),
        ]
        let rows = EndpointInventory(
            entries: entries,
            route: Self.route,
            upstreamAddress: upstream,
            client: IPAddress("10.1.2.3")!
        ).rows

        #expect(
            rows.map(\.gateway) == [
                .mapped(50000),  // samr
                .hidden,  // drsuapi: denied by default
                .foreignHost,  // lsarpc on another host
                .endpointMapper(10135),
                .mapped(50001),  // netlogon
                .exhausted,  // dnsserver: the two-port range is used up
                .mapped(50000),  // lsarpc on samr's endpoint: same server endpoint, same port
                .unchanged,  // ncacn_np passes through
                .unchanged,
            ]
        )
        #expect(
            rows.map(\.protocolSequence) == [
                .ncacnIPTCP, .ncacnIPTCP, .ncacnIPTCP, .ncacnIPTCP, .ncacnIPTCP, .ncacnIPTCP, .ncacnIPTCP, .ncacnNP,
                .none,
            ]
        )
        #expect(
            rows.map(\.endpoint) == ["49154", "49154", "49155", "135", "49156", "49157", "49154", "\\pipe\\samr", nil]
        )
        #expect(
            rows.map(\.interfaceName) == [
                "samr", "drsuapi", "lsarpc", "epmapper", "netlogon", "dnsserver", "lsarpc", "samr", nil,
            ]
        )
        #expect(
            rows.map { $0.verdict?.action } == [.allow, .deny, .audit, .allow, .allow, .allow, .audit, .allow, nil]
        )
        #expect(rows[2].verdict?.origin == RuleOrigin(index: 0, profile: "watch"))
        #expect(rows[1].verdict?.origin == nil)
        #expect(rows[3].isEndpointMapper)
        #expect(rows[2].host == IPv4Address(10, 0, 0, 9))
    }

    @Test("Verdicts depend on the client: outside the sources only the audit rule and the mapper remain")
    func otherClient() throws {
        let entries = [
            Self.tcp(Self.catalog("samr"), 49154), Self.tcp(Self.catalog("lsarpc"), 49155),
            Self.tcp(.endpointMapper, 135),
        ]
        let rows = EndpointInventory(
            entries: entries,
            route: Self.route,
            upstreamAddress: IPv4Address(10, 99, 0, 2),
            client: IPAddress("0.0.0.0")!
        ).rows
        #expect(rows.map(\.gateway) == [.hidden, .mapped(50000), .endpointMapper(10135)])
        #expect(rows.map { $0.verdict?.action } == [.deny, .audit, .allow])
    }
}

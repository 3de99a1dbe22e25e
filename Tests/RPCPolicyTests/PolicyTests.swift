import RPCPolicy
import RPCWire
import Testing

@Suite("Policy evaluation")
struct PolicyTests {
    static let samr = InterfaceCatalog.named("samr")!.syntax
    static let drsuapi = InterfaceCatalog.named("drsuapi")!.syntax
    static let netlogon = InterfaceCatalog.named("netlogon")!.syntax
    static let spoolss = InterfaceCatalog.named("spoolss")!.syntax
    static let client = IPAddress("10.1.2.3")!
    static let dc = IPAddress("10.0.0.10")!

    static func matchers(_ names: String...) -> [InterfaceMatcher] { names.map { InterfaceMatcher(parsing: $0)! } }

    static let policy = Policy(
        name: "dc",
        defaultAction: .deny,
        rules: [
            PolicyRule(
                action: .deny,
                interfaces: matchers("drsuapi"),
                opnums: OpnumSet([3...3]),
                exceptSources: [IPNetwork("10.0.0.10/32")!],
                origin: RuleOrigin(index: 0, profile: "block-dcsync")
            ),
            PolicyRule(
                action: .allow,
                interfaces: matchers("samr", "drsuapi"),
                opnums: OpnumSet([0...100]),
                sources: [IPNetwork("10.0.0.0/8")!, IPNetwork("fd00::/8")!],
                origin: RuleOrigin(index: 1)
            ),
            PolicyRule(
                action: .allow,
                interfaces: matchers("spoolss"),
                minimumAuthLevel: .privacy,
                origin: RuleOrigin(index: 2)
            ),
            PolicyRule(action: .audit, interfaces: matchers("netlogon"), origin: RuleOrigin(index: 3)),
        ]
    )

    struct Case: CustomTestStringConvertible, Sendable {
        var query: PolicyQuery
        var action: PolicyAction
        var rule: Int?
        var testDescription: String {
            "\(query.interface) op \(query.opnum.map(String.init) ?? "-") from \(query.client) → \(action)"
        }
    }

    static let cases: [Case] = [
        // Binds: the opnum-specific deny does not refuse the bind.
        Case(query: PolicyQuery(interface: drsuapi, client: client), action: .allow, rule: 1),
        Case(query: PolicyQuery(interface: samr, client: client), action: .allow, rule: 1),
        Case(query: PolicyQuery(interface: samr, client: IPAddress("192.168.1.1")!), action: .deny, rule: nil),
        Case(query: PolicyQuery(interface: samr, client: IPAddress("fd12::1")!), action: .allow, rule: 1),
        Case(query: PolicyQuery(interface: samr, client: IPAddress("fe80::1")!), action: .deny, rule: nil),
        // Calls: DCSync denied except from the DC.
        Case(query: PolicyQuery(interface: drsuapi, opnum: 3, client: client), action: .deny, rule: 0),
        Case(query: PolicyQuery(interface: drsuapi, opnum: 3, client: dc), action: .allow, rule: 1),
        Case(query: PolicyQuery(interface: drsuapi, opnum: 0, client: client), action: .allow, rule: 1),
        Case(query: PolicyQuery(interface: drsuapi, opnum: 101, client: client), action: .deny, rule: nil),
        // Auth level.
        Case(query: PolicyQuery(interface: spoolss, client: client, authLevel: .integrity), action: .deny, rule: nil),
        Case(query: PolicyQuery(interface: spoolss, client: client, authLevel: .privacy), action: .allow, rule: 2),
        Case(query: PolicyQuery(interface: netlogon, opnum: 4, client: client), action: .audit, rule: 3),
        // Another major version of samr is not samr 1.x.
        Case(
            query: PolicyQuery(interface: SyntaxID(uuid: samr.uuid, majorVersion: 2, minorVersion: 0), client: client),
            action: .deny,
            rule: nil
        ),
        // An IPv4-mapped IPv6 client is treated as IPv4.
        Case(query: PolicyQuery(interface: samr, client: IPAddress("::ffff:10.9.9.9")!), action: .allow, rule: 1),
    ]

    @Test(arguments: cases)
    func firstMatchWins(_ testCase: Case) {
        let decision = Self.policy.evaluate(testCase.query)
        #expect(decision.action == testCase.action)
        #expect(decision.origin?.index == testCase.rule)
    }

    @Test func interfaceMatcherParsing() {
        #expect(InterfaceMatcher(parsing: "samr")?.majorVersion == 1)
        let exact = InterfaceMatcher(parsing: "12345778-1234-abcd-ef00-0123456789ac@1.0")
        #expect(exact?.matches(Self.samr) == true)
        #expect(exact?.matches(SyntaxID(uuid: Self.samr.uuid, majorVersion: 1, minorVersion: 1)) == false)
        #expect(
            InterfaceMatcher(parsing: "12345778-1234-abcd-ef00-0123456789ac")?.matches(
                SyntaxID(uuid: Self.samr.uuid, majorVersion: 7, minorVersion: 0)
            ) == true
        )
        #expect(InterfaceMatcher(parsing: "nosuchinterface") == nil)
        #expect(InterfaceMatcher(parsing: "12345778-1234-abcd-ef00-0123456789ac@1") == nil)
        #expect(InterfaceMatcher(parsing: "12345778-1234-abcd-ef00-0123456789ac@x.0") == nil)
    }

    @Test func opnumRanges() {
        #expect(OpnumSet.parseRange("4-9") == 4...9)
        #expect(OpnumSet.parseRange("12") == 12...12)
        #expect(OpnumSet.parseRange("9-4") == nil)
        #expect(OpnumSet.parseRange("-1") == nil)
        #expect(OpnumSet.parseRange("70000") == nil)
        #expect(OpnumSet.parseRange("a") == nil)
        #expect(OpnumSet([0...0, 4...9]).contains(5))
        #expect(!OpnumSet([0...0, 4...9]).contains(3))
    }

    @Test func addressesAndNetworks() {
        #expect(IPAddress("10.0.0.1") == .v4(0x0A00_0001))
        #expect(IPAddress("256.0.0.1") == nil)
        #expect(IPAddress("1.2.3") == nil)
        #expect(IPAddress("::1") == .v6(0, 1))
        #expect(IPAddress("fd00::") == .v6(0xFD00_0000_0000_0000, 0))
        #expect(IPAddress("1:2:3:4:5:6:7:8")?.description == "1:2:3:4:5:6:7:8")
        #expect(IPAddress("1::2::3") == nil)
        #expect(IPAddress("12345::") == nil)
        #expect(IPNetwork("10.0.0.0/8")?.contains(IPAddress("10.255.1.1")!) == true)
        #expect(IPNetwork("10.0.0.0/8")?.contains(IPAddress("11.0.0.1")!) == false)
        #expect(IPNetwork("0.0.0.0/0")?.contains(IPAddress("8.8.8.8")!) == true)
        #expect(IPNetwork("10.0.0.1/8") == nil, "host bits set")
        #expect(IPNetwork("10.0.0.0/33") == nil)
        #expect(IPNetwork("fd00::/8")?.contains(IPAddress("fdff::1")!) == true)
        #expect(IPNetwork("fd00::/8")?.contains(IPAddress("10.0.0.1")!) == false)
        #expect(IPNetwork("2001:db8::/129") == nil)
    }

    @Test func catalogIsConsistent() {
        #expect(InterfaceCatalog.all.allSatisfy { $0.syntax.uuid != .zero }, "every catalog UUID parses")
        #expect(Set(InterfaceCatalog.all.map(\.name)).count == InterfaceCatalog.all.count)
        for required in [
            "epmapper", "samr", "lsarpc", "netlogon", "dssetup", "drsuapi", "srvsvc", "wkssvc", "winreg", "svcctl",
            "atsvc", "taskscheduler", "spoolss", "efsrpc", "lsarpc-efs", "dfsnm", "fsrvp", "eventlog", "even6", "mgmt",
            "backupkey", "dnsserver",
        ] {
            #expect(InterfaceCatalog.named(required) != nil, "\(required) in catalog")
        }
        #expect(InterfaceCatalog.name(of: Self.samr) == "samr")
    }
}

@Suite("Policy explanation")
struct PolicyExplanationTests {
    static let client = IPAddress("10.1.2.3")!

    @Test func explainAgreesWithEvaluate() {
        for testCase in PolicyTests.cases {
            let explanation = PolicyTests.policy.explain(testCase.query)
            #expect(explanation.decision == PolicyTests.policy.evaluate(testCase.query))
            #expect(explanation.rule?.origin == explanation.decision.origin)
        }
    }

    @Test func bindListsEarlierOperationDenials() {
        let bind = PolicyQuery(interface: PolicyTests.drsuapi, client: Self.client)
        let explanation = PolicyTests.policy.explain(bind)
        #expect(explanation.decision.origin?.index == 1)
        #expect(explanation.deniedOperations.map(\.origin) == [RuleOrigin(index: 0, profile: "block-dcsync")])
        // Not for the excepted DC, and not for a call.
        #expect(
            PolicyTests.policy.explain(PolicyQuery(interface: PolicyTests.drsuapi, client: PolicyTests.dc))
                .deniedOperations.isEmpty
        )
        #expect(
            PolicyTests.policy.explain(PolicyQuery(interface: PolicyTests.drsuapi, opnum: 0, client: Self.client))
                .deniedOperations.isEmpty
        )
    }

    @Test func rulesRenderAsYAML() {
        #expect(
            PolicyTests.policy.rules[0].yamlLines == [
                "- action: deny", "  interfaces: [drsuapi]", "  opnums: [3]", "  except_sources: [10.0.0.10/32]",
            ]
        )
        #expect(
            PolicyTests.policy.rules[1].yamlLines == [
                "- action: allow", "  interfaces: [samr, drsuapi]", "  opnums: [0-100]",
                "  sources: [10.0.0.0/8, \"fd00::/8\"]",
            ]
        )
        #expect(
            PolicyTests.policy.rules[2].yamlLines == [
                "- action: allow", "  interfaces: [spoolss]", "  min_auth_level: privacy",
            ]
        )
        #expect(PolicyRule(action: .audit, origin: RuleOrigin(index: 0)).yamlLines == ["- action: audit"])
    }

    /// Requests are inspected when a rule depends on the opnum or on the auth level (each
    /// request's sec_trailer states its level), or a call may be audited; not otherwise.
    @Test func inspectsOperations() {
        let origin = RuleOrigin(index: 0)
        #expect(
            !Policy(name: "p", defaultAction: .deny, rules: [PolicyRule(action: .allow, origin: origin)])
                .inspectsOperations
        )
        #expect(
            Policy(
                name: "p",
                defaultAction: .deny,
                rules: [PolicyRule(action: .allow, opnums: OpnumSet([0...0]), origin: origin)]
            ).inspectsOperations
        )
        #expect(
            Policy(
                name: "p",
                defaultAction: .deny,
                rules: [PolicyRule(action: .allow, minimumAuthLevel: .integrity, origin: origin)]
            ).inspectsOperations
        )
        // Audited calls are recorded, so an audit default (learning) or an audit rule needs
        // every request.
        #expect(Policy(name: "learn", defaultAction: .audit, rules: []).inspectsOperations)
        #expect(
            Policy(name: "p", defaultAction: .deny, rules: [PolicyRule(action: .audit, origin: origin)])
                .inspectsOperations
        )
        // A call at a lower level than the bind's is decided on its own level.
        let policy = PolicyTests.policy
        #expect(
            policy.evaluate(
                PolicyQuery(interface: PolicyTests.spoolss, opnum: 0, client: Self.client, authLevel: .privacy)
            ).action == .allow
        )
        #expect(
            policy.evaluate(
                PolicyQuery(interface: PolicyTests.spoolss, opnum: 0, client: Self.client, authLevel: .connect)
            ).action == .deny
        )
    }
}

@Suite("IPv6 text")
struct IPv6TextTests {
    @Test(arguments: [
        ("fd00::", "fd00::"), ("::1", "::1"), ("::", "::"), ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"), ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("FD00:0:0:0:0:0:0:10", "fd00::10"),
    ])
    func compressedAsRFC5952(_ input: String, _ expected: String) {
        #expect(IPAddress(input)?.description == expected)
    }
}

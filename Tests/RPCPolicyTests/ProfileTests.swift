import RPCPolicy
import RPCWire
import Testing

/// Built-in profiles, evaluated as a policy would: `[profile at rule 0, allow everything at rule 1]`,
/// default deny. Table-driven, no NIO.
@Suite("Built-in profiles")
struct ProfileTests {
    static let anywhere = IPAddress("10.1.1.1")!
    static let otherDC = IPAddress("10.0.0.10")!

    static func syntax(_ name: String) -> SyntaxID { InterfaceCatalog.named(name)!.syntax }

    /// The profile at rule 0, then `- action: allow` at rule 1, default deny.
    static func policy(_ profile: String, exceptSources: [IPNetwork] = []) -> Policy {
        Policy(
            name: "test",
            defaultAction: .deny,
            rules: BuiltInProfiles.named(profile)!.expand(at: 0, exceptSources: exceptSources)
                + [PolicyRule(action: .allow, origin: RuleOrigin(index: 1))]
        )
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var profile: String
        var exceptSources: [IPNetwork] = []
        var interface: String
        var opnum: UInt16?
        var client: IPAddress = ProfileTests.anywhere
        var action: PolicyAction

        var testDescription: String {
            "\(profile): \(interface) \(opnum.map { "op \($0)" } ?? "bind") from \(client) → \(action)"
        }
    }

    static let dcs = [IPNetwork("10.0.0.10/32")!]

    static let cases: [Case] = [
        // block-coercion: MS-EFSR on both UUIDs.
        Case(profile: "block-coercion", interface: "lsarpc-efs", opnum: 0, action: .deny),
        Case(profile: "block-coercion", interface: "lsarpc-efs", opnum: 1, action: .allow),
        Case(profile: "block-coercion", interface: "lsarpc-efs", action: .allow),
        Case(profile: "block-coercion", interface: "efsrpc", opnum: 0, action: .deny),
        Case(profile: "block-coercion", interface: "efsrpc", opnum: 4, action: .deny),
        Case(profile: "block-coercion", interface: "efsrpc", opnum: 13, action: .deny),
        Case(profile: "block-coercion", interface: "efsrpc", opnum: 15, action: .deny),
        Case(profile: "block-coercion", interface: "efsrpc", opnum: 22, action: .deny),
        Case(profile: "block-coercion", interface: "efsrpc", opnum: 3, action: .allow),
        Case(profile: "block-coercion", interface: "efsrpc", opnum: 20, action: .allow),
        Case(profile: "block-coercion", interface: "efsrpc", action: .allow),
        // MS-RPRN and MS-PAR: notifications and driver installation, not printing.
        Case(profile: "block-coercion", interface: "spoolss", opnum: 65, action: .deny),
        Case(profile: "block-coercion", interface: "spoolss", opnum: 62, action: .deny),
        Case(profile: "block-coercion", interface: "spoolss", opnum: 89, action: .deny),
        Case(profile: "block-coercion", interface: "spoolss", opnum: 9, action: .deny),
        Case(profile: "block-coercion", interface: "spoolss", opnum: 0, action: .allow),
        Case(profile: "block-coercion", interface: "spoolss", opnum: 69, action: .allow),
        Case(profile: "block-coercion", interface: "spoolss", action: .allow),
        Case(profile: "block-coercion", interface: "par", opnum: 39, action: .deny),
        Case(profile: "block-coercion", interface: "par", opnum: 0, action: .allow),
        // MS-DFSNM, MS-FSRVP, MS-EVEN.
        Case(profile: "block-coercion", interface: "dfsnm", opnum: 12, action: .deny),
        Case(profile: "block-coercion", interface: "dfsnm", opnum: 13, action: .deny),
        Case(profile: "block-coercion", interface: "dfsnm", opnum: 23, action: .deny),
        Case(profile: "block-coercion", interface: "dfsnm", opnum: 0, action: .allow),
        Case(profile: "block-coercion", interface: "fsrvp", opnum: 8, action: .deny),
        Case(profile: "block-coercion", interface: "fsrvp", opnum: 9, action: .deny),
        Case(profile: "block-coercion", interface: "fsrvp", opnum: 0, action: .allow),
        Case(profile: "block-coercion", interface: "eventlog", opnum: 9, action: .deny),
        Case(profile: "block-coercion", interface: "eventlog", opnum: 16, action: .deny),
        Case(profile: "block-coercion", interface: "eventlog", opnum: 7, action: .allow),
        // Interfaces the profile does not name are untouched.
        Case(profile: "block-coercion", interface: "samr", opnum: 0, action: .allow),
        Case(profile: "block-coercion", interface: "drsuapi", opnum: 3, action: .allow),

        // block-dcsync with the other DC excepted.
        Case(profile: "block-dcsync", exceptSources: dcs, interface: "drsuapi", opnum: 3, action: .deny),
        Case(
            profile: "block-dcsync",
            exceptSources: dcs,
            interface: "drsuapi",
            opnum: 3,
            client: otherDC,
            action: .allow
        ),
        Case(profile: "block-dcsync", exceptSources: dcs, interface: "drsuapi", opnum: 2, action: .deny),
        Case(
            profile: "block-dcsync",
            exceptSources: dcs,
            interface: "drsuapi",
            opnum: 2,
            client: otherDC,
            action: .allow
        ),
        Case(profile: "block-dcsync", exceptSources: dcs, interface: "drsuapi", opnum: 0, action: .allow),
        Case(profile: "block-dcsync", exceptSources: dcs, interface: "drsuapi", opnum: 12, action: .allow),
        Case(profile: "block-dcsync", exceptSources: dcs, interface: "drsuapi", action: .allow),
        Case(profile: "block-dcsync", interface: "drsuapi", opnum: 3, client: otherDC, action: .deny),

        // block-remote-exec.
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 12, action: .deny),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 24, action: .deny),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 45, action: .deny),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 60, action: .deny),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 19, action: .deny),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 31, action: .deny),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 11, action: .deny),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 15, action: .allow),
        Case(profile: "block-remote-exec", interface: "svcctl", opnum: 0, action: .allow),
        Case(profile: "block-remote-exec", interface: "svcctl", action: .allow),
        // ATSvc and SASec are refused outright, bind included.
        Case(profile: "block-remote-exec", interface: "atsvc", action: .deny),
        Case(profile: "block-remote-exec", interface: "atsvc", opnum: 2, action: .deny),
        Case(profile: "block-remote-exec", interface: "sasec", action: .deny),
        Case(profile: "block-remote-exec", interface: "taskscheduler", opnum: 1, action: .deny),
        Case(profile: "block-remote-exec", interface: "taskscheduler", opnum: 12, action: .deny),
        Case(profile: "block-remote-exec", interface: "taskscheduler", opnum: 0, action: .allow),
        Case(profile: "block-remote-exec", interface: "taskscheduler", action: .allow),
    ]

    @Test(arguments: cases)
    func decision(_ testCase: Case) {
        let policy = Self.policy(testCase.profile, exceptSources: testCase.exceptSources)
        let query = PolicyQuery(
            interface: Self.syntax(testCase.interface),
            opnum: testCase.opnum,
            client: testCase.client
        )
        let decision = policy.evaluate(query)
        #expect(decision.action == testCase.action)
        let expectedOrigin =
            testCase.action == .deny
            ? RuleOrigin(index: 0, profile: testCase.profile) : RuleOrigin(index: 1)
        #expect(decision.origin == expectedOrigin)
        #expect(policy.explain(query).decision == decision, "explain agrees with evaluate")
    }

    /// The verified opnums, pinned: a change here must be a deliberate, re-verified one
    /// (sources in docs/POLICY.md).
    @Test func exactOperations() {
        func opnums(_ profile: String, _ interface: String) -> [UInt16]? {
            BuiltInProfiles.named(profile)?.rules.first { $0.interfaces.contains(interface) }?.operations?.map(\.opnum)
        }
        let efsr: [UInt16] = [0, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 16, 18, 19, 21, 22]
        #expect(opnums("block-coercion", "efsrpc") == efsr)
        #expect(opnums("block-coercion", "lsarpc-efs") == efsr)
        #expect(opnums("block-coercion", "spoolss") == [9, 62, 65, 89])
        #expect(opnums("block-coercion", "par") == [39])
        #expect(opnums("block-coercion", "dfsnm") == [10, 11, 12, 13, 15, 23, 24])
        #expect(opnums("block-coercion", "fsrvp") == [8, 9])
        #expect(opnums("block-coercion", "eventlog") == [9, 16])
        #expect(opnums("block-dcsync", "drsuapi") == [2, 3])
        #expect(opnums("block-remote-exec", "svcctl") == [11, 12, 19, 23, 24, 31, 44, 45, 60])
        #expect(opnums("block-remote-exec", "taskscheduler") == [1, 12])
        let remoteExec = BuiltInProfiles.named("block-remote-exec")!
        #expect(remoteExec.rules.first { $0.interfaces == ["atsvc"] }?.operations == nil)
        #expect(remoteExec.rules.first { $0.interfaces == ["sasec"] }?.operations == nil)
        #expect(BuiltInProfiles.names == ["block-coercion", "block-dcsync", "block-remote-exec"])
    }

    @Test func profilesAreWellFormed() {
        for profile in BuiltInProfiles.all {
            #expect(BuiltInProfiles.named(profile.name.uppercased()) == profile, "lookup ignores case")
            for rule in profile.rules {
                for name in rule.interfaces {
                    #expect(InterfaceCatalog.named(name) != nil, "\(profile.name): \(name) is in the catalog")
                }
                if let operations = rule.operations {
                    let opnums = operations.map(\.opnum)
                    #expect(!opnums.isEmpty)
                    #expect(
                        opnums == opnums.sorted() && Set(opnums).count == opnums.count,
                        "\(profile.name) \(rule.interfaces): sorted, unique"
                    )
                    #expect(Set(operations.map(\.name)).count == operations.count)
                }
                for name in rule.classes ?? [] {
                    #expect(ClassCatalog.named(name) != nil, "\(profile.name): \(name) is in the class catalog")
                }
                #expect(!rule.specification.isEmpty && !rule.reason.isEmpty)
            }
            let expanded = profile.expand(at: 7, exceptSources: Self.dcs)
            #expect(expanded.count == profile.rules.count)
            for (rule, source) in zip(expanded, profile.rules) {
                #expect(rule.action == .deny)
                #expect(rule.origin == RuleOrigin(index: 7, profile: profile.name))
                #expect(rule.interfaces?.map(\.label) == source.interfaces)
                #expect(rule.exceptSources == Self.dcs)
                #expect(rule.classIDs?.map(\.label) == source.classes)
                #expect(rule.sources == nil && rule.minimumAuthLevel == nil)
                if let operations = source.operations {
                    let listed = Set(operations.map(\.opnum))
                    #expect((0...UInt16(100)).allSatisfy { rule.opnums?.contains($0) == listed.contains($0) })
                } else {
                    #expect(rule.opnums == nil)
                }
            }
        }
    }

    /// A deny restricted to operations never refuses the bind, so DRSBind, OpenSCManager or
    /// OpenPrinter stay reachable: under default allow, every such bind is allowed by default.
    @Test func opnumRestrictedDenyNeverRefusesTheBind() {
        for profile in BuiltInProfiles.all {
            let policy = Policy(name: "p", defaultAction: .allow, rules: profile.expand(at: 0))
            for rule in profile.rules where rule.operations != nil {
                for name in rule.interfaces {
                    let bind = PolicyQuery(interface: Self.syntax(name), client: Self.anywhere, authLevel: .privacy)
                    #expect(
                        policy.evaluate(bind) == PolicyDecision(action: .allow, origin: nil),
                        "\(profile.name): bind of \(name)"
                    )
                    let explanation = policy.explain(bind)
                    #expect(explanation.rule == nil)
                    #expect(
                        explanation.deniedOperations.count == 1,
                        "explain lists the rule that denies some of \(name)'s calls"
                    )
                }
            }
        }
    }

    @Test func consecutiveOpnumsMergeIntoRanges() {
        let rule = BuiltInProfiles.blockCoercion.rules[0]
        #expect(rule.opnumSet?.description == "[0, 4-9, 11-13, 15-16, 18-19, 21-22]")
        #expect(BuiltInProfiles.blockDCSync.rules[0].opnumSet?.description == "[2-3]")
    }

    @Test func profileEntryNamesTheOperation() {
        let dcsync = BuiltInProfiles.blockDCSync
        let entry = dcsync.entry(for: Self.syntax("drsuapi"), opnum: 3)
        #expect(entry?.operation == ProfileOperation(3, "IDL_DRSGetNCChanges"))
        #expect(dcsync.entry(for: Self.syntax("drsuapi"), opnum: 0) == nil)
        #expect(dcsync.entry(for: Self.syntax("samr"), opnum: 3) == nil)
        let atsvc = BuiltInProfiles.blockRemoteExec.entry(for: Self.syntax("atsvc"), opnum: nil)
        #expect(atsvc?.rule.interfaces == ["atsvc"] && atsvc?.operation == nil)
    }

    /// MS-FSRVP's transport section says "version 3.0", but Samba's and Wireshark's fsrvp.idl,
    /// ShadowCoerce and Coercer all bind 1.0, which Windows accepts: the catalog keeps 1.0.
    @Test func fsrvpIsVersionOne() {
        let fsrvp = Self.syntax("fsrvp")
        #expect(fsrvp.uuid == DCEUUID("a8e0653c-2744-4389-a61d-7373df8b2292"))
        #expect(fsrvp.majorVersion == 1 && fsrvp.minorVersion == 0)
    }
}

import RPCPolicy
import RPCWire
import Testing

/// Rules on DCOM activation CLSIDs (`clsids`, `sealed_activation`) and the DCOM parts of
/// `block-remote-exec`. Table-driven, no NIO.
@Suite("DCOM activation policy")
struct ActivationPolicyTests {
    static let client = IPAddress("10.1.1.1")!
    static let activator = InterfaceCatalog.named("isystemactivator")!.syntax
    static let exporter = InterfaceCatalog.named("iobjectexporter")!.syntax
    static let mmc20 = ClassCatalog.named("mmc20.application")!.classID
    static let wbem = ClassCatalog.named("WbemLevel1Login")!.classID

    static func query(
        _ activation: ActivationClass?,
        opnum: UInt16? = 4,
        interface: SyntaxID = activator
    ) -> PolicyQuery {
        PolicyQuery(interface: interface, opnum: opnum, client: client, authLevel: .connect, activation: activation)
    }

    @Test func catalogs() {
        #expect(ClassCatalog.all.allSatisfy { $0.classID != .zero }, "every catalog CLSID parses")
        #expect(Set(ClassCatalog.all.map(\.name)).count == ClassCatalog.all.count)
        #expect(ClassCatalog.all.allSatisfy { $0.name == $0.name.lowercased() })
        #expect(ClassIDMatcher(parsing: "MMC20.Application")?.classID == Self.mmc20)
        #expect(ClassIDMatcher(parsing: "{49B2791A-B1AE-4C90-9B8E-E860BA07F889}")?.classID == Self.mmc20)
        #expect(ClassIDMatcher(parsing: "49b2791a-b1ae-4c90-9b8e-e860ba07f889")?.classID == Self.mmc20)
        #expect(ClassIDMatcher(parsing: "mmc21") == nil)
        // DCOM interfaces (MS-DCOM 1.9, MS-WMI 1.9, MS-OAUT): UUIDs as the specifications give them.
        let expected: [(String, String)] = [
            ("iremotescmactivator", "000001a0-0000-0000-c000-000000000046"),
            ("isystemactivator", "000001a0-0000-0000-c000-000000000046"),
            ("iactivation", "4d9f4ab8-7d1c-11cf-861e-0020af6e7c57"),
            ("iobjectexporter", "99fcfec4-5260-101b-bbcb-00aa0021347a"),
            ("iremunknown", "00000131-0000-0000-c000-000000000046"),
            ("iremunknown2", "00000143-0000-0000-c000-000000000046"),
            ("iwbemlevel1login", "f309ad18-d86a-11d0-a075-00c04fb68820"),
            ("iwbemservices", "9556dc99-828c-11cf-a37e-00aa003240c7"),
            ("ienumwbemclassobject", "027947e1-d731-11ce-a357-000000000001"),
            ("iwbemcallresult", "44aca675-e8fc-11d0-a07c-00c04fb68820"),
            ("iwbemfetchsmartenum", "1c1c45ee-4395-11d2-b60b-00104b703efd"),
            ("idispatch", "00020400-0000-0000-c000-000000000046"),
        ]
        for (name, uuid) in expected {
            #expect(
                InterfaceCatalog.named(name)?.syntax
                    == SyntaxID(uuid: DCEUUID(uuid)!, majorVersion: 0, minorVersion: 0),
                "\(name)"
            )
        }
        #expect(InterfaceCatalog.named("IWbemServices") != nil, "names are case-insensitive")
        #expect(InterfaceCatalog.name(of: DCOMInterface.remoteSCMActivator) == "iremotescmactivator")
        #expect(InterfaceCatalog.named("iobjectexporter")?.syntax == DCOMInterface.objectExporter)
        #expect(InterfaceCatalog.named("iactivation")?.syntax == DCOMInterface.activation)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var sealed: PolicyAction?
        var activation: ActivationClass?
        var opnum: UInt16?
        var expected: PolicyAction
        var testDescription: String {
            "sealed_activation \(sealed.map(\.rawValue) ?? "default"): \(activation.map { "\($0)" } ?? "no activation") op \(opnum.map { "\($0)" } ?? "bind") → \(expected)"
        }
    }

    /// `[deny activator clsids [mmc20.application] (sealed_activation …), allow]`, default deny.
    @Test(arguments: [
        Case(activation: .known(mmc20), opnum: 4, expected: .deny),
        Case(activation: .known(mmc20), opnum: 3, expected: .deny),
        Case(activation: .known(wbem), opnum: 4, expected: .allow),
        Case(activation: .sealed, opnum: 4, expected: .audit),
        Case(sealed: .deny, activation: .sealed, opnum: 4, expected: .deny),
        Case(sealed: .allow, activation: .sealed, opnum: 4, expected: .allow),
        Case(sealed: .deny, activation: .known(wbem), opnum: 4, expected: .allow),
        // The bind is not refused by a deny with classes; calls that are no activation pass.
        Case(activation: nil, opnum: nil, expected: .allow),
        Case(activation: nil, opnum: 5, expected: .allow),
    ])
    func denyList(_ test: Case) {
        let policy = Policy(
            name: "t",
            defaultAction: .deny,
            rules: [
                PolicyRule(
                    action: .deny,
                    interfaces: [InterfaceMatcher(parsing: "isystemactivator")!],
                    classIDs: [ClassIDMatcher(parsing: "mmc20.application")!],
                    sealedActivation: test.sealed,
                    origin: RuleOrigin(index: 0)
                ),
                PolicyRule(action: .allow, origin: RuleOrigin(index: 1)),
            ]
        )
        let decision = policy.evaluate(Self.query(test.activation, opnum: test.opnum))
        #expect(decision.action == test.expected)
        #expect(policy.explain(Self.query(test.activation, opnum: test.opnum)).decision == decision)
        #expect(policy.inspectsOperations)
    }

    /// An allow list: `[allow clsids [WbemLevel1Login] sealed_activation deny, deny activations, allow]`.
    @Test func allowList() {
        let policy = Policy(
            name: "t",
            defaultAction: .deny,
            rules: [
                PolicyRule(
                    action: .allow,
                    classIDs: [ClassIDMatcher(parsing: "wbemlevel1login")!],
                    sealedActivation: .deny,
                    origin: RuleOrigin(index: 0)
                ),
                PolicyRule(
                    action: .deny,
                    interfaces: [InterfaceMatcher(parsing: "isystemactivator")!],
                    opnums: OpnumSet([3...4]),
                    origin: RuleOrigin(index: 1)
                ),
                PolicyRule(action: .allow, origin: RuleOrigin(index: 2)),
            ]
        )
        #expect(
            policy.evaluate(Self.query(.known(Self.wbem)))
                == PolicyDecision(action: .allow, origin: RuleOrigin(index: 0))
        )
        #expect(
            policy.evaluate(Self.query(.known(Self.mmc20)))
                == PolicyDecision(action: .deny, origin: RuleOrigin(index: 1))
        )
        #expect(policy.evaluate(Self.query(.sealed)) == PolicyDecision(action: .deny, origin: RuleOrigin(index: 0)))
        // The bind: the allow rule with classes allows the interface.
        #expect(policy.evaluate(Self.query(nil, opnum: nil)).action == .allow)
        #expect(policy.rules[0].yamlLines.contains("  clsids: [wbemlevel1login]"))
        #expect(policy.rules[0].yamlLines.contains("  sealed_activation: deny"))
    }

    struct ProfileCase: CustomTestStringConvertible, Sendable {
        var interface: String
        var opnum: UInt16?
        var activation: ActivationClass?
        var expected: PolicyAction
        var testDescription: String {
            "block-remote-exec: \(interface) op \(opnum.map { "\($0)" } ?? "bind") \(activation.map { "\($0)" } ?? "") → \(expected)"
        }
    }

    @Test(arguments: [
        // MS-WMI 3.1.4.3: ExecMethod 24 and ExecMethodAsync 25; GetObject (6) and queries pass.
        ProfileCase(interface: "iwbemservices", opnum: 24, expected: .deny),
        ProfileCase(interface: "iwbemservices", opnum: 25, expected: .deny),
        ProfileCase(interface: "iwbemservices", opnum: 6, expected: .allow),
        ProfileCase(interface: "iwbemservices", opnum: 20, expected: .allow),
        ProfileCase(interface: "iwbemservices", opnum: nil, expected: .allow),
        ProfileCase(interface: "iwbemlevel1login", opnum: 6, expected: .allow),
        // Lateral-movement activations, readable: refused; WMI activation passes; sealed audited.
        ProfileCase(interface: "iremotescmactivator", opnum: 4, activation: .known(mmc20), expected: .deny),
        ProfileCase(
            interface: "iremotescmactivator",
            opnum: 3,
            activation: .known(ClassCatalog.named("shellwindows")!.classID),
            expected: .deny
        ),
        ProfileCase(
            interface: "iremotescmactivator",
            opnum: 4,
            activation: .known(ClassCatalog.named("shellbrowserwindow")!.classID),
            expected: .deny
        ),
        ProfileCase(interface: "iactivation", opnum: 0, activation: .known(mmc20), expected: .deny),
        ProfileCase(interface: "iremotescmactivator", opnum: 4, activation: .known(wbem), expected: .allow),
        ProfileCase(interface: "iremotescmactivator", opnum: 4, activation: .sealed, expected: .audit),
        ProfileCase(interface: "iremotescmactivator", opnum: nil, expected: .allow),
        ProfileCase(interface: "iobjectexporter", opnum: 5, expected: .allow),
    ])
    func blockRemoteExec(_ test: ProfileCase) {
        let policy = Policy(
            name: "t",
            defaultAction: .deny,
            rules: BuiltInProfiles.blockRemoteExec.expand(at: 0) + [
                PolicyRule(action: .allow, origin: RuleOrigin(index: 1))
            ]
        )
        let syntax = InterfaceCatalog.named(test.interface)!.syntax
        let decision = policy.evaluate(Self.query(test.activation, opnum: test.opnum, interface: syntax))
        #expect(decision.action == test.expected)
        if test.expected != .allow {
            #expect(decision.origin?.profile == "block-remote-exec")
            let techniques = BuiltInProfiles.techniques(
                profile: "block-remote-exec",
                interface: syntax,
                opnum: test.opnum
            )
            #expect(
                techniques == [
                    test.interface == "iwbemservices"
                        ? .windowsManagementInstrumentation : .distributedComponentObjectModel
                ]
            )
        }
    }
}

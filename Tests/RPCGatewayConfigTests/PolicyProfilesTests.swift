import Foundation
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

@Suite("Policy profiles in the configuration")
struct PolicyProfilesTests {
    static func policy(_ yaml: String) throws -> Policy {
        let settings = try ConfigurationLoader.parse(yaml: yaml, fileName: "test.yaml")
        return try #require(settings.routes.first).policy
    }

    @Test("A profile item expands in place into deny rules carrying its index and name")
    func expandsInPlace() throws {
        let policy = try Self.policy(
            minimalConfig + """
                      - profile: block-dcsync
                        except_sources: [10.0.0.10/32, "fd00::10/128"]
                      - profile: block-coercion
                      - action: allow
                        interfaces: [drsuapi]

                """
        )
        let coercion = BuiltInProfiles.blockCoercion.rules.count
        #expect(policy.rules.count == 1 + 1 + coercion + 1)
        #expect(
            policy.rules.map(\.origin)
                == [RuleOrigin(index: 0), RuleOrigin(index: 1, profile: "block-dcsync")]
                + Array(repeating: RuleOrigin(index: 2, profile: "block-coercion"), count: coercion)
                + [RuleOrigin(index: 3)]
        )
        let dcsync = policy.rules[1]
        #expect(dcsync.action == .deny)
        #expect(dcsync.interfaces?.map(\.label) == ["drsuapi"])
        #expect(dcsync.opnums == OpnumSet([2...3]))
        #expect(dcsync.exceptSources == [IPNetwork("10.0.0.10/32")!, IPNetwork("fd00::10/128")!])
        // except_sources belongs to the item it is written on.
        #expect(policy.rules[2...(1 + coercion)].allSatisfy { $0.exceptSources.isEmpty && $0.action == .deny })

        let drsuapi = try #require(InterfaceCatalog.named("drsuapi")).syntax
        let client = try #require(IPAddress("10.1.1.1"))
        let dc = try #require(IPAddress("10.0.0.10"))
        #expect(
            policy.evaluate(PolicyQuery(interface: drsuapi, opnum: 3, client: client)).origin
                == RuleOrigin(index: 1, profile: "block-dcsync")
        )
        #expect(policy.evaluate(PolicyQuery(interface: drsuapi, opnum: 3, client: dc)).origin == RuleOrigin(index: 3))
        #expect(policy.evaluate(PolicyQuery(interface: drsuapi, client: client)).origin == RuleOrigin(index: 3))
        let efsrpc = try #require(InterfaceCatalog.named("efsrpc")).syntax
        #expect(
            policy.evaluate(PolicyQuery(interface: efsrpc, opnum: 0, client: client)).origin
                == RuleOrigin(index: 2, profile: "block-coercion")
        )
        #expect(policy.inspectsOperations)
    }

    @Test("Profile names are case-insensitive")
    func caseInsensitive() throws {
        let policy = try Self.policy(minimalConfig + "      - profile: Block-DCSync\n")
        #expect(policy.rules.last?.origin == RuleOrigin(index: 1, profile: "block-dcsync"))
    }

    @Test("An unknown profile lists the known ones")
    func unknownProfile() throws {
        let yaml = minimalConfig + "      - profile: block-dcsyn\n"
        let found = try #require(problem(at: "policies.dc.rules[1].profile", in: yaml))
        #expect(found.line == 13)
        #expect(found.column == 18)
        #expect(
            found.message
                == "unknown profile \"block-dcsyn\"; did you mean \"block-dcsync\"? (known profiles: \"block-coercion\", \"block-dcsync\" and \"block-remote-exec\")"
        )

        let far = try #require(
            problem(at: "policies.dc.rules[1].profile", in: minimalConfig + "      - profile: petitpotam\n")
        )
        #expect(
            far.message
                == "unknown profile \"petitpotam\" (known profiles: \"block-coercion\", \"block-dcsync\" and \"block-remote-exec\")"
        )
    }

    @Test("Bad except_sources and unknown keys on a profile item are reported")
    func badProfileItem() throws {
        let yaml =
            minimalConfig + """
                      - profile: block-dcsync
                        except_sources: [10.0.0.10/8]
                      - profile: block-coercion
                        action: audit

                """
        let all = problems(yaml)
        #expect(all.map(\.keyPath) == ["policies.dc.rules[1].except_sources[0]", "policies.dc.rules[2].action"])
        #expect(all.map(\.line) == [14, 16])
        #expect(all.first?.message == "\"10.0.0.10/8\" has host bits set; did you mean 10.0.0.0/8?")
        #expect(all.last?.message.hasPrefix("unknown key \"action\"") == true)
    }
}

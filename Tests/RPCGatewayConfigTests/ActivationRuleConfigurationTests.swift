import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

/// `clsids` and `sealed_activation` in rules.
@Suite("Activation rules in the configuration")
struct ActivationRuleConfigurationTests {
    static func yaml(_ rule: String) -> String {
        """
        routes:
          - name: dc1
            listen: 10.99.0.1
            upstream: 10.99.0.2
            ports: 50000-50099
            policy: dc
        policies:
          dc:
            default: deny
            rules:
        \(rule)
        """
    }

    @Test func decodesClassesAndSealedChoice() throws {
        let settings = try ConfigurationLoader.parse(
            yaml: Self.yaml(
                """
                      - action: deny
                        interfaces: [ISystemActivator, IActivation]
                        clsids: [MMC20.Application, ShellWindows, "{C08AFD90-F2A1-11D1-8455-00A0C91F3880}"]
                        sealed_activation: deny
                      - action: allow
                        clsids: wbemlevel1login
                      - action: deny
                        interfaces: [iwbemservices]
                        opnums: [24-25]
                      - profile: block-remote-exec
                """
            )
        )
        let rules = settings.routes[0].policy.rules
        #expect(
            rules[0].classIDs?.map(\.classID) == [
                ClassCatalog.named("mmc20.application")!.classID,
                ClassCatalog.named("shellwindows")!.classID,
                DCEUUID("c08afd90-f2a1-11d1-8455-00a0c91f3880")!,
            ]
        )
        #expect(rules[0].sealedActivation == .deny)
        #expect(rules[1].classIDs?.map(\.label) == ["wbemlevel1login"])
        #expect(rules[1].sealedActivation == nil)
        #expect(
            rules[0].interfaces?.map(\.uuid) == [DCOMInterface.remoteSCMActivator.uuid, DCOMInterface.activation.uuid]
        )
        #expect(rules.contains { $0.origin.profile == "block-remote-exec" && $0.classIDs != nil })
    }

    @Test func reportsBadClasses() {
        let all = problems(
            Self.yaml(
                """
                      - action: deny
                        clsids: [mmc20.aplication, 49b2791a-b1ae-4c90-9b8e-e860ba07f88]
                        sealed_activation: block
                      - action: deny
                        clsids: []
                      - action: allow
                        interfaces: [samr]
                        sealed_activation: deny
                """
            )
        )
        #expect(
            all.map(\.keyPath) == [
                "policies.dc.rules[0].clsids[0]", "policies.dc.rules[0].clsids[1]",
                "policies.dc.rules[0].sealed_activation", "policies.dc.rules[1].clsids",
                "policies.dc.rules[2].sealed_activation",
            ]
        )
        #expect(all[0].message.hasPrefix("unknown COM class \"mmc20.aplication\"; did you mean \"mmc20.application\""))
        #expect(all[1].message.contains("is not a CLSID"))
        #expect(all[2].message.hasPrefix("unknown action \"block\""))
        #expect(all[3].message.contains("empty list matches no activation"))
        #expect(all[4].message.hasPrefix("sealed_activation applies only to a rule with clsids"))
    }
}

import RPCPolicy
import RPCWire
import Testing

/// `evaluate` tries only the rules that can match the query's interface (an index by UUID);
/// `explain` walks every rule. Over seeded random policies and queries the two must decide alike.
@Suite("Policy evaluation by interface index")
struct PolicyIndexTests {
    /// A small deterministic generator (xorshift), so a failure names its seed.
    struct Generator {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            self.state ^= self.state << 13
            self.state ^= self.state >> 7
            self.state ^= self.state << 17
            return Int(self.state % UInt64(bound))
        }
        mutating func chance(_ percent: Int) -> Bool { self.next(100) < percent }
    }

    static let interfaces = ["samr", "drsuapi", "netlogon", "spoolss", "lsarpc"].compactMap {
        InterfaceCatalog.named($0)?.syntax
    }
    static let clients = ["10.1.2.3", "10.0.0.10", "192.168.1.5", "fd00::1"].compactMap { IPAddress($0) }
    static let networks = ["10.0.0.0/8", "10.0.0.10/32", "192.168.0.0/16", "fd00::/8"].compactMap { IPNetwork($0) }
    static let actions: [PolicyAction] = [.allow, .deny, .audit]
    static let levels: [AuthLevel] = [.none, .connect, .integrity, .privacy]

    static func randomRule(_ generator: inout Generator, index: Int) -> PolicyRule {
        var interfaces: [InterfaceMatcher]?
        if !generator.chance(25) {
            interfaces = (0...generator.next(2)).map { _ in
                let syntax = Self.interfaces[generator.next(Self.interfaces.count)]
                // Some matchers pin a version the queries do not always have.
                return generator.chance(20)
                    ? InterfaceMatcher(
                        uuid: syntax.uuid,
                        majorVersion: syntax.majorVersion &+ 1,
                        label: "other version"
                    )
                    : InterfaceMatcher(uuid: syntax.uuid, majorVersion: syntax.majorVersion, label: "\(syntax.uuid)")
            }
        }
        let low = UInt16(generator.next(8))
        return PolicyRule(
            action: Self.actions[generator.next(Self.actions.count)],
            interfaces: interfaces,
            opnums: generator.chance(40) ? OpnumSet([low...(low + UInt16(generator.next(4)))]) : nil,
            sources: generator.chance(30) ? [Self.networks[generator.next(Self.networks.count)]] : nil,
            exceptSources: generator.chance(15) ? [Self.networks[generator.next(Self.networks.count)]] : [],
            minimumAuthLevel: generator.chance(20) ? Self.levels[generator.next(Self.levels.count)] : nil,
            origin: RuleOrigin(index: index)
        )
    }

    @Test(arguments: [1, 7, 42, 1_000, 31_337] as [UInt64])
    func evaluateDecidesAsTheFullWalk(seed: UInt64) {
        var generator = Generator(state: seed)
        for _ in 0..<40 {
            let rules = (0..<(1 + generator.next(24))).map { Self.randomRule(&generator, index: $0) }
            let policy = Policy(name: "p", defaultAction: Self.actions[generator.next(3)], rules: rules)
            for _ in 0..<60 {
                let query = PolicyQuery(
                    interface: Self.interfaces[generator.next(Self.interfaces.count)],
                    opnum: generator.chance(30) ? nil : UInt16(generator.next(12)),
                    client: Self.clients[generator.next(Self.clients.count)],
                    authLevel: Self.levels[generator.next(Self.levels.count)]
                )
                #expect(policy.evaluate(query) == policy.explain(query).decision, "seed \(seed): \(query)")
            }
        }
    }

    @Test func changingTheRulesRebuildsTheIndex() {
        let samr = InterfaceCatalog.named("samr")!.syntax
        var policy = Policy(name: "p", defaultAction: .deny, rules: [])
        let query = PolicyQuery(interface: samr, opnum: 1, client: IPAddress("10.1.2.3")!)
        #expect(policy.evaluate(query).action == .deny)
        policy.rules.append(
            PolicyRule(action: .allow, interfaces: [InterfaceMatcher(parsing: "samr")!], origin: RuleOrigin(index: 0))
        )
        #expect(policy.evaluate(query).action == .allow)
        policy.rules[0].interfaces = [InterfaceMatcher(parsing: "drsuapi")!]
        #expect(policy.evaluate(query).action == .deny)
    }
}

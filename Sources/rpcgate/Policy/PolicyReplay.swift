import Foundation
import RPCGateway
import RPCPolicy
import RPCWire

/// Replays audit records against candidate policies (the same `Policy.evaluate` the gateway
/// runs) and collects what they would deny.
struct PolicyReplay {
    /// What a denial is grouped by: interface, opnum (calls) and source, per route.
    struct DenialKey: Hashable, Comparable {
        var route: String
        var event: AuditEntry.Event
        var interfaceLabel: String
        var interface: SyntaxID
        var opnum: UInt16?
        var source: IPAddress

        static func < (lhs: DenialKey, rhs: DenialKey) -> Bool {
            (lhs.route, lhs.interfaceLabel, lhs.event.rawValue, Int(lhs.opnum ?? 0), lhs.source.description)
                < (rhs.route, rhs.interfaceLabel, rhs.event.rawValue, Int(rhs.opnum ?? 0), rhs.source.description)
        }
    }

    struct Denial {
        var count = 0
        /// The rule that denies, as `rule 2 (profile block-dcsync)` or `default`.
        var rule: String
        /// Up to ``maximumExamples`` records: time, auth level, user or service.
        var examples: [String] = []
    }

    static let maximumExamples = 3

    let policies: [String: Policy]
    private(set) var denials: [DenialKey: Denial] = [:]
    private(set) var replayed = 0
    private(set) var denied = 0
    private(set) var unknownRoutes: [String: Int] = [:]
    private(set) var endpointMapperRecords = 0

    init(policies: [String: Policy]) {
        self.policies = policies
    }

    mutating func add(_ entry: AuditEntry) {
        guard let policy = self.policies[entry.route] else {
            self.unknownRoutes[entry.route, default: 0] += 1
            return
        }
        // A DCOM reply line is no decision.
        guard !entry.isAnnouncement else { return }
        // The endpoint-mapper listener decides its binds itself, whatever the policy.
        guard !entry.isEndpointMapperListener else {
            self.endpointMapperRecords += 1
            return
        }
        self.replayed += 1
        let decision = policy.evaluate(
            PolicyQuery(
                interface: entry.interface,
                opnum: entry.event == .call ? entry.opnum : nil,
                client: entry.client,
                authLevel: entry.authLevel,
                activation: entry.activation
            )
        )
        guard !decision.permits else { return }
        self.denied += 1
        let key = DenialKey(
            route: entry.route,
            event: entry.event,
            interfaceLabel: InterfaceUsage.label(of: entry.interface),
            interface: entry.interface,
            opnum: entry.event == .call ? entry.opnum : nil,
            source: entry.client
        )
        var denial = self.denials[key] ?? Denial(rule: decision.origin?.description ?? "default")
        denial.count += 1
        if denial.examples.count < Self.maximumExamples {
            var example = "\(entry.timeText) auth \(entry.authType)/\(entry.authLevel)"
            if let user = entry.user { example += " user \(user)" }
            if let service = entry.servicePrincipal { example += " service \(service)" }
            if entry.decision != .deny { example += " (was \(entry.decision.rawValue))" }
            denial.examples.append(example)
        }
        self.denials[key] = denial
    }

    /// The report: one line per group, most frequent first, with examples.
    func report() -> [String] {
        var lines: [String] = []
        let groups = self.denials.sorted { lhs, rhs in
            lhs.value.count != rhs.value.count ? lhs.value.count > rhs.value.count : lhs.key < rhs.key
        }
        lines.append(
            "replayed \(self.replayed) records: \(self.denied) would be denied"
                + (groups.isEmpty
                    ? "" : " in \(groups.count) group\(groups.count == 1 ? "" : "s") (interface, opnum, source)")
        )
        for (key, denial) in groups {
            let version = "\(key.interface.uuid)@\(key.interface.majorVersion).\(key.interface.minorVersion)"
            let what = key.opnum.map { "call \(key.interfaceLabel) opnum \($0)" } ?? "bind \(key.interfaceLabel)"
            lines.append(
                "DENY \(denial.count)x route \(key.route): \(what) (\(version)) from \(key.source) by \(denial.rule)"
            )
            for example in denial.examples {
                lines.append("    e.g. \(example)")
            }
        }
        for (route, count) in self.unknownRoutes.sorted(by: { $0.key < $1.key }) {
            lines.append(
                "note: \(count) records of route \(route), which the configuration does not have, were not replayed"
            )
        }
        if self.endpointMapperRecords > 0 {
            lines.append(
                "note: \(self.endpointMapperRecords) endpoint-mapper listener records were not replayed (the listener, not the policy, decides them)"
            )
        }
        return lines
    }
}

import Foundation
import RPCGateway
import RPCPolicy
import RPCWire

/// What was learned about one interface on one policy's routes.
struct InterfaceUsage: Hashable {
    var interface: SyntaxID
    /// The catalog name, or `UUID@MAJOR.MINOR`: what a rule's `interfaces` list takes.
    var label: String
    var binds = 0
    var calls = 0
    var opnums: Set<UInt16> = []
    var sources: Set<IPAddress> = []
    var networks: Set<IPNetwork> = []
    var users: Set<String> = []
    var authLevels: Set<AuthLevel> = []
    var first: Date
    var last: Date

    init(interface: SyntaxID, at time: Date) {
        self.interface = interface
        self.label = InterfaceUsage.label(of: interface)
        self.first = time
        self.last = time
    }

    /// A catalog name matches the UUID and major version, as the audit line's interface does.
    static func label(of interface: SyntaxID) -> String {
        InterfaceCatalog.name(of: interface) ?? "\(interface.uuid)@\(interface.majorVersion).\(interface.minorVersion)"
    }
}

/// Learns a least-privilege policy per route policy from audit records.
///
/// A record counts when a policy let it through (`allow` or `audit`) on a mapped port: binds
/// and calls refused during learning are not learned (they are counted), and the
/// endpoint-mapper listener's own decisions are skipped (the listener admits only the endpoint
/// mapper, whatever the policy).
struct PolicyLearner {
    struct Options {
        /// Sources are aggregated to networks of this many bits (IPv4) ...
        var prefixLength = 24
        /// ... and this many (IPv6).
        var prefixLengthIPv6 = 64
        /// List the opnums seen in each allow rule.
        var includeOpnums = false
        /// Built-in profiles placed first in every learned policy.
        var profiles: [PolicyProfile] = BuiltInProfiles.all
    }

    struct Learned {
        /// The policy's name (the one the routes already use).
        var policy: String
        var routes: [String]
        var usage: [SyntaxID: InterfaceUsage] = [:]
        var records = 0
        var deniedRecords = 0
        var first: Date?
        var last: Date?

        /// Interfaces in label order.
        var interfaces: [InterfaceUsage] {
            self.usage.values.sorted {
                ($0.label, $0.interface.uuid.description) < ($1.label, $1.interface.uuid.description)
            }
        }
    }

    let options: Options
    /// Policy name of each route.
    let policyOfRoute: [String: String]
    private(set) var learned: [String: Learned] = [:]
    /// Records of routes the configuration does not have.
    private(set) var unknownRoutes: [String: Int] = [:]
    private(set) var endpointMapperRecords = 0
    /// Learned records the profiles refuse, per policy. The profiles come first in a learned
    /// policy and every other learned record matches an allow rule, so these are exactly the
    /// records the learned policy would deny.
    private(set) var conflicts: [String: PolicyReplay] = [:]

    init(options: Options, routes: [(route: String, policy: String)]) {
        self.options = options
        self.policyOfRoute = Dictionary(routes.map { ($0.route, $0.policy) }, uniquingKeysWith: { first, _ in first })
        var index = 0
        var profileRules: [PolicyRule] = []
        for profile in options.profiles {
            profileRules += profile.expand(at: index)
            index += 1
        }
        for (route, policy) in routes {
            self.learned[policy, default: Learned(policy: policy, routes: [])].routes.append(route)
        }
        for (policy, learned) in self.learned {
            let profilesOnly = Policy(name: policy, defaultAction: .allow, rules: profileRules)
            self.conflicts[policy] = PolicyReplay(
                policies: Dictionary(uniqueKeysWithValues: learned.routes.map { ($0, profilesOnly) })
            )
        }
    }

    /// Lines for the learned policy's comments: what it would refuse of what was seen.
    func conflictLines(for policy: String) -> [String] {
        guard let replay = self.conflicts[policy], replay.denied > 0 else { return [] }
        return replay.report().filter { $0.hasPrefix("DENY ") }.map {
            "a built-in profile refuses what was seen: \($0.dropFirst(5)); if legitimate, list the sources under the profile's except_sources"
        }
    }

    mutating func add(_ entry: AuditEntry) {
        guard let policy = self.policyOfRoute[entry.route] else {
            self.unknownRoutes[entry.route, default: 0] += 1
            return
        }
        guard !entry.isAnnouncement else { return }
        guard !entry.isEndpointMapperListener else {
            self.endpointMapperRecords += 1
            return
        }
        var learned = self.learned[policy] ?? Learned(policy: policy, routes: [entry.route])
        learned.first = min(learned.first ?? entry.time, entry.time)
        learned.last = max(learned.last ?? entry.time, entry.time)
        guard entry.decision.permits else {
            learned.deniedRecords += 1
            self.learned[policy] = learned
            return
        }
        learned.records += 1
        self.conflicts[policy]?.add(entry)
        var usage = learned.usage[entry.interface] ?? InterfaceUsage(interface: entry.interface, at: entry.time)
        switch entry.event {
        case .bind: usage.binds += 1
        case .call: usage.calls += 1
        }
        if let opnum = entry.opnum { usage.opnums.insert(opnum) }
        usage.sources.insert(entry.client)
        let prefix: Int
        switch entry.client {
        case .v4: prefix = self.options.prefixLength
        case .v6: prefix = self.options.prefixLengthIPv6
        }
        usage.networks.insert(IPNetwork(containing: entry.client, prefixLength: prefix))
        if let user = entry.user { usage.users.insert(user) }
        usage.authLevels.insert(entry.authLevel)
        usage.first = min(usage.first, entry.time)
        usage.last = max(usage.last, entry.time)
        learned.usage[entry.interface] = usage
        self.learned[policy] = learned
    }

    // MARK: - The learned policy

    /// The policy as a value, the same rules as ``yaml(for:indent:)`` writes: profiles, then one
    /// allow rule per interface, default deny.
    func policy(for learned: Learned) -> Policy {
        var rules: [PolicyRule] = []
        var index = 0
        for profile in self.options.profiles {
            rules += profile.expand(at: index)
            index += 1
        }
        for usage in learned.interfaces {
            rules.append(
                PolicyRule(
                    action: .allow,
                    interfaces: [
                        InterfaceMatcher(parsing: usage.label)
                            ?? InterfaceMatcher(uuid: usage.interface.uuid, label: usage.label)
                    ],
                    opnums: self.opnumSet(usage),
                    sources: Self.sortedNetworks(usage.networks),
                    origin: RuleOrigin(index: index)
                )
            )
            index += 1
        }
        return Policy(name: learned.policy, defaultAction: .deny, rules: rules)
    }

    /// The opnums rule condition: the opnums seen when `includeOpnums`, else none. An interface
    /// that was bound but never called gets no opnums condition (there is nothing to list).
    private func opnumSet(_ usage: InterfaceUsage) -> OpnumSet? {
        guard self.options.includeOpnums, !usage.opnums.isEmpty else { return nil }
        var ranges: [ClosedRange<UInt16>] = []
        for opnum in usage.opnums.sorted() {
            if let last = ranges.last, last.upperBound < UInt16.max, last.upperBound + 1 == opnum {
                ranges[ranges.count - 1] = last.lowerBound...opnum
            } else {
                ranges.append(opnum...opnum)
            }
        }
        return OpnumSet(ranges)
    }

    static func sortedNetworks(_ networks: Set<IPNetwork>) -> [IPNetwork] {
        networks.sorted { lhs, rhs in
            switch (lhs.address, rhs.address) {
            case (.v4(let a), .v4(let b)): return (a, lhs.prefixLength) < (b, rhs.prefixLength)
            case (.v4, .v6): return true
            case (.v6, .v4): return false
            case (.v6(let a, let b), .v6(let c, let d)): return (a, b, lhs.prefixLength) < (c, d, rhs.prefixLength)
            }
        }
    }

    /// The learned policy as the lines of a `policies:` entry, indented by `indent` spaces (the
    /// entry's key) with comments stating what each rule was learned from.
    func yaml(for learned: Learned, indent: Int, conflicts: [String]) -> [String] {
        let pad = String(repeating: " ", count: indent)
        let inner = pad + "  "
        var lines: [String] = []
        lines.append("\(pad)\(Self.yamlKey(learned.policy)):")
        let window =
            learned.first.map { "\(AuditTime.text($0)) to \(AuditTime.text(learned.last ?? $0))" } ?? "no records"
        lines.append(
            "\(inner)# learned from \(learned.records) audit records of route\(learned.routes.count == 1 ? "" : "s") "
                + "\(learned.routes.joined(separator: ", ")) (\(window))"
                + (learned.deniedRecords > 0
                    ? "; \(learned.deniedRecords) records refused while learning were not learned" : "")
        )
        if learned.usage.isEmpty {
            lines.append("\(inner)# no interface was seen: everything is denied")
        }
        for conflict in conflicts {
            lines.append("\(inner)# WARNING: \(conflict)")
        }
        lines.append("\(inner)default: deny")
        lines.append("\(inner)rules:")
        for profile in self.options.profiles {
            lines.append("\(inner)  - profile: \(profile.name)")
        }
        for usage in learned.interfaces {
            var summary =
                "\(usage.label) (\(usage.interface.uuid)@\(usage.interface.majorVersion).\(usage.interface.minorVersion)): "
            summary +=
                "\(usage.binds) bind\(usage.binds == 1 ? "" : "s"), \(usage.calls) call\(usage.calls == 1 ? "" : "s")"
            summary += " from \(usage.sources.count) source\(usage.sources.count == 1 ? "" : "s")"
            summary += ", auth \(usage.authLevels.sorted().map(\.description).joined(separator: "/"))"
            if !usage.users.isEmpty {
                summary +=
                    ", users \(usage.users.sorted().prefix(5).joined(separator: " "))\(usage.users.count > 5 ? " ..." : "")"
            }
            summary += "; first \(AuditTime.text(usage.first)), last \(AuditTime.text(usage.last))"
            lines.append("\(inner)  # \(summary)")
            lines.append("\(inner)  - action: allow")
            lines.append("\(inner)    interfaces: [\(Self.yamlScalar(usage.label))]")
            lines.append(
                "\(inner)    sources: [\(Self.sortedNetworks(usage.networks).map { Self.yamlScalar($0.description) }.joined(separator: ", "))]"
            )
            if let opnums = self.opnumSet(usage) {
                lines.append("\(inner)    opnums: \(opnums)")
            } else if self.options.includeOpnums {
                lines.append("\(inner)    # no call was seen: any opnum")
            }
        }
        return lines
    }

    /// A key as YAML: plain when it is safe, else double-quoted.
    static func yamlKey(_ text: String) -> String { self.yamlScalar(text) }

    /// Plain when made only of characters that never need quoting, else a double-quoted string.
    static func yamlScalar(_ text: String) -> String {
        let plain =
            !text.isEmpty
            && text.unicodeScalars.allSatisfy { scalar in
                (scalar.value >= 0x30 && scalar.value <= 0x39) || (scalar.value >= 0x41 && scalar.value <= 0x5A)
                    || (scalar.value >= 0x61 && scalar.value <= 0x7A) || "-_./@".unicodeScalars.contains(scalar)
            } && !text.hasPrefix("-")
            && !["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"].contains(text.lowercased())
        if plain && !text.contains(":") { return text }
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    quoted += String(format: "\\x%02X", scalar.value)
                } else {
                    quoted.unicodeScalars.append(scalar)
                }
            }
        }
        return quoted + "\""
    }
}

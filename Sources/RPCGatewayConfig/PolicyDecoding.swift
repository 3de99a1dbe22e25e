import RPCPolicy
import RPCWire
import Yams

/// The `policies` section as far as it could be read.
struct DecodedPolicies {
    /// Every policy name defined, valid or not, in file order: a route that names an invalid
    /// policy is not reported again as naming an unknown one.
    var defined: [String] = []
    /// The policies that are valid.
    var valid: [String: Policy] = [:]
}

extension ConfigurationDecoder {
    static let policyKeys = ["default", "rules"]
    static let ruleKeys = [
        "action", "interfaces", "opnums", "sources", "except_sources", "min_auth_level", "clsids", "sealed_activation",
    ]
    static let profileItemKeys = ["profile", "except_sources"]
    static let authLevels: [(name: String, level: AuthLevel)] = [
        ("none", .none), ("connect", .connect), ("call", .call),
        ("packet", .packet), ("integrity", .integrity), ("privacy", .privacy),
    ]

    // MARK: - Policies

    /// `policies:`, a mapping from policy name to `{default, rules}`.
    mutating func decodePolicies(_ node: Node, at path: ConfigPath) -> DecodedPolicies {
        var result = DecodedPolicies()
        guard case .mapping(let mapping) = node else {
            self.report(
                "expected a mapping from policy names to policies, found \(Self.describe(node))",
                at: path,
                node: node
            )
            return result
        }
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key, !Self.isNull(key), !scalar.string.isEmpty else {
                self.report("policy names must be non-empty strings, found \(Self.describe(key))", at: path, node: key)
                continue
            }
            let name = scalar.string
            result.defined.append(name)
            if let policy = self.decodePolicy(named: name, value, at: path.key(name)) {
                result.valid[name] = policy
            }
        }
        return result
    }

    private mutating func decodePolicy(named name: String, _ node: Node, at path: ConfigPath) -> Policy? {
        guard let fields = self.fields(of: node, at: path, known: Self.policyKeys, what: "a policy (default, rules)")
        else { return nil }
        var valid = true
        var defaultAction = PolicyAction.deny
        if let node = fields["default"] {
            if let action = self.action(node, at: path.key("default")) {
                defaultAction = action
            } else {
                valid = false
            }
        }
        var rules: [PolicyRule] = []
        if let node = fields["rules"], let items = self.list(node, at: path.key("rules"), what: "a list of rules") {
            for (index, item) in items.enumerated() {
                if let expanded = self.decodeRuleItem(item.node, index: index, at: item.path) {
                    rules += expanded
                } else {
                    valid = false
                }
            }
        } else if fields["rules"] != nil {
            valid = false
        }
        return valid ? Policy(name: name, defaultAction: defaultAction, rules: rules) : nil
    }

    private mutating func action(_ node: Node, at path: ConfigPath) -> PolicyAction? {
        let names = PolicyAction.allCases.map(\.rawValue)
        guard let text = self.string(node, at: path, what: "an action (\(Suggestions.list(names, conjunction: "or")))")
        else { return nil }
        if let action = PolicyAction(rawValue: text) { return action }
        var message = "unknown action \"\(text)\""
        if let hint = Suggestions.didYouMean(text, among: names) { message += "; \(hint)" }
        message += " (\(Suggestions.list(names, conjunction: "or")))"
        self.report(message, at: path, node: node)
        return nil
    }

    // MARK: - Rules

    /// One item of a `rules` list: a rule, or a `profile:` item that stands for several.
    private mutating func decodeRuleItem(_ node: Node, index: Int, at path: ConfigPath) -> [PolicyRule]? {
        if case .mapping(let mapping) = node, mapping.keys.contains(where: { $0.string == "profile" }) {
            guard let fields = self.fields(of: node, at: path, known: Self.profileItemKeys, required: ["profile"]),
                let profileNode = fields["profile"]
            else { return nil }
            // `except_sources` applies to every rule of the profile (the other DCs for
            // `block-dcsync`).
            var exceptSources: [IPNetwork] = []
            var valid = true
            if let node = fields["except_sources"] {
                if let networks = self.networks(node, at: path.key("except_sources"), allowingEmpty: true) {
                    exceptSources = networks
                } else {
                    valid = false
                }
            }
            guard let name = self.string(profileNode, at: path.key("profile"), what: "a profile name") else {
                return nil
            }
            switch PolicyProfiles.expand(name, index: index, exceptSources: exceptSources) {
            case .success(let rules):
                return valid ? rules : nil
            case .failure(let failure):
                self.report(failure.message, at: path.key("profile"), node: profileNode)
                return nil
            }
        }
        guard
            let fields = self.fields(
                of: node,
                at: path,
                known: Self.ruleKeys,
                required: ["action"],
                what: "a rule (a mapping with action and conditions)"
            )
        else { return nil }

        var valid = fields["action"] != nil
        var rule = PolicyRule(action: .deny, origin: RuleOrigin(index: index))
        if let node = fields["action"] {
            if let action = self.action(node, at: path.key("action")) { rule.action = action } else { valid = false }
        }
        if let node = fields["interfaces"] {
            if let interfaces = self.interfaces(node, at: path.key("interfaces")) {
                rule.interfaces = interfaces
            } else {
                valid = false
            }
        }
        if let node = fields["opnums"] {
            if let ranges = self.opnums(node, at: path.key("opnums")) {
                rule.opnums = OpnumSet(ranges)
            } else {
                valid = false
            }
        }
        if let node = fields["sources"] {
            if let networks = self.networks(node, at: path.key("sources"), allowingEmpty: false) {
                rule.sources = networks
            } else {
                valid = false
            }
        }
        if let node = fields["except_sources"] {
            if let networks = self.networks(node, at: path.key("except_sources"), allowingEmpty: true) {
                rule.exceptSources = networks
            } else {
                valid = false
            }
        }
        if let node = fields["min_auth_level"] {
            if let level = self.authLevel(node, at: path.key("min_auth_level")) {
                rule.minimumAuthLevel = level
            } else {
                valid = false
            }
        }
        if let node = fields["clsids"] {
            if let classes = self.classIDs(node, at: path.key("clsids")) {
                rule.classIDs = classes
            } else {
                valid = false
            }
        }
        if let node = fields["sealed_activation"] {
            if fields["clsids"] == nil {
                self.report(
                    "sealed_activation applies only to a rule with clsids (it says what to do when the CLSID of an activation cannot be read)",
                    at: path.key("sealed_activation"),
                    node: node
                )
                valid = false
            } else if let action = self.action(node, at: path.key("sealed_activation")) {
                rule.sealedActivation = action
            } else {
                valid = false
            }
        }
        return valid ? [rule] : nil
    }

    /// `interfaces:` catalog names, UUIDs, or `UUID@MAJOR.MINOR`.
    private mutating func interfaces(_ node: Node, at path: ConfigPath) -> [InterfaceMatcher]? {
        guard let items = self.list(node, at: path, allowingSingle: true, what: "a list of interfaces") else {
            return nil
        }
        guard !items.isEmpty else {
            self.report(
                "an empty list matches no interface; leave \"interfaces\" out to match any interface",
                at: path,
                node: node
            )
            return nil
        }
        var result: [InterfaceMatcher] = []
        var valid = true
        for item in items {
            guard let text = self.string(item.node, at: item.path, what: "an interface name or UUID") else {
                valid = false
                continue
            }
            guard let matcher = InterfaceMatcher(parsing: text) else {
                self.report(Self.unknownInterfaceMessage(text), at: item.path, node: item.node)
                valid = false
                continue
            }
            result.append(matcher)
        }
        return valid ? result : nil
    }

    /// `clsids:` class catalog names or CLSIDs (braces allowed).
    private mutating func classIDs(_ node: Node, at path: ConfigPath) -> [ClassIDMatcher]? {
        guard let items = self.list(node, at: path, allowingSingle: true, what: "a list of COM classes") else {
            return nil
        }
        guard !items.isEmpty else {
            self.report(
                "an empty list matches no activation; leave \"clsids\" out to match any call",
                at: path,
                node: node
            )
            return nil
        }
        var result: [ClassIDMatcher] = []
        var valid = true
        for item in items {
            guard let text = self.string(item.node, at: item.path, what: "a class name or CLSID") else {
                valid = false
                continue
            }
            guard let matcher = ClassIDMatcher(parsing: text) else {
                self.report(Self.unknownClassMessage(text), at: item.path, node: item.node)
                valid = false
                continue
            }
            result.append(matcher)
        }
        return valid ? result : nil
    }

    static func unknownClassMessage(_ text: String) -> String {
        let forms = "a class catalog name or a CLSID"
        if text.count >= 32 && text.filter({ $0 == "-" }).count >= 3 {
            return "\"\(text)\" is not a CLSID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, braces allowed)"
        }
        let names = ClassCatalog.all.map(\.name)
        if let hint = Suggestions.didYouMean(text, among: names, matchingSubstrings: true) {
            return "unknown COM class \"\(text)\"; \(hint) (\(forms))"
        }
        return "unknown COM class \"\(text)\" (known: \(names.joined(separator: ", ")); or write its CLSID)"
    }

    static func unknownInterfaceMessage(_ text: String) -> String {
        let forms = "a catalog name, a UUID, or UUID@MAJOR.MINOR"
        // Something UUID-shaped is a malformed UUID, not a misspelt name.
        if text.contains("@") || (text.count >= 32 && text.filter({ $0 == "-" }).count >= 3) {
            return
                "\"\(text)\" is not an interface UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, optionally @MAJOR.MINOR)"
        }
        let names = InterfaceCatalog.all.map(\.name)
        if let hint = Suggestions.didYouMean(text, among: names, matchingSubstrings: true) {
            return "unknown interface \"\(text)\"; \(hint) (\(forms))"
        }
        return "unknown interface \"\(text)\" (not in the interface catalog; use \(forms))"
    }

    /// `opnums:` numbers and `LOW-HIGH` ranges, 0-65535.
    private mutating func opnums(_ node: Node, at path: ConfigPath) -> [ClosedRange<UInt16>]? {
        guard let items = self.list(node, at: path, allowingSingle: true, what: "a list of opnums") else { return nil }
        guard !items.isEmpty else {
            self.report("an empty list matches no operation; leave \"opnums\" out to match any", at: path, node: node)
            return nil
        }
        var result: [ClosedRange<UInt16>] = []
        var valid = true
        for item in items {
            guard let text = self.string(item.node, at: item.path, what: "an opnum or LOW-HIGH range") else {
                valid = false
                continue
            }
            if let range = OpnumSet.parseRange(text) {
                result.append(range)
            } else {
                self.report(Self.badOpnumMessage(text), at: item.path, node: item.node)
                valid = false
            }
        }
        return valid ? result : nil
    }

    static func badOpnumMessage(_ text: String) -> String {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingASCIISpaces[...] }
        let numbers = parts.map { ValueParsers.decimal($0) }
        if !numbers.isEmpty, numbers.count <= 2, numbers.allSatisfy({ $0 != nil }) {
            let values = numbers.compactMap { $0 }
            if values.contains(where: { $0 > 65535 }) {
                return "\(text) is out of range (opnums are 0-65535)"
            }
            if values.count == 2, values[0] > values[1] {
                return "\"\(text)\" is a reversed range (write \(values[1])-\(values[0]))"
            }
        }
        if let value = ValueParsers.signedDecimal(text), value < 0 {
            return "\(text) is out of range (opnums are 0-65535)"
        }
        return "\"\(text)\" is not an opnum or range (N or LOW-HIGH, 0-65535)"
    }

    /// `sources:` / `except_sources:` CIDR blocks.
    private mutating func networks(_ node: Node, at path: ConfigPath, allowingEmpty: Bool) -> [IPNetwork]? {
        guard let items = self.list(node, at: path, allowingSingle: true, what: "a list of networks") else {
            return nil
        }
        if items.isEmpty, !allowingEmpty {
            self.report(
                "an empty list matches no client; leave \"sources\" out to match any client",
                at: path,
                node: node
            )
            return nil
        }
        var result: [IPNetwork] = []
        var valid = true
        for item in items {
            guard let text = self.string(item.node, at: item.path, what: "a network such as 10.0.0.0/8") else {
                valid = false
                continue
            }
            if let network = IPNetwork(text) {
                result.append(network)
            } else {
                self.report(Self.badNetworkMessage(text), at: item.path, node: item.node)
                valid = false
            }
        }
        return valid ? result : nil
    }

    static func badNetworkMessage(_ text: String) -> String {
        let shape = "ADDRESS/PREFIX, such as 10.0.0.0/8 or fd00::/8"
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(parts[0]) else {
            return "\"\(text)\" is not an IP network (\(shape))"
        }
        let maximum: Int
        switch address {
        case .v4: maximum = 32
        case .v6: maximum = 128
        }
        guard parts.count == 2, let prefix = ValueParsers.decimal(parts[1]), prefix <= maximum else {
            return "\"\(text)\" is not an IP network: the prefix length must be 0-\(maximum) (\(shape))"
        }
        let network = ValueParsers.text(of: Self.masked(address, prefix))
        return "\"\(text)\" has host bits set; did you mean \(network)/\(prefix)?"
    }

    private static func masked(_ address: IPAddress, _ prefix: Int) -> IPAddress {
        switch address {
        case .v4(let value):
            return .v4(prefix == 0 ? 0 : value & ~UInt32(0) << UInt32(32 - prefix))
        case .v6(let high, let low):
            let highMask: UInt64 = prefix >= 64 ? ~0 : (prefix == 0 ? 0 : ~UInt64(0) << UInt64(64 - prefix))
            let lowMask: UInt64 = prefix <= 64 ? 0 : (prefix == 128 ? ~0 : ~UInt64(0) << UInt64(128 - prefix))
            return .v6(high & highMask, low & lowMask)
        }
    }

    private mutating func authLevel(_ node: Node, at path: ConfigPath) -> AuthLevel? {
        let names = Self.authLevels.map(\.name)
        guard let text = self.string(node, at: path, what: "an auth level") else { return nil }
        if let entry = Self.authLevels.first(where: { $0.name == text }) { return entry.level }
        var message = "unknown auth level \"\(text)\""
        if let hint = Suggestions.didYouMean(text, among: names) { message += "; \(hint)" }
        message += " (\(Suggestions.list(names, conjunction: "or")))"
        self.report(message, at: path, node: node)
        return nil
    }
}

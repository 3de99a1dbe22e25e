public import RPCWire

/// What a rule or a policy's default does.
public enum PolicyAction: String, Hashable, Sendable, CaseIterable {
    case allow
    case deny
    /// Allow, and log the decision as notable.
    case audit

    public var permits: Bool { self != .deny }
}

/// Which interfaces a rule names: a UUID and, optionally, the version.
///
/// Catalog names match the UUID and major version (minor versions are compatible within a major
/// version, C706 6.2.1); `uuid@major.minor` matches exactly that version; a bare UUID any version.
public struct InterfaceMatcher: Hashable, Sendable, CustomStringConvertible {
    public var uuid: DCEUUID
    public var majorVersion: UInt16?
    public var minorVersion: UInt16?
    /// How the user wrote it, for logs and `explain`.
    public var label: String

    public init(uuid: DCEUUID, majorVersion: UInt16? = nil, minorVersion: UInt16? = nil, label: String) {
        self.uuid = uuid
        self.majorVersion = majorVersion
        self.minorVersion = minorVersion
        self.label = label
    }

    /// Parses a catalog name, a UUID, or `UUID@major.minor`. `nil` when it is none of these.
    public init?(parsing text: String) {
        if let entry = InterfaceCatalog.named(text) {
            self.init(uuid: entry.syntax.uuid, majorVersion: entry.syntax.majorVersion, label: entry.name)
            return
        }
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count <= 2, let uuid = DCEUUID(parts[0]) else { return nil }
        guard parts.count == 2 else {
            self.init(uuid: uuid, label: text)
            return
        }
        let version = parts[1].split(separator: ".", omittingEmptySubsequences: false)
        guard version.count == 2, let major = UInt16(version[0]), let minor = UInt16(version[1]) else { return nil }
        self.init(uuid: uuid, majorVersion: major, minorVersion: minor, label: text)
    }

    public func matches(_ syntax: SyntaxID) -> Bool {
        syntax.uuid == self.uuid && (self.majorVersion.map { $0 == syntax.majorVersion } ?? true)
            && (self.minorVersion.map { $0 == syntax.minorVersion } ?? true)
    }

    public var description: String { self.label }
}

/// A set of operation numbers, from ranges such as `[0, 4-9, 12]`.
public struct OpnumSet: Hashable, Sendable, CustomStringConvertible {
    public var ranges: [ClosedRange<UInt16>]

    public init(_ ranges: [ClosedRange<UInt16>]) { self.ranges = ranges }

    /// Parses `7` or `4-9`. `nil` for anything else, reversed ranges included.
    public static func parseRange(_ text: String) -> ClosedRange<UInt16>? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingSpaces }
        guard parts.count == 1 || parts.count == 2, let low = UInt16(parts[0]) else { return nil }
        guard parts.count == 2 else { return low...low }
        guard let high = UInt16(parts[1]), low <= high else { return nil }
        return low...high
    }

    public func contains(_ opnum: UInt16) -> Bool { self.ranges.contains { $0.contains(opnum) } }

    public var description: String {
        "["
            + self.ranges.map {
                $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)"
            }
            .joined(separator: ", ") + "]"
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var result = self
        while result.first == " " { result.removeFirst() }
        while result.last == " " { result.removeLast() }
        return result
    }
}

/// Where a rule came from, for audit lines and `explain`.
public struct RuleOrigin: Hashable, Sendable, CustomStringConvertible {
    /// Zero-based index in the policy's `rules` list as the user wrote it.
    public var index: Int
    /// The built-in profile the rule was expanded from, if any.
    public var profile: String?

    public init(index: Int, profile: String? = nil) {
        self.index = index
        self.profile = profile
    }

    public var description: String {
        if let profile { return "rule \(self.index) (profile \(profile))" }
        return "rule \(self.index)"
    }
}

/// One rule. Every condition that is set must hold for the rule to match (first match wins).
public struct PolicyRule: Hashable, Sendable {
    public var action: PolicyAction
    /// `nil`: any interface.
    public var interfaces: [InterfaceMatcher]?
    /// `nil`: any operation. A rule with opnums decides calls; at bind time a `deny` rule with
    /// opnums does not refuse the bind (other operations of the interface may be allowed).
    public var opnums: OpnumSet?
    /// `nil`: any client. Otherwise the client address must be in one of the networks.
    public var sources: [IPNetwork]?
    /// Clients in these networks never match (used by profiles such as `block-dcsync`).
    public var exceptSources: [IPNetwork]
    /// The rule matches only when the connection's auth level is at least this.
    public var minimumAuthLevel: AuthLevel?
    /// `nil`: any call. Otherwise the rule decides only DCOM activation requests
    /// (RemoteCreateInstance, RemoteGetClassObject, RemoteActivation) that create one of these
    /// classes. Like `opnums`, a `deny` rule with classes does not refuse the bind.
    public var classIDs: [ClassIDMatcher]?
    /// What a rule with ``classIDs`` does with an activation whose CLSID cannot be read (sealed
    /// at privacy level). `nil` means ``defaultSealedActivation``.
    public var sealedActivation: PolicyAction?
    public var origin: RuleOrigin

    /// `audit`: a sealed activation passes and is logged as notable. The gateway cannot tell which
    /// class it creates; refusing would break every client that seals its activations (impacket
    /// does by default), and allowing silently would hide exactly the activations the rule was
    /// written for. Write `sealed_activation: deny` for a strict allow list.
    public static let defaultSealedActivation = PolicyAction.audit

    public init(
        action: PolicyAction,
        interfaces: [InterfaceMatcher]? = nil,
        opnums: OpnumSet? = nil,
        sources: [IPNetwork]? = nil,
        exceptSources: [IPNetwork] = [],
        minimumAuthLevel: AuthLevel? = nil,
        classIDs: [ClassIDMatcher]? = nil,
        sealedActivation: PolicyAction? = nil,
        origin: RuleOrigin
    ) {
        self.action = action
        self.interfaces = interfaces
        self.opnums = opnums
        self.sources = sources
        self.exceptSources = exceptSources
        self.minimumAuthLevel = minimumAuthLevel
        self.classIDs = classIDs
        self.sealedActivation = sealedActivation
        self.origin = origin
    }
}

/// What policy is asked: a bind (no opnum) or a call (with opnum).
public struct PolicyQuery: Hashable, Sendable {
    public var interface: SyntaxID
    public var opnum: UInt16?
    public var client: IPAddress
    /// The auth level of the connection's security context; `.none` when unauthenticated.
    public var authLevel: AuthLevel
    /// For a DCOM activation request: the class it creates, or that it is sealed. `nil` for a
    /// bind or any other call.
    public var activation: ActivationClass?

    public init(
        interface: SyntaxID,
        opnum: UInt16? = nil,
        client: IPAddress,
        authLevel: AuthLevel = .none,
        activation: ActivationClass? = nil
    ) {
        self.interface = interface
        self.opnum = opnum
        self.client = client
        self.authLevel = authLevel
        self.activation = activation
    }
}

/// The answer, with the rule that made it (`nil`: the policy's default).
public struct PolicyDecision: Hashable, Sendable, CustomStringConvertible {
    public var action: PolicyAction
    public var origin: RuleOrigin?

    public init(action: PolicyAction, origin: RuleOrigin?) {
        self.action = action
        self.origin = origin
    }

    public var permits: Bool { self.action.permits }

    public var description: String {
        "\(self.action) by \(self.origin.map { $0.description } ?? "default")"
    }
}

/// A named, ordered rule list with a default. Evaluation is a pure function of the query.
public struct Policy: Hashable, Sendable {
    public var name: String
    public var defaultAction: PolicyAction
    public var rules: [PolicyRule] {
        didSet { self.compiled = CompiledRules(self.rules) }
    }
    /// ``rules`` prepared for ``evaluate(_:)`` (see ``CompiledRules``); rebuilt when they change.
    private var compiled: CompiledRules

    public init(name: String, defaultAction: PolicyAction, rules: [PolicyRule]) {
        self.name = name
        self.defaultAction = defaultAction
        self.rules = rules
        self.compiled = CompiledRules(rules)
    }

    public static func == (lhs: Policy, rhs: Policy) -> Bool {
        lhs.name == rhs.name && lhs.defaultAction == rhs.defaultAction && lhs.rules == rhs.rules
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.name)
        hasher.combine(self.defaultAction)
        hasher.combine(self.rules)
    }

    /// First matching rule wins; the default applies when none matches.
    ///
    /// Only the rules that can match the query's interface are tried, in their order: those that
    /// name its UUID and those that name no interface. Every other rule fails its interface
    /// condition whatever the rest of the query says, so the decision is the full walk's
    /// (``explain(_:)`` walks every rule; the tests compare the two).
    public func evaluate(_ query: PolicyQuery) -> PolicyDecision {
        let compiled = self.compiled
        let named = compiled.byInterface[query.interface.uuid] ?? []
        let anyInterface = compiled.anyInterface
        var nextNamed = 0
        var nextAny = 0
        while nextNamed < named.count || nextAny < anyInterface.count {
            let index: Int
            if nextAny == anyInterface.count || (nextNamed < named.count && named[nextNamed] < anyInterface[nextAny]) {
                index = named[nextNamed]
                nextNamed += 1
            } else {
                index = anyInterface[nextAny]
                nextAny += 1
            }
            let box = compiled.boxes[index]
            if let action = Self.action(of: box, for: query) {
                return PolicyDecision(action: action, origin: box.rule.origin)
            }
        }
        return PolicyDecision(action: self.defaultAction, origin: nil)
    }

    /// The decision with the rule that made it, for `rpcgate explain`. Same result as
    /// ``evaluate(_:)``.
    public func explain(_ query: PolicyQuery) -> PolicyExplanation {
        var deniedOperations: [PolicyRule] = []
        for rule in self.rules {
            if let action = Self.action(of: rule, for: query) {
                return PolicyExplanation(
                    decision: PolicyDecision(action: action, origin: rule.origin),
                    rule: rule,
                    deniedOperations: deniedOperations
                )
            }
            if query.opnum == nil, rule.action == .deny, rule.opnums != nil || rule.classIDs != nil,
                Self.conditionsOtherThanOpnums(of: rule, hold: query)
            {
                deniedOperations.append(rule)
            }
        }
        return PolicyExplanation(
            decision: PolicyDecision(action: self.defaultAction, origin: nil),
            rule: nil,
            deniedOperations: deniedOperations
        )
    }

    /// The action `rule` takes on `query`, or `nil` when it does not match.
    private static func action(of rule: some RuleConditions, for query: PolicyQuery) -> PolicyAction? {
        if let opnums = rule.opnums {
            if let opnum = query.opnum {
                guard opnums.contains(opnum) else { return nil }
            } else if rule.action == .deny {
                // A bind: a deny of some operations leaves the others reachable, so it does not
                // decide the bind. The calls are checked one by one.
                return nil
            }
        }
        var action = rule.action
        if let classIDs = rule.classIDs {
            if query.opnum == nil {
                // A bind: like a deny of some operations, a deny of some classes leaves the
                // interface's other activations reachable.
                guard rule.action != .deny else { return nil }
            } else {
                switch query.activation {
                case nil:
                    return nil
                case .known(let classID):
                    guard classIDs.contains(where: { $0.classID == classID }) else { return nil }
                case .sealed, .unreadable:
                    action = rule.sealedActivation ?? PolicyRule.defaultSealedActivation
                }
            }
        }
        return self.conditionsOtherThanOpnums(of: rule, hold: query) ? action : nil
    }

    private static func conditionsOtherThanOpnums(of rule: some RuleConditions, hold query: PolicyQuery) -> Bool {
        if let interfaces = rule.interfaces, !interfaces.contains(where: { $0.matches(query.interface) }) {
            return false
        }
        if let sources = rule.sources, !sources.contains(where: { $0.contains(query.client) }) {
            return false
        }
        if rule.exceptSources.contains(where: { $0.contains(query.client) }) {
            return false
        }
        if let minimum = rule.minimumAuthLevel, query.authLevel < minimum {
            return false
        }
        return true
    }

    /// Whether the gateway must check each request, not only binds: some rule depends on the
    /// operation number, or on the auth level, which each request's `sec_trailer` states anew (a
    /// client can alter the security context after the bind); or some call may be decided
    /// `audit` (the default, or a rule), and every audited call is recorded: a learning policy
    /// (`default: audit`) records each opnum its clients call.
    public var inspectsOperations: Bool {
        self.defaultAction == .audit
            || self.rules.contains {
                $0.opnums != nil || $0.minimumAuthLevel != nil || $0.classIDs != nil || $0.action == .audit
            }
    }
}

/// Why a query got its decision (``Policy/explain(_:)``).
public struct PolicyExplanation: Hashable, Sendable {
    public var decision: PolicyDecision
    /// The rule that decided; `nil` when the policy's default applied.
    public var rule: PolicyRule?
    /// For a bind: the deny rules before the deciding one that are restricted to some operations
    /// of this interface and otherwise apply to this client. They do not refuse the bind; they
    /// refuse those calls. Empty for a call.
    public var deniedOperations: [PolicyRule]

    public init(decision: PolicyDecision, rule: PolicyRule?, deniedOperations: [PolicyRule] = []) {
        self.decision = decision
        self.rule = rule
        self.deniedOperations = deniedOperations
    }
}

extension PolicyRule {
    /// The rule as it would be written in a `rules` list, one line per key, for `explain` and
    /// logs. A rule expanded from a profile shows the conditions the profile stands for.
    public var yamlLines: [String] {
        var lines = ["- action: \(self.action.rawValue)"]
        if let interfaces = self.interfaces {
            lines.append("  interfaces: [\(interfaces.map(\.label).joined(separator: ", "))]")
        }
        if let opnums = self.opnums {
            lines.append("  opnums: \(opnums)")
        }
        if let sources = self.sources {
            lines.append("  sources: \(Self.flowList(sources))")
        }
        if !self.exceptSources.isEmpty {
            lines.append("  except_sources: \(Self.flowList(self.exceptSources))")
        }
        if let level = self.minimumAuthLevel {
            lines.append("  min_auth_level: \(level)")
        }
        if let classIDs = self.classIDs {
            lines.append("  clsids: [\(classIDs.map(\.label).joined(separator: ", "))]")
            lines.append("  sealed_activation: \((self.sealedActivation ?? Self.defaultSealedActivation).rawValue)")
        }
        return lines
    }

    /// `[10.0.0.0/8, "fd00::/8"]`: IPv6 networks quoted, as YAML flow lists need.
    private static func flowList(_ networks: [IPNetwork]) -> String {
        "[" + networks.map { $0.description.contains(":") ? "\"\($0)\"" : "\($0)" }.joined(separator: ", ") + "]"
    }
}

/// The fields the matching reads: a ``PolicyRule`` itself (for ``Policy/explain(_:)``) or its
/// ``RuleBox`` (for ``Policy/evaluate(_:)``); the matching is written once for both.
private protocol RuleConditions {
    var action: PolicyAction { get }
    var interfaces: [InterfaceMatcher]? { get }
    var opnums: OpnumSet? { get }
    var sources: [IPNetwork]? { get }
    var exceptSources: [IPNetwork] { get }
    var minimumAuthLevel: AuthLevel? { get }
    var classIDs: [ClassIDMatcher]? { get }
    var sealedActivation: PolicyAction? { get }
}

extension PolicyRule: RuleConditions {}

/// A policy's rules as ``Policy/evaluate(_:)`` walks them, built once per policy (not per
/// connection or request).
///
/// - Each rule is held by a final class (``RuleBox``): a rule passed on from an array (or from a
///   class's property) is copied whole, its four arrays, opnum set and origin retained and
///   released, about 550 instructions per rule per request in the callgrind profile of small
///   calls, most of a request's cost with a 20-rule policy. Through the box each condition reads
///   only the field it checks.
/// - The rules that name interfaces are indexed by UUID, so a request is checked against the rules
///   for its interface and the rules for any interface, not against all of them.
private final class CompiledRules: Sendable {
    let boxes: [RuleBox]
    /// Indices into ``boxes`` (ascending) of the rules naming each interface UUID.
    let byInterface: [DCEUUID: [Int]]
    /// Indices (ascending) of the rules without an interface condition.
    let anyInterface: [Int]

    init(_ rules: [PolicyRule]) {
        self.boxes = rules.map(RuleBox.init)
        var byInterface: [DCEUUID: [Int]] = [:]
        var anyInterface: [Int] = []
        for (index, rule) in rules.enumerated() {
            guard let interfaces = rule.interfaces else {
                anyInterface.append(index)
                continue
            }
            for uuid in Set(interfaces.map(\.uuid)) {
                byInterface[uuid, default: []].append(index)
            }
        }
        self.byInterface = byInterface
        self.anyInterface = anyInterface
    }
}

/// One rule of a ``Policy``, by reference (see ``CompiledRules``).
private final class RuleBox: Sendable, RuleConditions {
    let rule: PolicyRule

    init(_ rule: PolicyRule) {
        self.rule = rule
    }

    var action: PolicyAction { self.rule.action }
    var interfaces: [InterfaceMatcher]? { self.rule.interfaces }
    var opnums: OpnumSet? { self.rule.opnums }
    var sources: [IPNetwork]? { self.rule.sources }
    var exceptSources: [IPNetwork] { self.rule.exceptSources }
    var minimumAuthLevel: AuthLevel? { self.rule.minimumAuthLevel }
    var classIDs: [ClassIDMatcher]? { self.rule.classIDs }
    var sealedActivation: PolicyAction? { self.rule.sealedActivation }
}

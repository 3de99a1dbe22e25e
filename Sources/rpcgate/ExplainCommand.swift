import ArgumentParser
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire

/// `rpcgate explain`: what a route's policy decides for one bind or call, and which rule decided.
///
/// Exit status: 0 when the bind or call is allowed (or audited), 3 when it is denied, 2 when the
/// configuration has problems, 64 for bad arguments.
struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what the policy decides for a bind or call, and the rule that decides it.",
        discussion: """
            Without --opnum, explains the bind (alter_context) of the interface; with --opnum, a \
            call on it. Exit status: 0 allowed or audited, 3 denied, 2 configuration problems, \
            64 bad arguments.
            """
    )

    /// Exit status for a denied bind or call.
    static let deniedExitCode: Int32 = 3

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String

    @Option(help: "The client address (IPv4 or IPv6).")
    var from: String

    @Option(help: "A catalog name (see `rpcgate interfaces`), a UUID, or UUID@MAJOR.MINOR.")
    var interface: String

    @Option(help: "The operation number of the call; leave it out to explain the bind.")
    var opnum: UInt16?

    @Option(help: "The auth level of the bind or request: none, connect, call, packet, integrity, privacy.")
    var authLevel: String = "none"

    @Option(help: "The route whose policy applies (needed when the configuration has several).")
    var route: String?

    @Option(
        help: "For a DCOM activation call: the class it creates (a class catalog name or CLSID), or `sealed`."
    )
    var clsid: String?

    func validate() throws {
        _ = try Self.client(self.from)
        _ = try Self.syntax(self.interface)
        _ = try Self.authLevel(self.authLevel)
        _ = try Self.activation(self.clsid)
        if self.clsid != nil, self.opnum == nil {
            throw ValidationError("--clsid needs --opnum: it describes an activation call")
        }
    }

    /// `--clsid`: a class catalog name, a CLSID, `sealed` or `unreadable`.
    static func activation(_ text: String?) throws -> ActivationClass? {
        guard let text else { return nil }
        switch text.lowercased() {
        case "sealed": return .sealed
        case "unreadable": return .unreadable
        default:
            guard let matcher = ClassIDMatcher(parsing: text) else {
                throw ValidationError(
                    "unknown COM class \"\(text)\" (\(ClassCatalog.all.map(\.name).joined(separator: ", ")), a CLSID, or sealed)"
                )
            }
            return .known(matcher.classID)
        }
    }

    func run() throws {
        let settings = try loadSettingsOrExit(self.config)
        let route: RouteSettings
        do {
            route = try Self.route(self.route, in: settings.routes)
        } catch let error as ValidationError {
            // Reported here: thrown out of `run`, ArgumentParser would print the root usage.
            printError("Error: \(error.message)")
            throw ExitCode.validationFailure
        }
        let query = PolicyQuery(
            interface: try Self.syntax(self.interface),
            opnum: self.opnum,
            client: try Self.client(self.from),
            authLevel: try Self.authLevel(self.authLevel),
            activation: try Self.activation(self.clsid)
        )
        let explanation = route.policy.explain(query)
        for line in Self.report(explanation, for: query, route: route) {
            print(line)
        }
        if !explanation.decision.permits {
            throw ExitCode(Self.deniedExitCode)
        }
    }

    // MARK: - Report

    static func report(_ explanation: PolicyExplanation, for query: PolicyQuery, route: RouteSettings) -> [String] {
        let policy = route.policy
        var lines = ["route \(route.name), policy \(policy.name) (default \(policy.defaultAction))"]
        let what = query.opnum.map { "call, opnum \($0) of" } ?? "bind of"
        lines.append(
            "\(what) \(self.describe(query.interface)) from \(query.client), auth level \(query.authLevel)"
        )
        if let activation = query.activation {
            lines.append("activation of class \(activation)")
        }
        lines.append("decision: \(explanation.decision.action)")
        if let rule = explanation.rule {
            lines.append("decided by \(rule.origin):")
            lines += rule.yamlLines.map { "  " + $0 }
            lines += self.profileNotes(for: rule, query: query).map { "  # " + $0 }
        } else {
            lines.append("decided by the default: no rule matched")
        }
        // Only worth saying when the bind goes through: the calls are then checked one by one.
        if explanation.decision.permits, !explanation.deniedOperations.isEmpty {
            lines.append("calls are checked one by one; earlier rules deny some operations of this interface:")
            for rule in explanation.deniedOperations {
                lines.append("  \(rule.origin): opnums \(rule.opnums.map { "\($0)" } ?? "[]")")
            }
        }
        switch (explanation.decision.action, query.opnum) {
        case (.deny, nil):
            lines.append(
                "effect: the bind is refused (bind_ack provider rejection, abstract syntax not supported); the interface never reaches the server"
            )
        case (.deny, .some):
            lines.append(
                "effect: the call gets a fault (status 0x5 ERROR_ACCESS_DENIED, did not execute) and never reaches the server; the connection stays usable unless the session is signed or sealed (level call and above), in which case it is closed after the fault"
            )
        case (.audit, _):
            lines.append("effect: forwarded and logged as audited")
        case (.allow, _):
            lines.append("effect: forwarded")
        }
        return lines
    }

    /// `drsuapi (e3514235-4b06-11d1-ab04-00c04fc2dcd2 v4.0)`.
    static func describe(_ syntax: SyntaxID) -> String {
        let version = "v\(syntax.majorVersion).\(syntax.minorVersion)"
        if let name = InterfaceCatalog.name(of: syntax) { return "\(name) (\(syntax.uuid) \(version))" }
        return "\(syntax.uuid) \(version)"
    }

    /// What a profile rule stands for: the operation's name, the specification and the purpose.
    static func profileNotes(for rule: PolicyRule, query: PolicyQuery) -> [String] {
        guard let name = rule.origin.profile, let profile = BuiltInProfiles.named(name),
            let entry = profile.entry(for: query.interface, opnum: query.opnum)
        else { return [] }
        let operation: String
        if let classes = entry.rule.classes {
            operation = "activations of \(classes.joined(separator: ", ")) only; the bind and other calls stay allowed"
        } else {
            operation = entry.operation.map { "opnum \($0.opnum): \($0.name)" } ?? "every operation, bind included"
        }
        return [operation, "\(entry.rule.specification): \(entry.rule.reason)"]
    }

    // MARK: - Arguments

    static func client(_ text: String) throws -> IPAddress {
        guard let address = IPAddress(text) else {
            throw ValidationError("--from: \"\(text)\" is not an IPv4 or IPv6 address")
        }
        return address
    }

    /// A catalog name gives the catalog's version; a UUID without a version must be in the catalog.
    static func syntax(_ text: String) throws -> SyntaxID {
        if let entry = InterfaceCatalog.named(text) { return entry.syntax }
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        if parts.count <= 2, let uuid = DCEUUID(parts[0]) {
            if parts.count == 1 {
                if let entry = InterfaceCatalog.all.first(where: { $0.syntax.uuid == uuid }) { return entry.syntax }
                throw ValidationError(
                    "--interface: \(text) is not in the interface catalog; give its version as UUID@MAJOR.MINOR"
                )
            }
            let version = parts[1].split(separator: ".", omittingEmptySubsequences: false)
            if version.count == 2, let major = UInt16(version[0]), let minor = UInt16(version[1]) {
                return SyntaxID(uuid: uuid, majorVersion: major, minorVersion: minor)
            }
        }
        var message = "--interface: \"\(text)\" is not a catalog name, a UUID, or UUID@MAJOR.MINOR"
        if let hint = Suggestions.didYouMean(text, among: InterfaceCatalog.all.map(\.name), matchingSubstrings: true) {
            message += "; \(hint)"
        }
        throw ValidationError(message + " (`rpcgate interfaces` lists the catalog)")
    }

    static let authLevels: [AuthLevel] = [.none, .connect, .call, .packet, .integrity, .privacy]

    static func authLevel(_ text: String) throws -> AuthLevel {
        if let level = self.authLevels.first(where: { $0.description == text }) { return level }
        let names = self.authLevels.map(\.description)
        throw ValidationError(
            "--auth-level: unknown auth level \"\(text)\" (\(Suggestions.list(names, conjunction: "or")))"
        )
    }

    static func route(_ name: String?, in routes: [RouteSettings]) throws -> RouteSettings {
        let names = routes.map(\.name)
        if let name {
            if let route = routes.first(where: { $0.name == name }) { return route }
            throw ValidationError(
                "--route: no route \"\(name)\" (routes: \(Suggestions.list(names, conjunction: "and")))"
            )
        }
        guard routes.count == 1, let only = routes.first else {
            throw ValidationError(
                "the configuration has \(routes.count) routes; choose one with --route (\(Suggestions.list(names, conjunction: "or")))"
            )
        }
        return only
    }
}

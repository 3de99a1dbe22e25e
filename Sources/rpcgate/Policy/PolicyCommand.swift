import ArgumentParser
import Foundation
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire

/// `rpcgate policy suggest` and `rpcgate policy test`: policy from evidence (docs/POLICY.md,
/// "Learning").
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Learn a policy from audit logs, or dry-run a policy against them.",
        subcommands: [Suggest.self, Test.self]
    )
}

/// Options both subcommands take to read audit records.
struct AuditSourceOptions: ParsableArguments {
    @Argument(help: "Audit files (JSON lines; rotated, gzip/xz/bzip2/zstd-compressed), or - for standard input.")
    var audit: [String]

    @Option(help: "Only records at or after this time (RFC 3339, e.g. 2026-01-31T08:00:00Z, or a date).")
    var since: String?

    @Option(help: "Only records before this time.")
    var until: String?

    func validate() throws {
        guard !self.audit.isEmpty else {
            throw ValidationError("give at least one audit file, or - for standard input")
        }
        for (name, value) in [("since", self.since), ("until", self.until)] {
            if let value, AuditTime.parse(value) == nil {
                throw ValidationError("--\(name) \(value) is not an RFC 3339 time or a date")
            }
        }
    }

    func reader() -> AuditReader {
        AuditReader(since: self.since.flatMap(AuditTime.parse), until: self.until.flatMap(AuditTime.parse))
    }
}

extension PolicyCommand {
    struct Suggest: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the configuration with each route's policy learned from audit records.",
            discussion: """
                Each policy a route uses becomes: the built-in profiles, then one allow rule per \
                interface the route's clients bound or called (while the gateway let them), limited \
                to the client networks seen, and default deny. Comments give counts and first/last \
                seen. Everything else in the file is printed as written. The output loads with \
                `rpcgate check-config`; run `rpcgate policy test` with it before enforcing it.
                """
        )

        enum Format: String, ExpressibleByArgument, CaseIterable {
            case yaml
            case table
        }

        @Option(name: .shortAndLong, help: "The configuration whose routes were audited.")
        var config: String

        @OptionGroup var sources: AuditSourceOptions

        @Option(help: "Aggregate IPv4 clients to networks of this prefix length (0-32).")
        var prefix: Int = 24

        @Option(help: "Aggregate IPv6 clients to networks of this prefix length (0-128).")
        var prefix6: Int = 64

        @Flag(help: "List the opnums seen in each allow rule (calls are audited only under an audit action).")
        var opnums = false

        @Option(help: "Comma-separated built-in profiles to put first (default: all), or none.")
        var profiles: String?

        @Option(help: "yaml: the configuration to load; table: a summary for a terminal.")
        var format: Format = .yaml

        func validate() throws {
            guard (0...32).contains(self.prefix) else { throw ValidationError("--prefix must be 0-32") }
            guard (0...128).contains(self.prefix6) else { throw ValidationError("--prefix6 must be 0-128") }
            _ = try self.chosenProfiles()
        }

        func chosenProfiles() throws -> [PolicyProfile] {
            guard let profiles else { return BuiltInProfiles.all }
            if profiles.lowercased() == "none" { return [] }
            return try profiles.split(separator: ",").map { name in
                guard let profile = BuiltInProfiles.named(name.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError(
                        "unknown profile \(name); known: \(BuiltInProfiles.names.joined(separator: ", "))"
                    )
                }
                return profile
            }
        }

        func run() throws {
            let settings = try loadSettingsOrExit(self.config)
            let text = try String(contentsOfFile: self.config, encoding: .utf8)
            var options = PolicyLearner.Options()
            options.prefixLength = self.prefix
            options.prefixLengthIPv6 = self.prefix6
            options.includeOpnums = self.opnums
            options.profiles = try self.chosenProfiles()
            var learner = PolicyLearner(options: options, routes: settings.routes.map { ($0.name, $0.policy.name) })
            var reader = self.sources.reader()
            do {
                try reader.read(self.sources.audit) { learner.add($0) }
            } catch let error as AuditInputError {
                printError("Error: \(error)")
                throw ExitCode(2)
            }
            let learned = learner.learned.values.sorted { $0.policy < $1.policy }
            let conflicts = Dictionary(
                uniqueKeysWithValues: learned.map { ($0.policy, learner.conflictLines(for: $0.policy)) }
            )
            switch self.format {
            case .table:
                for line in Self.table(learned) { print(line) }
            case .yaml:
                let splice: ConfigPolicySplice
                do {
                    splice = try ConfigPolicySplice(text: text)
                } catch {
                    printError("Error: \(self.config): \(error)")
                    throw ExitCode(2)
                }
                var replacements: [String: [String]] = [:]
                for policy in learned {
                    replacements[policy.policy] = learner.yaml(
                        for: policy,
                        indent: splice.indent,
                        conflicts: conflicts[policy.policy] ?? []
                    )
                }
                let header = [
                    "Policies of the routes learned by `rpcgate policy suggest` from \(self.sources.audit.joined(separator: " "))"
                        + " (sources aggregated to /\(self.prefix), IPv6 /\(self.prefix6)\(self.opnums ? ", opnums listed" : "")).",
                    "Check them with `rpcgate policy test --config FILE AUDIT...` before enforcing.",
                ]
                print(
                    splice.text(replacing: replacements, header: header),
                    terminator: text.hasSuffix("\n") ? "" : "\n"
                )
            }
            for (route, count) in learner.unknownRoutes.sorted(by: { $0.key < $1.key }) {
                printError("note: \(count) records of route \(route), which \(self.config) does not have, were ignored")
            }
            if reader.skippedLines > 0 { printError("note: \(reader.skippedLines) lines were not audit records") }
            for policy in learned where policy.usage.isEmpty {
                printError(
                    "warning: policy \(policy.policy): no record of route \(policy.routes.joined(separator: ", ")) was learned; the suggestion denies everything there"
                )
            }
            for (policy, lines) in conflicts.sorted(by: { $0.key < $1.key }) where !lines.isEmpty {
                for line in lines { printError("warning: policy \(policy): \(line)") }
            }
        }

        static func table(_ learned: [PolicyLearner.Learned]) -> [String] {
            var rows: [[String]] = [
                [
                    "ROUTES", "POLICY", "INTERFACE", "UUID@VERSION", "BINDS", "CALLS", "SOURCES", "NETWORKS", "OPNUMS",
                    "FIRST SEEN", "LAST SEEN",
                ]
            ]
            for policy in learned {
                for usage in policy.interfaces {
                    let opnums = usage.opnums.sorted()
                    rows.append([
                        policy.routes.joined(separator: ","), policy.policy, usage.label,
                        "\(usage.interface.uuid)@\(usage.interface.majorVersion).\(usage.interface.minorVersion)",
                        "\(usage.binds)", "\(usage.calls)", "\(usage.sources.count)",
                        PolicyLearner.sortedNetworks(usage.networks).map(\.description).joined(separator: ","),
                        opnums.isEmpty
                            ? "-"
                            : opnums.prefix(12).map(String.init).joined(separator: ",")
                                + (opnums.count > 12 ? ",..." : ""),
                        AuditTime.text(usage.first), AuditTime.text(usage.last),
                    ])
                }
            }
            let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
            return rows.map { row in
                row.enumerated().map { column, cell in
                    column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                }.joined(separator: "  ")
            }
        }
    }

    struct Test: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Dry-run a configuration's policies against audit records; report what they would deny.",
            discussion: """
                Every bind and call record of a route is asked of the candidate configuration's \
                policy for that route, as the gateway would ask it. Denials are grouped by \
                interface, opnum and source, with counts and examples. Exit status: 0 nothing \
                would be denied, 1 something would, 2 configuration or input problems.
                """
        )

        @Option(name: .shortAndLong, help: "The candidate configuration.")
        var config: String

        @OptionGroup var sources: AuditSourceOptions

        func run() throws {
            let settings = try loadSettingsOrExit(self.config)
            var replay = PolicyReplay(
                policies: Dictionary(
                    settings.routes.map { ($0.name, $0.policy) },
                    uniquingKeysWith: { first, _ in first }
                )
            )
            var reader = self.sources.reader()
            do {
                try reader.read(self.sources.audit) { replay.add($0) }
            } catch let error as AuditInputError {
                printError("Error: \(error)")
                throw ExitCode(2)
            }
            for line in replay.report() { print(line) }
            if reader.skippedLines > 0 { printError("note: \(reader.skippedLines) lines were not audit records") }
            if replay.denied > 0 { throw ExitCode(1) }
        }
    }
}

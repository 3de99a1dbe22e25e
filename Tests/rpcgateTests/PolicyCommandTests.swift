import Foundation
import NIOCore
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

@testable import rpcgate

/// `policy suggest` and `policy test` on audit lines written by the gateway's own `AuditRecord`.
@Suite("Policy from evidence")
struct PolicyCommandTests {
    static let config = """
        # The lab.
        routes:
          - {name: dc1, listen: 127.0.0.1, epm_port: 10135, upstream: 127.0.0.1, ports: 50000-50009, policy: learn}
          - name: dc2
            listen: 127.0.0.2
            epm_port: 10135
            upstream: 127.0.0.1
            ports: 50010-50019
            policy: other

        policies:
          # learning: forward everything, audit everything
          learn:
            default: audit
          other:
            default: deny
            rules:
              - action: allow
                interfaces: [samr]

        # trailing comment of the file
        """

    static func line(
        route: String = "dc1",
        event: AuditRecord.Event = .bind,
        client: String,
        interface: String,
        opnum: UInt16? = nil,
        action: PolicyAction = .audit,
        listener: GatewayMetrics.Listener = .mapped,
        minute: Int64 = 0,
        identity: AuthIdentity? = nil
    ) throws -> String {
        AuditRecord(
            time: AuditTimestamp(millisecondsSinceEpoch: 1_780_000_000_000 + minute * 60_000),
            route: route,
            event: event,
            client: try SocketAddress(ipAddress: client, port: 50_000),
            server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49_152),
            listener: listener,
            interface: try #require(InterfaceCatalog.named(interface)).syntax,
            opnum: opnum,
            authType: .ntlm,
            authLevel: .integrity,
            identity: identity,
            decision: PolicyDecision(action: action, origin: nil),
            policy: route == "dc1" ? "learn" : "other"
        ).jsonLine
    }

    static func learningLog() throws -> [String] {
        let alice = AuthIdentity.ntlm(NTLMIdentity(user: "alice", domain: "EXAMPLE", workstation: "WS1"))
        return [
            try line(client: "10.1.2.3", interface: "samr", identity: alice),
            try line(event: .call, client: "10.1.2.3", interface: "samr", opnum: 64, minute: 1, identity: alice),
            try line(event: .call, client: "10.1.2.3", interface: "samr", opnum: 5, minute: 2),
            try line(event: .call, client: "10.1.2.3", interface: "samr", opnum: 6, minute: 2),
            try line(client: "10.1.9.9", interface: "lsarpc", minute: 3),
            try line(client: "10.2.0.1", interface: "lsarpc", minute: 4),
            try line(event: .call, client: "10.2.0.1", interface: "lsarpc", opnum: 44, minute: 5),
            // Not learned: the endpoint-mapper listener's own decision, a refusal, another route.
            try line(client: "10.1.2.3", interface: "epmapper", action: .allow, listener: .epm, minute: 6),
            try line(client: "10.1.2.3", interface: "spoolss", action: .deny, minute: 7),
            try line(route: "dc2", client: "10.3.0.1", interface: "samr", action: .allow, minute: 8),
            "not json",
            "",
        ]
    }

    static func write(_ lines: [String], name: String) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rpcgate-policy-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent(name).path
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func learn(
        _ lines: [String],
        options: PolicyLearner.Options = PolicyLearner.Options()
    ) throws -> (PolicyLearner, AuditReader) {
        let path = try write(lines, name: "audit.jsonl")
        var learner = PolicyLearner(options: options, routes: [("dc1", "learn"), ("dc2", "other")])
        var reader = AuditReader()
        try reader.read([path]) { learner.add($0) }
        return (learner, reader)
    }

    static func suggestedConfig(options: PolicyLearner.Options) throws -> String {
        let (learner, _) = try learn(try learningLog(), options: options)
        let splice = try ConfigPolicySplice(text: config)
        var replacements: [String: [String]] = [:]
        for learned in learner.learned.values {
            replacements[learned.policy] = learner.yaml(
                for: learned,
                indent: splice.indent,
                conflicts: learner.conflictLines(for: learned.policy)
            )
        }
        return splice.text(replacing: replacements, header: ["learned"])
    }

    @Test("Audit lines are read back, in both the ECS and the earlier format")
    func readsLines() throws {
        let (learner, reader) = try Self.learn(try Self.learningLog())
        #expect(reader.skippedLines == 1)
        #expect(learner.endpointMapperRecords == 1)
        let learned = try #require(learner.learned["learn"])
        #expect(learned.records == 7)
        #expect(learned.deniedRecords == 1)
        #expect(learned.interfaces.map(\.label) == ["lsarpc", "samr"])
        let samr = try #require(learned.interfaces.last)
        #expect(samr.binds == 1 && samr.calls == 3 && samr.opnums == [5, 6, 64])
        #expect(samr.users == ["EXAMPLE\\alice"])

        let old =
            #"{"time":"2024-05-01T12:34:56.789Z","route":"dc1","event":"call","client":"10.1.2.3","client_port":49152,"server":"10.99.0.2:49667","listener":"mapped","interface":"samr","uuid":"12345778-1234-abcd-ef00-0123456789ac","version":"1.0","opnum":7,"auth_type":"ntlm","auth_level":"privacy","decision":"audit","rule":null,"profile":null,"policy":"dc"}"#
        let entry = try #require(AuditEntry(jsonLine: Data(old.utf8)))
        #expect(entry.opnum == 7 && entry.authLevel == .privacy && entry.event == .call && entry.decision == .audit)
    }

    @Test("The suggestion loads, keeps the rest of the file, and allows exactly what was seen")
    func suggestionLoadsAndAllowsWhatWasSeen() throws {
        var options = PolicyLearner.Options()
        options.includeOpnums = true
        let text = try Self.suggestedConfig(options: options)
        #expect(text.contains("# The lab."))
        #expect(!text.contains("# learning: forward and audit everything"))
        #expect(text.contains("# trailing comment of the file"))
        #expect(text.contains("- profile: block-dcsync"))
        #expect(text.contains("interfaces: [samr]"))
        #expect(text.contains("sources: [10.1.2.0/24]"))
        #expect(text.contains("opnums: [5-6, 64]"))
        #expect(text.contains("sources: [10.1.9.0/24, 10.2.0.0/24]"))
        let settings = try ConfigurationLoader.parse(yaml: text, fileName: "suggested.yaml")
        let learned = try #require(settings.routes.first { $0.name == "dc1" }?.policy)
        #expect(learned.defaultAction == .deny)
        // dc2's policy is learned from dc2's one record.
        let other = try #require(settings.routes.first { $0.name == "dc2" }?.policy)
        let samrSyntax = InterfaceCatalog.named("samr")!.syntax
        #expect(other.evaluate(PolicyQuery(interface: samrSyntax, client: IPAddress("10.3.0.77")!)).action == .allow)
        #expect(other.evaluate(PolicyQuery(interface: samrSyntax, client: IPAddress("10.1.2.3")!)).action == .deny)

        // Replaying the learning log against it: nothing denied.
        var replay = PolicyReplay(
            policies: Dictionary(uniqueKeysWithValues: settings.routes.map { ($0.name, $0.policy) })
        )
        var reader = AuditReader()
        try reader.read([try Self.write(try Self.learningLog(), name: "audit.jsonl")]) { entry in
            if entry.decision.permits { replay.add(entry) }
        }
        #expect(replay.denied == 0, "\(replay.report())")
        // What was not seen is refused: another opnum, another network, another interface.
        let client = IPAddress("10.1.2.3")!
        let samr = InterfaceCatalog.named("samr")!.syntax
        #expect(learned.evaluate(PolicyQuery(interface: samr, opnum: 7, client: client)).action == .deny)
        #expect(learned.evaluate(PolicyQuery(interface: samr, client: IPAddress("10.9.0.1")!)).action == .deny)
        #expect(
            learned.evaluate(PolicyQuery(interface: InterfaceCatalog.named("spoolss")!.syntax, client: client)).action
                == .deny
        )
        #expect(learned.evaluate(PolicyQuery(interface: samr, opnum: 64, client: client)).action == .allow)
    }

    @Test("policy test groups what a stricter policy would deny, by interface, opnum and source")
    func replayReportsDenials() throws {
        let strict = Self.config.replacingOccurrences(
            of: "    default: audit",
            with: "    default: deny\n    rules:\n      - {action: allow, interfaces: [samr], opnums: [5-6, 64]}"
        )
        #expect(strict != Self.config)
        let settings = try ConfigurationLoader.parse(yaml: strict)
        var replay = PolicyReplay(
            policies: Dictionary(uniqueKeysWithValues: settings.routes.map { ($0.name, $0.policy) })
        )
        var reader = AuditReader()
        try reader.read([try Self.write(try Self.learningLog(), name: "audit.jsonl")]) { replay.add($0) }
        // lsarpc: two binds (two sources) and one call; spoolss: one bind; samr all allowed.
        #expect(replay.denied == 4)
        #expect(replay.denials.count == 4)
        let report = replay.report()
        #expect(report.first == "replayed 9 records: 4 would be denied in 4 groups (interface, opnum, source)")
        #expect(
            report.contains {
                $0.hasPrefix(
                    "DENY 1x route dc1: call lsarpc opnum 44 (12345778-1234-abcd-ef00-0123456789ab@0.0) from 10.2.0.1 by default"
                )
            }
        )
        #expect(report.contains { $0.contains("bind spoolss") })
        #expect(report.contains { $0.contains("endpoint-mapper listener records were not replayed") })
    }

    @Test("A built-in profile refusing what was seen is a warning in the suggestion")
    func profileConflicts() throws {
        var lines = try Self.learningLog()
        lines.append(try Self.line(event: .call, client: "10.1.2.3", interface: "drsuapi", opnum: 3, minute: 9))
        let (learner, _) = try Self.learn(lines)
        let warnings = learner.conflictLines(for: "learn")
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("call drsuapi opnum 3") == true)
        #expect(warnings.first?.contains("profile block-dcsync") == true)
    }

    @Test("Time windows, gzip files and the table format")
    func windowsCompressionAndTable() throws {
        let path = try Self.write(try Self.learningLog(), name: "audit.jsonl.1")
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        gzip.arguments = ["gzip", "-f", path]
        try gzip.run()
        gzip.waitUntilExit()
        try #require(gzip.terminationStatus == 0)
        var reader = AuditReader(
            since: AuditTime.parse("2026-05-28T20:29:00Z"),
            until: AuditTime.parse("2026-05-28T20:31:00Z")
        )
        var times: [String] = []
        try reader.read([path + ".gz"]) { times.append($0.timeText) }
        #expect(times == ["2026-05-28T20:29:40.000Z", "2026-05-28T20:30:40.000Z"])
        #expect(reader.outsideWindow == 8)

        let (learner, _) = try Self.learn(try Self.learningLog())
        let table = PolicyCommand.Suggest.table(learner.learned.values.sorted { $0.policy < $1.policy })
        #expect(table.first?.hasPrefix("ROUTES") == true)
        #expect(table.contains { $0.contains("samr") && $0.contains("5,6,64") })
    }

    @Test("YAML scalars are quoted when they need it")
    func quoting() {
        #expect(PolicyLearner.yamlScalar("samr") == "samr")
        #expect(PolicyLearner.yamlScalar("10.0.0.0/8") == "10.0.0.0/8")
        #expect(PolicyLearner.yamlScalar("fd00::/8") == "\"fd00::/8\"")
        #expect(PolicyLearner.yamlScalar("yes") == "\"yes\"")
        #expect(PolicyLearner.yamlScalar("a\"b") == "\"a\\\"b\"")
    }
}

import Foundation
import Logging
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import Testing

@Suite("Operations configuration: admin token and readiness, logging")
struct OperationsConfigurationTests {
    /// A fresh directory for token files, removed by the caller.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rpcgate-ops-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func admin(_ lines: String) -> String {
        minimalConfig + "admin:\n  listen: 127.0.0.1:9135\n" + lines
    }

    @Test("admin.token_file: the file's content, trimmed, is the token; the path is kept for messages")
    func tokenFile() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("admin.token").path
        try "  s3cret-Token_1+/==\n".write(toFile: file, atomically: true, encoding: .utf8)
        let settings = try ConfigurationLoader.parse(yaml: Self.admin("  token_file: \(file)\n"))
        let admin = try #require(settings.admin)
        #expect(admin.token == BearerToken("s3cret-Token_1+/=="))
        #expect(admin.tokenFile == file)
        #expect(admin.token?.authorizes(authorizationHeader: "Bearer s3cret-Token_1+/==") == true)
        // Without token_file there is no token.
        #expect(try ConfigurationLoader.parse(yaml: Self.admin("")).admin?.token == nil)
    }

    @Test("admin.token_file must exist, be a file, and hold one non-empty token")
    func tokenFileProblems() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let empty = directory.appendingPathComponent("empty.token").path
        try " \n\n".write(toFile: empty, atomically: true, encoding: .utf8)
        let spaced = directory.appendingPathComponent("spaced.token").path
        try "two words\n".write(toFile: spaced, atomically: true, encoding: .utf8)
        let large = directory.appendingPathComponent("large.token").path
        try String(repeating: "a", count: 5000).write(toFile: large, atomically: true, encoding: .utf8)

        let missing = try #require(
            problem(at: "admin.token_file", in: Self.admin("  token_file: \(directory.path)/nope.token\n"))
        )
        #expect(missing.message == "the token file \(directory.path)/nope.token does not exist")
        #expect(missing.line == 15)
        #expect(
            problem(at: "admin.token_file", in: Self.admin("  token_file: \(empty)\n"))?.message
                == "the token file \(empty) is empty"
        )
        #expect(
            problem(at: "admin.token_file", in: Self.admin("  token_file: \(directory.path)\n"))?.message.contains(
                "is a directory"
            ) == true
        )
        #expect(
            problem(at: "admin.token_file", in: Self.admin("  token_file: \(spaced)\n"))?.message.contains(
                "must be one line of letters, digits"
            ) == true
        )
        #expect(
            problem(at: "admin.token_file", in: Self.admin("  token_file: \(large)\n"))?.message.contains(
                "larger than 4096 bytes"
            ) == true
        )
        #expect(
            problem(at: "admin.token_file", in: Self.admin("  token_file:\n"))?.message.contains("has no value") == true
        )
    }

    @Test("an unreadable token file is reported (skipped as root: root reads anything)")
    func unreadableTokenFile() throws {
        guard geteuid() != 0 else { return }
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("secret.token").path
        try "token".write(toFile: file, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: file)
        #expect(
            problem(at: "admin.token_file", in: Self.admin("  token_file: \(file)\n"))?.message
                == "the token file \(file) is not readable by this user"
        )
    }

    @Test("admin.readiness: interval, timeout, max_age; defaults 10 s, 2 s, 30 s")
    func readiness() throws {
        #expect(try ConfigurationLoader.parse(yaml: Self.admin("")).admin?.readiness == ReadinessSettings())
        #expect(
            ReadinessSettings()
                == ReadinessSettings(interval: .seconds(10), timeout: .seconds(2), maximumAge: .seconds(30))
        )
        let custom = try ConfigurationLoader.parse(
            yaml: Self.admin("  readiness:\n    interval: 1s\n    timeout: 500ms\n    max_age: 3s\n")
        )
        #expect(
            custom.admin?.readiness
                == ReadinessSettings(interval: .seconds(1), timeout: .milliseconds(500), maximumAge: .seconds(3))
        )
        let tooShort = try #require(
            problem(
                at: "admin.readiness.max_age",
                in: Self.admin("  readiness:\n    interval: 30s\n    max_age: 30s\n")
            )
        )
        #expect(tooShort.message.contains("must be longer than interval"))
        #expect(
            problem(at: "admin.readiness.interval", in: Self.admin("  readiness:\n    interval: soon\n")) != nil
        )
        #expect(
            problem(at: "admin.readiness.every", in: Self.admin("  readiness:\n    every: 5s\n"))?.message.contains(
                "unknown key \"every\""
            ) == true
        )
    }

    @Test("logging: format and level, with suggestions for typos")
    func logging() throws {
        #expect(try ConfigurationLoader.parse(yaml: minimalConfig).logging == LoggingSettings())
        #expect(LoggingSettings().format == .text && LoggingSettings().level == nil)
        let json = try ConfigurationLoader.parse(yaml: minimalConfig + "logging:\n  format: json\n  level: debug\n")
        #expect(json.logging == LoggingSettings(format: .json, level: .debug))
        let logfmt = try ConfigurationLoader.parse(yaml: minimalConfig + "logging:\n  format: LOGFMT\n")
        #expect(logfmt.logging == LoggingSettings(format: .logfmt, level: nil))

        let format = try #require(problem(at: "logging.format", in: minimalConfig + "logging:\n  format: jsn\n"))
        #expect(format.message == "unknown log format \"jsn\"; did you mean \"json\"?")
        #expect(
            format.description == "test.yaml:14:11: logging.format: unknown log format \"jsn\"; did you mean \"json\"?"
        )
        let far = try #require(problem(at: "logging.format", in: minimalConfig + "logging:\n  format: syslog\n"))
        #expect(far.message == "unknown log format \"syslog\" (expected \"text\", \"logfmt\" or \"json\")")
        let level = try #require(problem(at: "logging.level", in: minimalConfig + "logging:\n  level: warn\n"))
        #expect(level.message == "unknown log level \"warn\"; did you mean \"warning\"?")
        #expect(problem(at: "logging.colour", in: minimalConfig + "logging:\n  colour: yes\n") != nil)
    }

    @Test("shipped configurations load: the example and the hardened domain-controller policy")
    func shippedConfigurations() throws {
        let example = try ConfigurationLoader.load(
            path: configDirectory.appendingPathComponent("rpcgate.example.yaml").path
        )
        #expect(example.routes.map(\.name) == ["dc1"])

        let hardened = try ConfigurationLoader.load(
            path: configDirectory.appendingPathComponent("rpcgate.dc-hardened.yaml").path
        )
        let policy = try #require(hardened.routes.first?.policy)
        #expect(policy.defaultAction == .deny)
        let profiles = Set(policy.rules.compactMap(\.origin.profile))
        #expect(profiles == ["block-coercion", "block-dcsync", "block-remote-exec"])
        // The DCSync profile keeps the other domain controllers' replication working.
        let dcsync = policy.rules.filter { $0.origin.profile == "block-dcsync" }
        #expect(!dcsync.isEmpty && dcsync.allSatisfy { !$0.exceptSources.isEmpty })
        #expect(hardened.logging.format == .json)
    }
}

import Foundation
import RPCGateway
import RPCGatewayConfig
import Testing

@Suite("Audit log configuration")
struct AuditConfigurationTests {
    @Test("audit.file and audit.buffer_lines are read; buffer_lines has a default")
    func valid() throws {
        let directory = FileManager.default.temporaryDirectory.path
        let settings = try ConfigurationLoader.parse(
            yaml: minimalConfig + """
                audit:
                  file: \(directory)/audit.jsonl
                  buffer_lines: 500

                """
        )
        #expect(settings.audit == AuditSettings(file: "\(directory)/audit.jsonl", bufferLines: 500))

        let stdout = try ConfigurationLoader.parse(yaml: minimalConfig + "audit:\n  file: \"-\"\n")
        #expect(stdout.audit == AuditSettings(file: "-", bufferLines: 10_000))

        let relative = try ConfigurationLoader.parse(yaml: minimalConfig + "audit:\n  file: audit.jsonl\n")
        #expect(relative.audit?.file == "audit.jsonl")

        #expect(try ConfigurationLoader.parse(yaml: minimalConfig).audit == nil)
    }

    @Test("A missing directory is reported at the file's line")
    func missingDirectory() throws {
        let yaml =
            minimalConfig + """
                audit:
                  file: /nonexistent-rpcgate/log/audit.jsonl

                """
        let found = try #require(problem(at: "audit.file", in: yaml))
        #expect(found.line == 14)
        #expect(found.message.contains("/nonexistent-rpcgate/log does not exist"))
        #expect(found.description.hasPrefix("test.yaml:14:9: audit.file: "))
    }

    @Test("A directory, an empty path, a parent that is a file")
    func badPaths() throws {
        let directory = FileManager.default.temporaryDirectory.path
        #expect(
            problem(at: "audit.file", in: minimalConfig + "audit:\n  file: \(directory)\n")?.message.contains(
                "is a directory"
            ) == true
        )
        #expect(
            problem(at: "audit.file", in: minimalConfig + "audit:\n  file: /tmp/\n")?.message.contains("is a directory")
                == true
        )
        #expect(
            problem(at: "audit.file", in: minimalConfig + "audit:\n  file: \"\"\n")?.message.contains(
                "must not be empty"
            ) == true
        )
        #expect(
            problem(at: "audit.file", in: minimalConfig + "audit:\n  file:\n")?.message.contains("has no value") == true
        )

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("rpcgate-audit-parent-\(UUID())")
        try Data().write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(
            problem(at: "audit.file", in: minimalConfig + "audit:\n  file: \(file.path)/audit.jsonl\n")?.message
                == "\(file.path) is not a directory"
        )
    }

    @Test("buffer_lines must be a positive number; file is required; unknown keys get a suggestion")
    func otherKeys() throws {
        let base = minimalConfig + "audit:\n  file: \"-\"\n"
        #expect(
            problem(at: "audit.buffer_lines", in: base + "  buffer_lines: 0\n")?.message.contains("out of range")
                == true
        )
        #expect(
            problem(at: "audit.buffer_lines", in: base + "  buffer_lines: \"100\"\n")?.message.contains(
                "without quotes"
            ) == true
        )
        #expect(problem(at: "audit.buffer_lines", in: base + "  buffer_lines: lots\n") != nil)
        let misspelt = try #require(problem(at: "audit.bufer_lines", in: base + "  bufer_lines: 10\n"))
        #expect(misspelt.message.contains("buffer_lines"))
        #expect(
            problem(at: "audit", in: minimalConfig + "audit:\n  buffer_lines: 10\n")?.message
                == "missing required key \"file\""
        )
        #expect(
            problem(at: "audit", in: minimalConfig + "audit: /tmp/audit.jsonl\n")?.message.contains(
                "expected a mapping"
            ) == true
        )
    }
}

@Suite("Audit syslog configuration")
struct AuditSyslogConfigurationTests {
    @Test("audit.syslog: address, transport, facility, app_name; defaults UDP and local0")
    func valid() throws {
        let settings = try ConfigurationLoader.parse(
            yaml: minimalConfig + """
                audit:
                  file: "-"
                  syslog: {address: "127.0.0.1:5514", transport: tcp, facility: local3, app_name: gw1}

                """
        )
        #expect(
            settings.audit?.syslog
                == SyslogSettings(host: "127.0.0.1", port: 5514, transport: .tcp, facility: 19, appName: "gw1")
        )
        let defaults = try ConfigurationLoader.parse(
            yaml: minimalConfig + "audit:\n  file: \"-\"\n  syslog: {address: \"[::1]:514\"}\n"
        )
        #expect(
            defaults.audit?.syslog
                == SyslogSettings(host: "::1", port: 514, transport: .udp, facility: 16, appName: "rpcgate")
        )
    }

    @Test("Bad syslog values are reported at their keys")
    func invalid() throws {
        let base = minimalConfig + "audit:\n  file: \"-\"\n  syslog: "
        #expect(
            problem(at: "audit.syslog.address", in: base + "{address: \"logs.example:514\"}\n")?.message.contains(
                "not an IP address"
            ) == true
        )
        #expect(
            problem(at: "audit.syslog.address", in: base + "{address: \"127.0.0.1\"}\n")?.message.contains("no port")
                == true
        )
        #expect(
            problem(at: "audit.syslog.transport", in: base + "{address: \"127.0.0.1:514\", transport: relp}\n") != nil
        )
        #expect(
            problem(at: "audit.syslog.facility", in: base + "{address: \"127.0.0.1:514\", facility: local9}\n")?.message
                .contains("local7") == true
        )
        #expect(
            problem(at: "audit.syslog.app_name", in: base + "{address: \"127.0.0.1:514\", app_name: \"a b\"}\n") != nil
        )
        #expect(problem(at: "audit.syslog", in: base + "{transport: udp}\n") != nil)
    }
}

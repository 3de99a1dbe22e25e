import Logging
import NIOConcurrencyHelpers
import RPCGateway
import Testing

@testable import rpcgate

@Suite("Log handlers")
struct LogHandlersTests {
    /// Lines written by a handler, in order.
    final class Lines: Sendable {
        private let box = NIOLockedValueBox<[String]>([])
        var all: [String] { self.box.withLockedValue { $0 } }
        func append(_ line: String) { self.box.withLockedValue { $0.append(line) } }
    }

    static func record(
        level: Logger.Level = .info,
        message: String = "connection closed",
        handler: Logger.Metadata = [:],
        call: Logger.Metadata? = nil
    ) -> LogRecord {
        LogRecord(
            time: "2026-11-22T01:55:47.123Z",
            level: level,
            label: "rpcgate",
            message: "\(message)",
            handlerMetadata: handler,
            provider: nil,
            callMetadata: call
        )
    }

    @Test("logfmt: fixed fields first, metadata sorted, values quoted only when needed")
    func logfmt() {
        let record = Self.record(
            handler: ["route": "dc1"],
            call: ["client": "10.0.0.5:50123", "reason": "client_closed", "decision": "allow by default", "empty": ""]
        )
        #expect(
            LogfmtFormat.format(record)
                == "time=2026-11-22T01:55:47.123Z level=info label=rpcgate msg=\"connection closed\" client=10.0.0.5:50123 "
                + "decision=\"allow by default\" empty=\"\" reason=client_closed route=dc1"
        )
    }

    @Test("logfmt escapes quotes, backslashes, newlines and control characters; cleans keys")
    func logfmtEscaping() {
        #expect(LogfmtFormat.value("a\"b\\c") == "\"a\\\"b\\\\c\"")
        #expect(LogfmtFormat.value("line1\nline2\r\tx") == "\"line1\\nline2\\r\\tx\"")
        #expect(LogfmtFormat.value("bell\u{7}") == "\"bell\\u0007\"")
        #expect(LogfmtFormat.value("k=v") == "\"k=v\"")
        #expect(LogfmtFormat.value("plain") == "plain")
        #expect(LogfmtFormat.key("a key=x\"") == "a_key_x_")
        #expect(LogfmtFormat.key("") == "_")
    }

    @Test("JSON: one object per line, nested metadata flattened with dots, arrays kept")
    func json() {
        let record = Self.record(
            level: .notice,
            message: "bind denied",
            handler: ["route": "dc1"],
            call: [
                "peer": ["address": "10.0.0.5", "port": "50123"],
                "interfaces": ["samr", "lsarpc"],
                "message": "collides",
            ]
        )
        #expect(
            JSONLinesFormat.format(record)
                == #"{"time":"2026-11-22T01:55:47.123Z","level":"notice","label":"rpcgate","message":"bind denied","#
                + #""interfaces":["samr","lsarpc"],"metadata.message":"collides","peer.address":"10.0.0.5","#
                + #""peer.port":"50123","route":"dc1"}"#
        )
    }

    @Test("JSON escapes strings (RFC 8259)")
    func jsonEscaping() {
        let record = Self.record(message: "quote \" backslash \\ newline \n tab \t nul \u{0}", call: ["k": "<é>"])
        #expect(
            JSONLinesFormat.format(record)
                == #"{"time":"2026-11-22T01:55:47.123Z","level":"info","label":"rpcgate","#
                + #""message":"quote \" backslash \\ newline \n tab \t nul \u0000","k":"<é>"}"#
        )
    }

    @Test("call metadata overrides handler metadata; the provider sits in between")
    func mergeOrder() {
        let provider = Logger.MetadataProvider { ["source_task": "reload", "route": "from-provider"] }
        let record = LogRecord(
            time: "t",
            level: .info,
            label: "rpcgate",
            message: "m",
            handlerMetadata: ["route": "dc1", "conn": "1"],
            provider: provider,
            callMetadata: ["conn": "2"]
        )
        #expect(record.fields.map(\.key) == ["conn", "route", "source_task"])
        #expect(record.fields.map(\.value) == [.text("2"), .text("from-provider"), .text("reload")])
    }

    @Test("handlers honour the level and write whole lines through their output")
    func handlersWriteLines() {
        let lines = Lines()
        let output = LogOutput(capture: { lines.append($0) })
        var logger = Logger(label: "rpcgate") { label in
            var handler = JSONLogHandler(label: label, output: output)
            handler.logLevel = .notice
            return handler
        }
        logger[metadataKey: "route"] = "dc1"
        logger.info("not written")
        logger.notice("bind denied", metadata: ["interface": "wkssvc"])
        #expect(lines.all.count == 1)
        #expect(lines.all.first?.hasPrefix(#"{"time":""#) == true)
        #expect(lines.all.first?.hasSuffix(#""message":"bind denied","interface":"wkssvc","route":"dc1"}"#) == true)

        let logfmtLines = Lines()
        let logfmt = Logger(label: "rpcgate") { label in
            LogfmtLogHandler(label: label, output: LogOutput(capture: { logfmtLines.append($0) }))
        }
        logfmt.debug("not written")
        logfmt.warning("upstream unreachable", metadata: ["error": "Connection refused"])
        #expect(logfmtLines.all.count == 1)
        #expect(
            logfmtLines.all.first?.contains(
                #" level=warning label=rpcgate msg="upstream unreachable" error="Connection refused""#
            ) == true
        )
    }

    @Test("the factory picks the configured format")
    func factory() {
        let lines = Lines()
        let output = LogOutput(capture: { lines.append($0) })
        let json = LogSetup.factory(format: .json, level: .debug, output: output)("rpcgate", nil)
        #expect(json is JSONLogHandler)
        #expect(json.logLevel == .debug)
        let logfmt = LogSetup.factory(format: .logfmt, level: .error, output: output)("rpcgate", nil)
        #expect(logfmt is LogfmtLogHandler)
        #expect(logfmt.logLevel == .error)
        let text = LogSetup.factory(format: .text, level: .info, output: output)("rpcgate", nil)
        #expect(text is StreamLogHandler)
    }
}

import Foundation
import Logging
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// A sink whose writes block until the test opens the gate, recording the lines written.
final class GatedAuditSink: AuditSink {
    private let gate = ConditionLock(value: false)
    private let writesStarted = ConditionLock(value: 0)
    private let writeCount = NIOLockedValueBox(0)
    private let written = NIOLockedValueBox<[String]>([])
    private let closed = NIOLockedValueBox(false)

    init(open: Bool = false) {
        if open { self.open() }
    }

    func write(_ bytes: ByteBuffer) throws {
        let started = self.writeCount.withLockedValue { count in
            count += 1
            return count
        }
        self.writesStarted.lock()
        self.writesStarted.unlock(withValue: started)
        self.gate.lock(whenValue: true)
        self.gate.unlock()
        let lines = String(buffer: bytes).split(separator: "\n").map(String.init)
        self.written.withLockedValue { $0.append(contentsOf: lines) }
    }

    func close() {
        self.closed.withLockedValue { $0 = true }
    }

    func open() {
        self.gate.lock()
        self.gate.unlock(withValue: true)
    }

    /// Waits (up to 10 s) until `count` writes have started.
    func waitForWrites(_ count: Int) -> Bool {
        guard self.writesStarted.lock(whenValue: count, timeoutSeconds: 10) else { return false }
        self.writesStarted.unlock()
        return true
    }

    var lines: [String] { self.written.withLockedValue { $0 } }
    var isClosed: Bool { self.closed.withLockedValue { $0 } }
}

/// A sink whose writes always fail.
struct FailingAuditSink: AuditSink {
    func write(_ bytes: ByteBuffer) throws { throw AuditLogError("disk on fire") }
    func close() {}
}

/// Captures log messages at warning level and above.
struct CapturingLogHandler: LogHandler {
    let messages: NIOLockedValueBox<[(Logger.Level, String)]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        self.messages.withLockedValue { $0.append((event.level, "\(event.message)")) }
    }
}

@Suite("Audit log (bounded queue, writer thread)")
struct AuditLogTests {
    static func record(_ opnum: UInt16) -> AuditRecord {
        AuditRecord(
            time: AuditTimestamp(millisecondsSinceEpoch: 1_714_566_896_789 + Int64(opnum)),
            route: "dc1",
            event: .call,
            client: nil,
            server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49_667),
            listener: .mapped,
            interface: SyntaxID.endpointMapper,
            opnum: opnum,
            authType: .none,
            authLevel: .none,
            decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 1)),
            policy: "dc"
        )
    }

    static func opnums(_ lines: [String]) throws -> [Int] {
        try lines.map { line in
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return try #require(object["rpc.opnum"] as? Int)
        }
    }

    @Test("A blocked writer: the queue holds `capacity` records, drops the rest, counts them, warns once")
    func dropsWhenWriterBlocked() async throws {
        let sink = GatedAuditSink()
        let metrics = TestMetrics()
        let messages = NIOLockedValueBox<[(Logger.Level, String)]>([])
        let logger = Logger(label: "test") { _ in CapturingLogHandler(messages: messages) }
        let log = AuditLog(sink: sink, capacity: 4, logger: logger, metrics: GatewayMetrics(factory: metrics))

        log.record(Self.record(0))
        // The writer took record 0 and is stuck in `write`: the data path must not be.
        #expect(sink.waitForWrites(1))
        for opnum in UInt16(1)...10 {
            log.record(Self.record(opnum))
        }
        #expect(log.droppedCount == 6)
        let dropped = try metrics.expectCounter("rpcgate_audit_dropped_total", [("reason", "queue_full")])
        #expect(dropped.totalValue == 6)
        let warnings = messages.withLockedValue { $0 }.filter { $0.0 == .warning }
        #expect(warnings.count == 1)

        sink.open()
        await log.shutdown()
        #expect(try Self.opnums(sink.lines) == [0, 1, 2, 3, 4])
        #expect(sink.isClosed)
        // Records after shutdown are ignored, not queued and not counted.
        log.record(Self.record(11))
        #expect(log.droppedCount == 6)
    }

    @Test("Write errors are counted as write_error and logged")
    func writeErrors() async throws {
        let metrics = TestMetrics()
        let messages = NIOLockedValueBox<[(Logger.Level, String)]>([])
        let logger = Logger(label: "test") { _ in CapturingLogHandler(messages: messages) }
        let log = AuditLog(sink: FailingAuditSink(), logger: logger, metrics: GatewayMetrics(factory: metrics))
        for opnum in UInt16(0)..<3 {
            log.record(Self.record(opnum))
        }
        await log.shutdown()
        let lost = try metrics.expectCounter("rpcgate_audit_dropped_total", [("reason", "write_error")])
        #expect(lost.totalValue == 3)
        #expect(messages.withLockedValue { $0 }.contains { $0.0 == .error })
    }

    @Test("File output: N records become N lines after shutdown, appended to what was there")
    func fileOutput() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rpcgate-audit-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("audit.jsonl").path
        try Data("{\"earlier\":true}\n".utf8).write(to: URL(fileURLWithPath: path))

        let log = try AuditLog(settings: AuditSettings(file: path, bufferLines: 5000), logger: Logger(label: "test"))
        let count = 2500
        for opnum in 0..<count {
            log.record(Self.record(UInt16(opnum)))
        }
        await log.shutdown()

        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasSuffix("\n"))
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.count == count + 1)
        #expect(lines.first == "{\"earlier\":true}")
        #expect(try Self.opnums(Array(lines.dropFirst())) == Array(0..<count))
        #expect(log.droppedCount == 0)
    }

    @Test("A file that cannot be opened is an error at start")
    func cannotOpen() throws {
        #expect(throws: AuditLogError.self) {
            _ = try AuditLog(
                settings: AuditSettings(file: "/nonexistent-rpcgate-dir/audit.jsonl"),
                logger: Logger(label: "test")
            )
        }
    }
}

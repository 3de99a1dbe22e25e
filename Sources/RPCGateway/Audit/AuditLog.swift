package import Logging
import Metrics
import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where audit lines go. Called only from the audit writer thread, one call at a time.
package protocol AuditSink: Sendable {
    /// Writes all of `bytes` (whole lines), blocking as long as the device needs.
    func write(_ bytes: ByteBuffer) throws
    /// Called once, after the last write.
    func close()
}

/// An audit log that cannot be opened or written.
package struct AuditLogError: Error, CustomStringConvertible {
    package var description: String

    package init(_ description: String) {
        self.description = description
    }

    /// `what: strerror(errno)`.
    static func posix(_ what: String, errno code: Int32) -> AuditLogError {
        AuditLogError("\(what): \(String(cString: strerror(code)))")
    }
}

/// A file (opened for appending) or standard output, written with POSIX `write`.
package struct FileAuditSink: AuditSink {
    private let descriptor: Int32
    private let ownsDescriptor: Bool
    /// The path, or `-` for standard output.
    package let path: String

    /// Opens `path` for appending (created with mode 0640), or standard output for `-`.
    package init(path: String) throws {
        self.path = path
        if path == AuditSettings.standardOutput {
            self.descriptor = STDOUT_FILENO
            self.ownsDescriptor = false
            return
        }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode_t(0o640))
        guard descriptor >= 0 else {
            throw AuditLogError.posix("cannot open the audit log \(path)", errno: errno)
        }
        self.descriptor = descriptor
        self.ownsDescriptor = true
    }

    package func write(_ bytes: ByteBuffer) throws {
        try bytes.withUnsafeReadableBytes { pointer in
            guard let base = pointer.baseAddress else { return }
            var offset = 0
            while offset < pointer.count {
                let written = posixWrite(self.descriptor, base + offset, pointer.count - offset)
                if written < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    throw AuditLogError.posix("cannot write the audit log \(self.path)", errno: code)
                }
                offset += written
            }
        }
    }

    package func close() {
        guard self.ownsDescriptor else { return }
        _ = posixClose(self.descriptor)
    }

}

/// The audit log: one JSON line per bind decision and per denied or audited call.
///
/// The data path only calls ``record(_:)``, which appends a small value to a bounded queue under a
/// lock and never waits for I/O. A dedicated writer thread (a one-thread `NIOThreadPool`) takes
/// every queued record at once, formats the JSON and writes it with POSIX `write`. When the writer
/// falls behind by ``capacity`` records (a slow or stuck disk), new records are dropped and counted
/// in `rpcgate_audit_dropped_total{reason="queue_full"}`, with a warning logged at most once per
/// ``warningInterval``. Lines that fail to write are counted with `reason="write_error"`.
///
/// Call ``shutdown()`` once: it writes what is queued, closes the file and stops the thread.
/// Records that arrive after it are ignored.
package final class AuditLog: Sendable {
    /// Most records queued and not yet taken by the writer.
    package let capacity: Int
    /// Least time between two "records dropped" (or "write failed") warnings.
    package let warningInterval: TimeAmount
    private let queue: AuditQueue
    private let sink: any AuditSink
    private let syslog: SyslogSender?
    private let pool: NIOThreadPool
    private let writerState = NIOLockedValueBox(WriterState.running)
    private let logger: Logger
    private let droppedQueueFull: Counter
    private let droppedWriteError: Counter
    private let droppedSyslogError: Counter

    /// Opens the file of `settings` and starts the writer.
    ///
    /// - Throws: ``AuditLogError`` when the file cannot be opened or the syslog host is not an
    ///   address.
    package convenience init(settings: AuditSettings, logger: Logger, metrics: GatewayMetrics = GatewayMetrics()) throws
    {
        self.init(
            sink: try FileAuditSink(path: settings.file),
            syslog: try settings.syslog.map(SyslogSender.init(settings:)),
            capacity: settings.bufferLines,
            logger: logger,
            metrics: metrics
        )
    }

    /// Starts a writer that sends lines to `sink` and, when given, every record to `syslog`.
    package init(
        sink: any AuditSink,
        syslog: SyslogSender? = nil,
        capacity: Int = AuditSettings.defaultBufferLines,
        warningInterval: TimeAmount = .seconds(60),
        logger: Logger,
        metrics: GatewayMetrics = GatewayMetrics()
    ) {
        self.capacity = max(1, capacity)
        self.warningInterval = warningInterval
        self.queue = AuditQueue(capacity: self.capacity)
        self.sink = sink
        self.syslog = syslog
        self.logger = logger
        self.droppedQueueFull = Counter(
            label: GatewayMetrics.Name.auditDroppedTotal,
            dimensions: [("reason", "queue_full")],
            factory: metrics.factory
        )
        self.droppedWriteError = Counter(
            label: GatewayMetrics.Name.auditDroppedTotal,
            dimensions: [("reason", "write_error")],
            factory: metrics.factory
        )
        self.droppedSyslogError = Counter(
            label: GatewayMetrics.Name.auditDroppedTotal,
            dimensions: [("reason", "syslog_error")],
            factory: metrics.factory
        )
        self.pool = NIOThreadPool(numberOfThreads: 1)
        self.pool.start()
        self.pool.submit { [self] _ in self.runWriter() }
    }

    // MARK: - Data path

    /// Queues `record` for writing. Never blocks on I/O; drops (and counts) the record when the
    /// queue is full.
    package func record(_ record: AuditRecord) {
        switch self.queue.append(record, warningInterval: self.warningInterval) {
        case .queued, .closed:
            break
        case .dropped:
            self.droppedQueueFull.increment()
        case .droppedWarn(let droppedSinceWarning, let droppedTotal):
            self.droppedQueueFull.increment()
            self.logger.warning(
                "audit log falling behind: records dropped",
                metadata: [
                    "dropped": "\(droppedSinceWarning)",
                    "dropped_total": "\(droppedTotal)",
                    "buffer_lines": "\(self.capacity)",
                ]
            )
        }
    }

    /// Records dropped because the queue was full, since start.
    package var droppedCount: Int { self.queue.droppedCount }

    // MARK: - Shutdown

    /// Writes every queued record, closes the file and stops the writer thread.
    ///
    /// Waits for the writer's own completion rather than for the thread pool: a pool shut down
    /// before its thread picked up the writer runs it later, on a dispatch queue, after
    /// `shutdownGracefully` may already have returned.
    package func shutdown() async {
        self.queue.close()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let alreadyFinished = self.writerState.withLockedValue { state -> Bool in
                switch state {
                case .finished:
                    return true
                case .running, .awaited:
                    state = .awaited(continuation)
                    return false
                }
            }
            if alreadyFinished { continuation.resume() }
        }
        try? await self.pool.shutdownGracefully()
    }

    private enum WriterState {
        case running
        case awaited(CheckedContinuation<Void, Never>)
        case finished
    }

    // MARK: - Writer thread

    private func runWriter() {
        var batch = CircularBuffer<AuditRecord>(initialCapacity: min(self.capacity, 1024))
        var output = ByteBuffer()
        var lastErrorWarning: NIODeadline?
        var lastSyslogWarning: NIODeadline?
        while true {
            let closing = self.queue.take(into: &batch)
            if !batch.isEmpty {
                output.clear()
                for record in batch {
                    record.writeJSONLine(into: &output)
                }
                do {
                    try self.sink.write(output)
                } catch {
                    self.droppedWriteError.increment(by: batch.count)
                    let now = NIODeadline.now()
                    if lastErrorWarning.map({ now - $0 >= self.warningInterval }) ?? true {
                        lastErrorWarning = now
                        self.logger.error(
                            "audit records lost",
                            metadata: ["records": "\(batch.count)", "error": "\(error)"]
                        )
                    }
                }
                if let syslog = self.syslog {
                    do {
                        try syslog.send(batch)
                    } catch {
                        self.droppedSyslogError.increment(by: batch.count)
                        let now = NIODeadline.now()
                        if lastSyslogWarning.map({ now - $0 >= self.warningInterval }) ?? true {
                            lastSyslogWarning = now
                            self.logger.error(
                                "audit records not sent to syslog",
                                metadata: ["records": "\(batch.count)", "error": "\(error)"]
                            )
                        }
                    }
                }
                batch.removeAll(keepingCapacity: true)
            }
            if closing { break }
        }
        self.sink.close()
        self.syslog?.close()
        let waiter = self.writerState.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            defer { state = .finished }
            if case .awaited(let continuation) = state { return continuation }
            return nil
        }
        waiter?.resume()
    }
}

/// The bounded queue between the data path and the writer thread.
///
/// Every stored property is read and written only while `condition` is held, which is what makes
/// the `@unchecked Sendable` sound. The condition's value is `true` when the writer has something
/// to do (records queued, or the queue closed).
private final class AuditQueue: @unchecked Sendable {
    enum AppendResult {
        case queued
        case dropped
        /// Dropped, and a warning is due: drops since the last warning, and in total.
        case droppedWarn(Int, Int)
        case closed
    }

    private let condition = ConditionLock(value: false)
    private let capacity: Int
    private var records: CircularBuffer<AuditRecord>
    private var closed = false
    private var dropped = 0
    private var droppedSinceWarning = 0
    private var lastWarning: NIODeadline?

    init(capacity: Int) {
        self.capacity = capacity
        self.records = CircularBuffer(initialCapacity: min(capacity, 1024))
    }

    /// Queues `record` unless the queue is full or closed. Reads the clock only when dropping.
    func append(_ record: AuditRecord, warningInterval: TimeAmount) -> AppendResult {
        self.condition.lock()
        guard !self.closed else {
            self.condition.unlock()
            return .closed
        }
        guard self.records.count < self.capacity else {
            self.dropped += 1
            self.droppedSinceWarning += 1
            var result = AppendResult.dropped
            let now = NIODeadline.now()
            if self.lastWarning.map({ now - $0 >= warningInterval }) ?? true {
                self.lastWarning = now
                result = .droppedWarn(self.droppedSinceWarning, self.dropped)
                self.droppedSinceWarning = 0
            }
            self.condition.unlock()
            return result
        }
        self.records.append(record)
        self.condition.unlock(withValue: true)
        return .queued
    }

    /// Waits until there is work, then swaps every queued record into `batch` (which must be
    /// empty; its storage is reused by the queue). Returns whether the queue is closed, in which
    /// case nothing more will be queued.
    func take(into batch: inout CircularBuffer<AuditRecord>) -> Bool {
        self.condition.lock(whenValue: true)
        swap(&self.records, &batch)
        let closed = self.closed
        self.condition.unlock(withValue: closed)
        return closed
    }

    func close() {
        self.condition.lock()
        self.closed = true
        self.condition.unlock(withValue: true)
    }

    var droppedCount: Int {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.dropped
    }
}

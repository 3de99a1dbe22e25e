import Foundation
import NIOCore
import NIOPosix
import RPCPeer
import RPCWire

/// Runs the workers of one client mode on the event loops and sums up what they did.
enum ClientRunner {
    static func loops(of group: any EventLoopGroup) -> [any EventLoop] {
        var loops: [any EventLoop] = []
        var iterator = group.makeIterator()
        while let loop = iterator.next() { loops.append(loop) }
        return loops
    }

    /// Creates one loop-confined worker per entry of `loops`.
    static func makeWorkers<Worker>(
        on loops: [any EventLoop],
        _ make: @escaping @Sendable (any EventLoop) -> Worker
    ) async throws -> [(loop: any EventLoop, worker: NIOLoopBound<Worker>)] {
        var workers: [(loop: any EventLoop, worker: NIOLoopBound<Worker>)] = []
        for loop in loops {
            let bound = try await loop.submit { NIOLoopBound(make(loop), eventLoop: loop) }.get()
            workers.append((loop, bound))
        }
        return workers
    }

    // MARK: - bulk, latency

    static func callLoop(_ configuration: ClientConfiguration, group: any EventLoopGroup) async throws -> Report {
        let all = Self.loops(of: group)
        let assigned = (0..<configuration.connections).map { all[$0 % all.count] }
        let latency = configuration.mode == .latency
        let workers = try await Self.makeWorkers(on: assigned) { loop in
            CallLoopWorker(loop: loop, configuration: configuration, recordRoundTrips: latency)
        }
        // Set-up (lookup, connect, bind, warm-up) is not measured.
        let prepared = workers.map { entry in entry.loop.flatSubmit { entry.worker.value.prepare() } }
        try await EventLoopFuture.andAllSucceed(prepared, on: all[0]).get()
        let resolved = try await workers[0].loop.submit { workers[0].worker.value.resolvedTarget }.get()
        let target = resolved.map { "\($0)" } ?? "?"

        let start = NIODeadline.now()
        let deadline = start + configuration.duration
        let running = workers.map { entry in entry.loop.flatSubmit { entry.worker.value.run(until: deadline) } }
        var total = WorkerResult()
        for future in running { total.merge(try await future.get()) }
        let end = total.lastCompletion ?? NIODeadline.now()
        let elapsed = Double((end - start).nanoseconds) / 1e9

        var report = Report(mode: configuration.mode, configuration: configuration, target: resolved)
        report.add("elapsed_s", .double(elapsed))
        report.add("calls", .int(total.calls))
        report.add("errors", .int(total.errors))
        report.add("first_error", total.firstError.map { .string($0) } ?? .null)
        if latency {
            let sorted = total.roundTrips.sorted()
            func micros(_ p: Double) -> JSONValue {
                guard !sorted.isEmpty else { return .null }
                let rank = min(sorted.count - 1, max(0, Int((Double(sorted.count) * p).rounded(.up)) - 1))
                return .double(Double(sorted[rank]) / 1000)
            }
            let mean = sorted.isEmpty ? 0 : Double(sorted.reduce(0, +)) / Double(sorted.count) / 1000
            report.add("p50_us", micros(0.50))
            report.add("p90_us", micros(0.90))
            report.add("p99_us", micros(0.99))
            report.add("min_us", micros(0))
            report.add("max_us", micros(1))
            report.add("mean_us", .double(mean))
            report.human =
                "latency via \(target): \(total.calls) calls, p50 \(micros(0.5)) µs, p90 \(micros(0.9)) µs, p99 \(micros(0.99)) µs"
        } else {
            let megabytes = Double(total.stubBytesEachWay) / 1e6
            report.add("stub_bytes_each_way", .int(total.stubBytesEachWay))
            report.add("mb_per_s", .double(elapsed > 0 ? megabytes / elapsed : 0))
            report.human =
                "bulk via \(target): \(configuration.connections) connections, \(total.calls) calls, "
                + "\(String(format: "%.1f", elapsed > 0 ? megabytes / elapsed : 0)) MB/s of stub each way"
        }
        report.failed = total.errors > 0 || total.calls == 0
        return report
    }

    // MARK: - churn

    static func churn(_ configuration: ClientConfiguration, group: any EventLoopGroup) async throws -> Report {
        let all = Self.loops(of: group)
        let assigned = (0..<configuration.connections).map { all[$0 % all.count] }
        let workers = try await Self.makeWorkers(on: assigned) { loop in
            ChurnWorker(loop: loop, configuration: configuration)
        }
        let start = NIODeadline.now()
        let deadline = start + configuration.duration
        let running = workers.map { entry in entry.loop.flatSubmit { entry.worker.value.run(until: deadline) } }
        var total = WorkerResult()
        for future in running { total.merge(try await future.get()) }
        let end = total.lastCompletion ?? NIODeadline.now()
        let elapsed = Double((end - start).nanoseconds) / 1e9
        let rate = elapsed > 0 ? Double(total.sequences) / elapsed : 0

        var report = Report(mode: configuration.mode, configuration: configuration, target: configuration.direct)
        report.add("elapsed_s", .double(elapsed))
        report.add("sequences", .int(total.sequences))
        report.add("sequences_per_s", .double(rate))
        report.add("calls", .int(total.calls))
        report.add("errors", .int(total.errors))
        report.add("first_error", total.firstError.map { .string($0) } ?? .null)
        report.human =
            "churn: \(configuration.connections) workers, \(total.sequences) sequences "
            + "(lookup, connect, bind, call, close), \(String(format: "%.0f", rate))/s, \(total.errors) errors"
        // A few failed sequences (a refused connect under load) are reported, not fatal.
        report.failed = total.sequences == 0 || total.errors * 100 > max(1, total.sequences)
        return report
    }

    // MARK: - idle

    static func idle(
        _ configuration: ClientConfiguration,
        group: any EventLoopGroup,
        readyFile: String?
    ) async throws
        -> Report
    {
        let all = Self.loops(of: group)
        let first = all[0]
        let target = try await first.flatSubmit { () -> EventLoopFuture<PeerAddress> in
            let promise = first.makePromise(of: PeerAddress.self)
            TargetResolver(configuration: configuration).target(on: first) { promise.completeWith($0) }
            return promise.futureResult
        }.get()

        let shares = all.indices.map { index in
            configuration.connections / all.count + (index < configuration.connections % all.count ? 1 : 0)
        }
        var workers: [(loop: any EventLoop, worker: NIOLoopBound<IdleWorker>)] = []
        for (loop, share) in zip(all, shares) where share > 0 {
            let bound = try await loop.submit {
                NIOLoopBound(
                    IdleWorker(loop: loop, configuration: configuration, target: target, count: share),
                    eventLoop: loop
                )
            }.get()
            workers.append((loop, bound))
        }
        let start = NIODeadline.now()
        let opening = workers.map { entry in entry.loop.flatSubmit { entry.worker.value.open() } }
        try await EventLoopFuture.andAllSucceed(opening, on: first).get()
        let openSeconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        stderrLine("idle: connections opened in \(String(format: "%.1f", openSeconds)) s; holding")
        if let readyFile {
            _ = FileManager.default.createFile(atPath: readyFile, contents: Data("ready\n".utf8))
        }
        try await Task.sleep(nanoseconds: UInt64(configuration.duration.nanoseconds))

        var established = 0
        var held = 0
        var total = WorkerResult()
        for entry in workers {
            let part = try await entry.loop.flatSubmit { entry.worker.value.finish() }.get()
            established += part.established
            held += part.held
            total.merge(part.result)
        }
        var report = Report(mode: configuration.mode, configuration: configuration, target: target)
        report.add("requested", .int(configuration.connections))
        report.add("established", .int(established))
        report.add("held", .int(held))
        report.add("open_s", .double(openSeconds))
        report.add("errors", .int(total.errors))
        report.add("first_error", total.firstError.map { .string($0) } ?? .null)
        report.human =
            "idle via \(target): \(established) of \(configuration.connections) established and bound, "
            + "\(held) held \(Double(configuration.duration.nanoseconds) / 1e9) s"
        report.failed = held < configuration.connections
        return report
    }
}

// MARK: - Output

enum JSONValue {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case null

    var text: String {
        switch self {
        case .string(let value): return Self.quote(value)
        case .int(let value): return String(value)
        case .double(let value): return value.isFinite ? String(format: "%.3f", value) : "null"
        case .bool(let value): return value ? "true" : "false"
        case .null: return "null"
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

extension JSONValue: CustomStringConvertible {
    var description: String {
        switch self {
        case .double(let value): return String(format: "%.1f", value)
        default: return self.text
        }
    }
}

/// One JSON line on stdout, one human line on stderr.
struct Report {
    private var fields: [(String, JSONValue)] = []
    var human = ""
    var failed = false

    init(mode: ClientConfiguration.Mode, configuration: ClientConfiguration, target: PeerAddress?) {
        self.add("mode", .string(mode.rawValue))
        self.add("epm", configuration.epm.map { .string("\($0)") } ?? .null)
        self.add("target", target.map { .string("\($0)") } ?? .null)
        self.add("connections", .int(configuration.connections))
        self.add("calls_per_connection", .int(configuration.callsPerConnection))
        self.add("stub_size", .int(configuration.stubSize))
        self.add("frag_size", .int(configuration.fragment))
        self.add("auth_trailer", .bool(configuration.authTrailer))
        self.add("duration_s", .double(Double(configuration.duration.nanoseconds) / 1e9))
    }

    init(mode: ClientConfiguration.Mode, configuration: ClientConfiguration, failure: String) {
        self.init(mode: mode, configuration: configuration, target: nil)
        self.add("errors", .int(1))
        self.add("first_error", .string(failure))
        self.failed = true
    }

    mutating func add(_ key: String, _ value: JSONValue) {
        self.fields.append((key, value))
    }

    var json: String {
        "{" + self.fields.map { "\(JSONValue.quote($0.0)):\($0.1.text)" }.joined(separator: ",") + "}"
    }

    var humanText: String { self.human }
}

import NIOCore
import NIOPosix
import RPCPeer
import RPCWire

/// What the client was asked to do.
struct ClientConfiguration: Sendable {
    enum Mode: String, Sendable, CaseIterable {
        case bulk, latency, churn, idle
    }

    var epm: PeerAddress?
    var direct: PeerAddress?
    var connections: Int
    /// Calls per connection (0: until the duration ends). In churn, calls per sequence (0 means 1).
    var callsPerConnection: Int
    var stubSize: Int
    var fragment: Int
    var duration: TimeAmount
    var mode: Mode
    var authTrailer: Bool
    /// Latency calls discarded before recording.
    var warmupCalls: Int
    /// Idle: connection attempts in flight per event loop.
    var connectConcurrency: Int
}

/// What one worker did.
struct WorkerResult: Sendable {
    var calls = 0
    var stubBytesEachWay = 0
    var sequences = 0
    var errors = 0
    var firstError: String?
    /// Round trips in nanoseconds (latency mode only).
    var roundTrips: [UInt64] = []
    var lastCompletion: NIODeadline?

    mutating func record(_ error: any Error) {
        self.errors += 1
        if self.firstError == nil { self.firstError = "\(error)" }
    }

    mutating func merge(_ other: WorkerResult) {
        self.calls += other.calls
        self.stubBytesEachWay += other.stubBytesEachWay
        self.sequences += other.sequences
        self.errors += other.errors
        if self.firstError == nil { self.firstError = other.firstError }
        self.roundTrips += other.roundTrips
        if let last = other.lastCompletion, last > (self.lastCompletion ?? .uptimeNanoseconds(0)) {
            self.lastCompletion = last
        }
    }
}

/// Where calls go: the `--direct` endpoint, or what the endpoint mapper answers.
struct TargetResolver: Sendable {
    let configuration: ClientConfiguration

    func target(on loop: any EventLoop, completion: @escaping (Result<PeerAddress, any Error>) -> Void) {
        if let direct = self.configuration.direct {
            completion(.success(direct))
        } else if let epm = self.configuration.epm {
            RPCClient.resolve(epm: epm, fragment: self.configuration.fragment, on: loop, completion: completion)
        } else {
            completion(.failure(PeerError("neither --epm nor --direct given")))
        }
    }
}

func makeStub(size: Int) -> ByteBuffer {
    var stub = ByteBuffer()
    stub.reserveCapacity(size)
    for index in 0..<size { stub.writeInteger(UInt8(truncatingIfNeeded: index &* 31 &+ 7)) }
    return stub
}

// MARK: - bulk and latency

/// One connection doing back-to-back echo calls until the deadline (bulk), recording round trips
/// (latency). With `callsPerConnection`, it reconnects (and binds again) after that many calls.
final class CallLoopWorker {
    private let loop: any EventLoop
    private let configuration: ClientConfiguration
    private let stub: ByteBuffer
    private let recordRoundTrips: Bool
    private var target: PeerAddress?
    private var connection: RPCClientConnection?
    private var callsOnConnection = 0
    private var deadline = NIODeadline.distantFuture
    private var result = WorkerResult()
    private var warmupLeft: Int
    private var promise: EventLoopPromise<WorkerResult>?

    init(loop: any EventLoop, configuration: ClientConfiguration, recordRoundTrips: Bool) {
        self.loop = loop
        self.configuration = configuration
        self.stub = makeStub(size: configuration.stubSize)
        self.recordRoundTrips = recordRoundTrips
        self.warmupLeft = recordRoundTrips ? configuration.warmupCalls : 0
        if recordRoundTrips { self.result.roundTrips.reserveCapacity(1 << 16) }
    }

    /// Resolves the target, connects and binds; then, in latency mode, runs the warm-up calls.
    func prepare() -> EventLoopFuture<Void> {
        let promise = self.loop.makePromise(of: Void.self)
        TargetResolver(configuration: self.configuration).target(on: self.loop) { resolved in
            switch resolved {
            case .failure(let error):
                promise.fail(error)
            case .success(let target):
                self.target = target
                self.reconnect { error in
                    if let error { promise.fail(error) } else { self.warmUp(promise) }
                }
            }
        }
        return promise.futureResult
    }

    var resolvedTarget: PeerAddress? { self.target }

    private func warmUp(_ promise: EventLoopPromise<Void>) {
        guard self.warmupLeft > 0, let connection = self.connection else {
            promise.succeed()
            return
        }
        self.warmupLeft -= 1
        connection.call(opnum: BenchInterface.echo, stub: self.stub, verifier: self.configuration.authTrailer) {
            result in
            switch result {
            case .success: self.warmUp(promise)
            case .failure(let error): promise.fail(error)
            }
        }
    }

    private func reconnect(_ completion: @escaping ((any Error)?) -> Void) {
        guard let target = self.target else {
            completion(PeerError("no target"))
            return
        }
        self.connection?.close()
        self.connection = nil
        self.callsOnConnection = 0
        RPCClient.connectAndBind(
            to: target,
            interface: BenchInterface.syntax,
            fragment: self.configuration.fragment,
            on: self.loop
        ) { result in
            switch result {
            case .success(let connection):
                self.connection = connection
                completion(nil)
            case .failure(let error):
                completion(error)
            }
        }
    }

    func run(until deadline: NIODeadline) -> EventLoopFuture<WorkerResult> {
        let promise = self.loop.makePromise(of: WorkerResult.self)
        self.promise = promise
        self.deadline = deadline
        self.next()
        return promise.futureResult
    }

    private func finish() {
        self.connection?.close()
        self.connection = nil
        self.promise?.succeed(self.result)
        self.promise = nil
    }

    private func next() {
        if NIODeadline.now() >= self.deadline {
            self.finish()
            return
        }
        let limit = self.configuration.callsPerConnection
        if limit > 0, self.callsOnConnection >= limit {
            if self.recordRoundTrips {
                // Latency: a fixed number of calls, then stop.
                self.finish()
                return
            }
            self.reconnect { error in
                if let error {
                    self.result.record(error)
                    self.finish()
                } else {
                    self.next()
                }
            }
            return
        }
        guard let connection = self.connection else {
            self.finish()
            return
        }
        let started = NIODeadline.now()
        let size = self.stub.readableBytes
        connection.call(opnum: BenchInterface.echo, stub: self.stub, verifier: self.configuration.authTrailer) {
            result in
            let now = NIODeadline.now()
            switch result {
            case .success(let call):
                guard call.stubBytes == size else {
                    self.result.record(PeerError("echo returned \(call.stubBytes) bytes for \(size)"))
                    self.finish()
                    return
                }
                self.callsOnConnection += 1
                self.result.calls += 1
                self.result.stubBytesEachWay += size
                self.result.lastCompletion = now
                if self.recordRoundTrips {
                    self.result.roundTrips.append(now.uptimeNanoseconds - started.uptimeNanoseconds)
                }
                self.next()
            case .failure(let error):
                self.result.record(error)
                self.finish()
            }
        }
    }
}

// MARK: - churn

/// Loops a whole client life cycle: endpoint-mapper lookup, connect, bind, call(s), close.
final class ChurnWorker {
    private let loop: any EventLoop
    private let configuration: ClientConfiguration
    private let stub: ByteBuffer
    private var deadline = NIODeadline.distantFuture
    private var result = WorkerResult()
    private var promise: EventLoopPromise<WorkerResult>?
    private static let maximumErrors = 1000

    init(loop: any EventLoop, configuration: ClientConfiguration) {
        self.loop = loop
        self.configuration = configuration
        self.stub = makeStub(size: configuration.stubSize)
    }

    func run(until deadline: NIODeadline) -> EventLoopFuture<WorkerResult> {
        let promise = self.loop.makePromise(of: WorkerResult.self)
        self.promise = promise
        self.deadline = deadline
        self.sequence()
        return promise.futureResult
    }

    private func sequence() {
        guard NIODeadline.now() < self.deadline, self.result.errors < Self.maximumErrors else {
            self.promise?.succeed(self.result)
            self.promise = nil
            return
        }
        TargetResolver(configuration: self.configuration).target(on: self.loop) { resolved in
            switch resolved {
            case .failure(let error):
                self.failed(error)
            case .success(let target):
                RPCClient.connectAndBind(
                    to: target,
                    interface: BenchInterface.syntax,
                    fragment: self.configuration.fragment,
                    on: self.loop
                ) { bound in
                    switch bound {
                    case .failure(let error):
                        self.failed(error)
                    case .success(let connection):
                        self.calls(on: connection, left: max(1, self.configuration.callsPerConnection))
                    }
                }
            }
        }
    }

    private func calls(on connection: RPCClientConnection, left: Int) {
        guard left > 0 else {
            self.result.sequences += 1
            self.result.lastCompletion = NIODeadline.now()
            self.close(connection)
            return
        }
        let size = self.stub.readableBytes
        connection.call(opnum: BenchInterface.echo, stub: self.stub, verifier: self.configuration.authTrailer) {
            result in
            switch result {
            case .success:
                self.result.calls += 1
                self.result.stubBytesEachWay += size
                self.calls(on: connection, left: left - 1)
            case .failure(let error):
                connection.close()
                self.failed(error)
            }
        }
    }

    /// Closes and starts the next sequence once the channel is closed, so sockets do not pile up.
    private func close(_ connection: RPCClientConnection) {
        if connection.isClosed {
            self.sequence()
            return
        }
        connection.onClose = { self.sequence() }
        connection.close()
    }

    private func failed(_ error: any Error) {
        self.result.record(error)
        // Do not spin on a persistent error.
        self.loop.assumeIsolated().scheduleTask(in: .milliseconds(10)) { self.sequence() }
    }
}

// MARK: - idle

/// Opens its share of idle connections (bounded attempts in flight), binds each and holds them.
final class IdleWorker {
    private let loop: any EventLoop
    private let configuration: ClientConfiguration
    private let target: PeerAddress
    private let count: Int
    private var launched = 0
    private var inFlight = 0
    private var established = 0
    private var dropped = 0
    private var connections: [RPCClientConnection] = []
    private var result = WorkerResult()
    private var promise: EventLoopPromise<Void>?
    private var holding = true

    init(loop: any EventLoop, configuration: ClientConfiguration, target: PeerAddress, count: Int) {
        self.loop = loop
        self.configuration = configuration
        self.target = target
        self.count = count
        self.connections.reserveCapacity(count)
    }

    func open() -> EventLoopFuture<Void> {
        let promise = self.loop.makePromise(of: Void.self)
        self.promise = promise
        self.launch()
        return promise.futureResult
    }

    private func launch() {
        while self.inFlight < self.configuration.connectConcurrency, self.launched < self.count {
            self.launched += 1
            self.inFlight += 1
            RPCClient.connectAndBind(
                to: self.target,
                interface: BenchInterface.syntax,
                fragment: self.configuration.fragment,
                on: self.loop
            ) { result in
                self.inFlight -= 1
                switch result {
                case .success(let connection):
                    self.established += 1
                    self.connections.append(connection)
                    connection.onClose = {
                        if self.holding { self.dropped += 1 }
                    }
                case .failure(let error):
                    self.result.record(error)
                }
                self.launch()
            }
        }
        if self.inFlight == 0, self.launched == self.count {
            self.promise?.succeed()
            self.promise = nil
        }
    }

    /// Established and still open connections, errors; then closes everything.
    func finish() -> EventLoopFuture<(established: Int, held: Int, result: WorkerResult)> {
        self.holding = false
        let held = self.established - self.dropped
        let closing = self.connections.compactMap { $0.channel?.close() }
        self.connections.removeAll()
        let result = self.result
        let established = self.established
        return EventLoopFuture.andAllComplete(closing, on: self.loop).map { _ in
            (established: established, held: held, result: result)
        }
    }
}

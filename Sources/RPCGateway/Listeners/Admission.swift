import Logging
import NIOConcurrencyHelpers
import NIOCore
import RPCPolicy

/// Who may open a connection now, and the books of those that did: the global and per-route
/// caps, fair admission per client source (``SourceTable``), connection ids, the registry of open connections (for drain and the status page) and the
/// draining flag. One per listener kind (the gateway's routes, the core listener), both taking
/// ids from one ``ConnectionIDs`` so a connection's `conn` is unique in the process.
///
/// Every ``admit(route:routeLimit:globalLimit:source:sourceLimits:)`` that returns a ticket is
/// balanced by exactly one ``release(_:)``.
///
/// At the global cap a connection is refused (closed at once), not left in the kernel backlog:
/// with per-source limits the cap is reached only by many sources together, and a paused accept
/// queue would hold every later client, good or not, until someone leaves (measured in
/// docs/SECURITY.md, "Fair admission").
final class Admission: Sendable {
    /// An admitted connection, counted in the caps until released.
    struct Ticket: Hashable, Sendable {
        let id: Int
        let route: String
        /// The client's source, counted in ``SourceTable`` (`nil`: not tracked).
        let source: SourceKey?
    }

    /// Why a connection was not admitted.
    enum Refusal: Error, Equatable, Sendable {
        case draining
        /// The global or the route's cap.
        case cap
        /// The client's source is over its own limit; `log` (with `suppressed` refusals since the
        /// last line) says whether to log it now.
        case source(SourceTable.Refusal, SourceKey, log: Bool, suppressed: Int)
    }

    private struct State {
        var active = 0
        var activeByRoute: [String: Int] = [:]
        var connections: [Int: NIOLoopBound<ProxyConnection>] = [:]
        /// Connections still waiting for (or routing) their first bind.
        var awaitingBind: Set<Int> = []
        var draining = false
        var sources = SourceTable()
    }

    private let state = NIOLockedValueBox(State())
    private let ids: ConnectionIDs
    /// Monotonic nanoseconds (injected by tests).
    private let now: @Sendable () -> UInt64

    init(ids: ConnectionIDs, now: @escaping @Sendable () -> UInt64 = { NIODeadline.now().uptimeNanoseconds }) {
        self.ids = ids
        self.now = now
    }

    /// A ticket, or `nil` when draining or a cap is reached (no per-source limits).
    func admit(route: String, routeLimit: Int, globalLimit: Int) -> Ticket? {
        try? self.admit(
            route: route,
            routeLimit: routeLimit,
            globalLimit: globalLimit,
            source: nil,
            sourceLimits: SourceLimits()
        ).get()
    }

    /// A ticket, or why not. The source's own limits are checked first, so a source over them is
    /// refused as such even when the route is full too.
    func admit(
        route: String,
        routeLimit: Int,
        globalLimit: Int,
        source: IPAddress?,
        sourceLimits: SourceLimits
    )
        -> Result<Ticket, Refusal>
    {
        let key = source.map { SourceKey($0, limits: sourceLimits) }
        let now = self.now()
        let result = self.state.withLockedValue { state -> Result<Void, Refusal> in
            guard !state.draining else { return .failure(.draining) }
            if let key {
                let decision = state.sources.admit(route: route, source: key, limits: sourceLimits, now: now)
                if case .refused(let why, let log, let suppressed) = decision {
                    return .failure(.source(why, key, log: log, suppressed: suppressed))
                }
            }
            guard state.active < globalLimit, state.activeByRoute[route, default: 0] < routeLimit else {
                if let key { state.sources.release(route: route, source: key, now: now) }
                return .failure(.cap)
            }
            state.active += 1
            state.activeByRoute[route, default: 0] += 1
            return .success(())
        }
        return result.map { Ticket(id: self.ids.next(), route: route, source: key) }
    }

    /// Lists `connection` for drain and the status page until its ticket is released.
    func register(_ ticket: Ticket, _ connection: NIOLoopBound<ProxyConnection>, awaitingBind: Bool) {
        self.state.withLockedValue { state in
            state.connections[ticket.id] = connection
            if awaitingBind { state.awaitingBind.insert(ticket.id) }
        }
    }

    /// The connection's first bind chose its server.
    func spliced(_ ticket: Ticket) {
        self.state.withLockedValue { _ = $0.awaitingBind.remove(ticket.id) }
    }

    func release(_ ticket: Ticket) {
        let now = self.now()
        self.state.withLockedValue { state in
            if let source = ticket.source { state.sources.release(route: ticket.route, source: source, now: now) }
            state.active -= 1
            state.activeByRoute[ticket.route, default: 1] -= 1
            if state.activeByRoute[ticket.route] == 0 { state.activeByRoute.removeValue(forKey: ticket.route) }
            state.connections.removeValue(forKey: ticket.id)
            state.awaitingBind.remove(ticket.id)
        }
    }

    /// Refuses every later connection; returns the open ones.
    func beginDraining() -> [NIOLoopBound<ProxyConnection>] {
        self.state.withLockedValue { state in
            state.draining = true
            return Array(state.connections.values)
        }
    }

    var isDraining: Bool { self.state.withLockedValue { $0.draining } }
    var active: Int { self.state.withLockedValue { $0.active } }
    var activeByRoute: [String: Int] { self.state.withLockedValue { $0.activeByRoute } }
    var awaitingBind: Int { self.state.withLockedValue { $0.awaitingBind.count } }
    /// Client sources tracked for fair admission.
    var trackedSources: Int { self.state.withLockedValue { $0.sources.count } }

    /// Open connections in id order (the oldest first), without those awaiting their first bind.
    func spliceOrder() -> [NIOLoopBound<ProxyConnection>] {
        self.state.withLockedValue { state in
            state.connections.filter { !state.awaitingBind.contains($0.key) }.sorted { $0.key < $1.key }.map(\.value)
        }
    }

    var connections: [NIOLoopBound<ProxyConnection>] { self.state.withLockedValue { Array($0.connections.values) } }

    /// Asks each connection to close once idle, waits up to `deadline` for all to go, then closes
    /// the rest .
    func drain(_ connections: [NIOLoopBound<ProxyConnection>], deadline: Duration, logger: Logger) async {
        for connection in connections {
            connection.eventLoop.execute { connection.value.drain() }
        }
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        while clock.now < end, self.active > 0 {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let left = self.connections
        if !left.isEmpty {
            logger.warning("drain deadline reached; closing connections", metadata: ["connections": "\(left.count)"])
            for connection in left {
                connection.eventLoop.execute { connection.value.close(.shutdown) }
            }
            // Bounded wait for the closes to run.
            for _ in 0..<40 where self.active > 0 {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }
}

/// Connection ids, unique in the process: they tie a connection's log lines together (`conn`).
package final class ConnectionIDs: Sendable {
    package init() {}

    private let last = NIOLockedValueBox(0)

    package func next() -> Int {
        self.last.withLockedValue { last in
            last += 1
            return last
        }
    }
}

import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Who may open a connection now, and the books of those that did: the global and per-route
/// caps, connection ids, the registry of open connections (for drain and the status page) and the
/// draining flag. One per listener kind (the gateway's routes, the core listener), both taking
/// ids from one ``ConnectionIDs`` so a connection's `conn` is unique in the process.
///
/// Every ``admit(route:routeLimit:globalLimit:)`` that returns a ticket is balanced by exactly one
/// ``release(_:)``.
final class Admission: Sendable {
    /// An admitted connection, counted in the caps until released.
    struct Ticket: Hashable, Sendable {
        let id: Int
        let route: String
    }

    private struct State {
        var active = 0
        var activeByRoute: [String: Int] = [:]
        var connections: [Int: NIOLoopBound<ProxyConnection>] = [:]
        /// Connections still waiting for (or routing) their first bind.
        var awaitingBind: Set<Int> = []
        var draining = false
    }

    private let state = NIOLockedValueBox(State())
    private let ids: ConnectionIDs

    init(ids: ConnectionIDs) {
        self.ids = ids
    }

    /// A ticket, or `nil` when draining or a cap is reached.
    func admit(route: String, routeLimit: Int, globalLimit: Int) -> Ticket? {
        let admitted = self.state.withLockedValue { state -> Bool in
            guard !state.draining, state.active < globalLimit, state.activeByRoute[route, default: 0] < routeLimit
            else {
                return false
            }
            state.active += 1
            state.activeByRoute[route, default: 0] += 1
            return true
        }
        return admitted ? Ticket(id: self.ids.next(), route: route) : nil
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
        self.state.withLockedValue { state in
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

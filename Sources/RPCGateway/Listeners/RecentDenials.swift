import NIOConcurrencyHelpers
package import RPCPolicy
package import RPCWire

/// A fixed-capacity buffer that keeps the last `capacity` elements appended. No I/O, no locking
/// (see ``RecentDenials``).
package struct RingBuffer<Element> {
    package let capacity: Int
    private var storage: [Element] = []
    /// Where the next element goes once the storage is full (the oldest element's index).
    private var head = 0
    /// Elements ever appended, including those overwritten since.
    package private(set) var totalAppended = 0

    /// - Parameter capacity: at least 1.
    package init(capacity: Int) {
        self.capacity = max(1, capacity)
        self.storage.reserveCapacity(self.capacity)
    }

    package mutating func append(_ element: Element) {
        self.totalAppended += 1
        if self.storage.count < self.capacity {
            self.storage.append(element)
        } else {
            self.storage[self.head] = element
            self.head = (self.head + 1) % self.capacity
        }
    }

    /// The kept elements, oldest first.
    package var elements: [Element] {
        Array(self.storage[self.head...] + self.storage[..<self.head])
    }

    package var count: Int { self.storage.count }
}

extension RingBuffer: Sendable where Element: Sendable {}

/// One refused bind or call, as the status page lists it.
package struct DenialRecord: Hashable, Sendable {
    package enum Kind: String, Hashable, Sendable {
        case bind
        case call
    }

    package var time: AuditTimestamp
    package var route: String
    package var kind: Kind
    /// `address:port` of the client.
    package var client: String
    package var listener: GatewayMetrics.Listener
    /// The server endpoint the connection was spliced to.
    package var server: TCPEndpoint
    package var interface: SyntaxID
    /// Calls only.
    package var opnum: UInt16?
    package var authLevel: AuthLevel
    package var decision: PolicyDecision
    package var policy: String

    package init(
        time: AuditTimestamp,
        route: String,
        kind: Kind,
        client: String,
        listener: GatewayMetrics.Listener,
        server: TCPEndpoint,
        interface: SyntaxID,
        opnum: UInt16?,
        authLevel: AuthLevel,
        decision: PolicyDecision,
        policy: String
    ) {
        self.time = time
        self.route = route
        self.kind = kind
        self.client = client
        self.listener = listener
        self.server = server
        self.interface = interface
        self.opnum = opnum
        self.authLevel = authLevel
        self.decision = decision
        self.policy = policy
    }

    /// The catalog name of ``interface``, or `unknown`.
    package var interfaceName: String { InterfaceCatalog.name(of: self.interface) ?? "unknown" }

    /// `rule 3`, `rule 1 (profile block-coercion)` or `default`.
    package var ruleDescription: String { self.decision.origin.map(\.description) ?? "default" }
}

/// The last refused binds and calls over all routes, for the status page. Appending takes a lock
/// once; only refusals are recorded, so the allow path never touches it.
package final class RecentDenials: Sendable {
    /// How many refusals the status page keeps by default.
    package static let defaultCapacity = 50

    private let buffer: NIOLockedValueBox<RingBuffer<DenialRecord>>
    /// Top interfaces and sources, seen and denied (fed by ``RouteRuntime``, Admin/RouteRuntime+Traffic.swift).
    package let traffic = TrafficSummary()

    package init(capacity: Int = RecentDenials.defaultCapacity) {
        self.buffer = NIOLockedValueBox(RingBuffer(capacity: capacity))
    }

    package func record(_ denial: DenialRecord) {
        self.buffer.withLockedValue { $0.append(denial) }
    }

    /// The kept refusals, newest first, and how many were ever recorded.
    package var snapshot: (denials: [DenialRecord], total: Int) {
        self.buffer.withLockedValue { (Array($0.elements.reversed()), $0.totalAppended) }
    }
}

import NIOConcurrencyHelpers
import RPCPolicy
import RPCWire

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

/// What the status page shows of a refused bind or call: its ``AuditRecord``.
extension AuditRecord {
    /// The catalog name of ``interface``, or `unknown`.
    package var interfaceName: String { InterfaceCatalog.name(of: self.interface) ?? "unknown" }

    /// `rule 3`, `rule 1 (profile block-coercion)` or `default`.
    package var ruleDescription: String { self.decision.origin.map(\.description) ?? "default" }

    /// `address:port` of the client.
    package var clientText: String { HostPort.text(self.client) }
}

/// The last refused binds and calls over all routes, for the status page. Appending takes a lock
/// once; only refusals are recorded, so the allow path never touches it.
package final class RecentDenials: Sendable {
    /// How many refusals the status page keeps by default.
    package static let defaultCapacity = 50

    private let buffer: NIOLockedValueBox<RingBuffer<AuditRecord>>
    /// Top interfaces and sources, seen and denied (fed by ``RouteRuntime``, Admin/RouteRuntime+Traffic.swift).
    package let traffic = TrafficSummary()

    package init(capacity: Int = RecentDenials.defaultCapacity) {
        self.buffer = NIOLockedValueBox(RingBuffer(capacity: capacity))
    }

    package func record(_ denial: AuditRecord) {
        self.buffer.withLockedValue { $0.append(denial) }
    }

    /// The kept refusals, newest first, and how many were ever recorded.
    package var snapshot: (denials: [AuditRecord], total: Int) {
        self.buffer.withLockedValue { (Array($0.elements.reversed()), $0.totalAppended) }
    }
}

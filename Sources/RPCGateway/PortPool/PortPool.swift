import NIOConcurrencyHelpers
package import NIOCore
package import RPCWire

/// A ``PortAllocator`` shared by the event loops of one route.
///
/// Every method takes the lock once, delegates to the allocator and, when the number of mappings
/// may have changed, sets the route's `rpcgate_port_mappings_active` gauge. The gauge is set while
/// the lock is held so concurrent updates cannot publish counts out of order, and it is published
/// (as 0) when the pool is created. Exhaustion also counts `rpcgate_port_pool_exhausted_total`.
package final class PortPool: Sendable {
    package typealias Allocation = PortAllocator.Allocation

    private let allocator: NIOLockedValueBox<PortAllocator>
    private let metrics: RouteMetrics

    /// The gateway ports this pool hands out.
    package let ports: ClosedRange<UInt16>
    /// How long a mapping with no connection lives after its last use.
    package let idleTimeout: TimeAmount

    package init(ports: ClosedRange<UInt16>, idleTimeout: TimeAmount, metrics: RouteMetrics) {
        self.allocator = NIOLockedValueBox(PortAllocator(ports: ports, idleTimeout: idleTimeout))
        self.metrics = metrics
        self.ports = ports
        self.idleTimeout = idleTimeout
        metrics.portMappings(active: 0)
    }

    /// See ``PortAllocator/allocate(for:now:)``.
    package func allocate(for server: TCPEndpoint, now: NIODeadline = .now()) -> Allocation {
        self.allocateReportingReleases(for: server, now: now).allocation
    }

    /// See ``PortAllocator/allocate(for:now:released:)``: also returns the ports released by
    /// expiring idle mappings to make room.
    package func allocateReportingReleases(
        for server: TCPEndpoint,
        now: NIODeadline = .now()
    ) -> (allocation: Allocation, released: [UInt16]) {
        self.allocator.withLockedValue { allocator in
            var released: [UInt16] = []
            let allocation = allocator.allocate(for: server, now: now, released: &released)
            switch allocation {
            case .existing:
                break
            case .allocated:
                self.metrics.portMappings(active: allocator.activeMappingCount)
            case .exhausted:
                if !released.isEmpty { self.metrics.portMappings(active: allocator.activeMappingCount) }
                self.metrics.portPoolExhausted()
            }
            return (allocation, released)
        }
    }

    /// See ``PortAllocator/server(forPort:)``.
    package func server(forPort port: UInt16) -> TCPEndpoint? {
        self.allocator.withLockedValue { $0.server(forPort: port) }
    }

    /// See ``PortAllocator/connectionOpened(port:now:)``.
    package func connectionOpened(port: UInt16, now: NIODeadline = .now()) -> TCPEndpoint? {
        self.allocator.withLockedValue { $0.connectionOpened(port: port, now: now) }
    }

    /// See ``PortAllocator/connectionClosed(port:now:)``.
    package func connectionClosed(port: UInt16, now: NIODeadline = .now()) {
        self.allocator.withLockedValue { $0.connectionClosed(port: port, now: now) }
    }

    /// See ``PortAllocator/expireIdle(now:)``.
    package func expireIdle(now: NIODeadline = .now()) -> [UInt16] {
        self.allocator.withLockedValue { allocator in
            let released = allocator.expireIdle(now: now)
            if !released.isEmpty { self.metrics.portMappings(active: allocator.activeMappingCount) }
            return released
        }
    }

    /// A snapshot of every live mapping, ordered by gateway port.
    package var mappings: [PortMapping] {
        self.allocator.withLockedValue { $0.mappings }
    }

    /// How many ports are currently mapped.
    package var activeMappingCount: Int {
        self.allocator.withLockedValue { $0.activeMappingCount }
    }

    /// How many ports the range holds.
    package var capacity: Int { self.ports.count }
}

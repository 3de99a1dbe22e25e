package import NIOCore
package import RPCWire

/// One gateway port and the server endpoint it forwards to.
package struct PortMapping: Hashable, Sendable {
    /// The gateway-owned port that rewritten towers advertise.
    package var gatewayPort: UInt16
    /// The real server endpoint (from the upstream endpoint mapper's tower).
    package var server: TCPEndpoint
    /// Client connections currently open on `gatewayPort`.
    package var activeConnections: Int
    /// Last allocation lookup, connection open or connection close; idle expiry counts from here.
    package var lastUsed: NIODeadline

    package init(gatewayPort: UInt16, server: TCPEndpoint, activeConnections: Int, lastUsed: NIODeadline) {
        self.gatewayPort = gatewayPort
        self.server = server
        self.activeConnections = activeConnections
        self.lastUsed = lastUsed
    }
}

/// Maps server endpoints to the gateway ports of one route.
///
/// A route owns a fixed range of gateway ports. When the upstream endpoint mapper answers with a
/// tower for `10.0.0.5:49667`, the gateway rewrites it to one of its own ports and must later
/// forward connections on that port to `10.0.0.5:49667`. This struct is that bookkeeping and
/// nothing else: no I/O, no clock (every operation takes `now`), no locking (see ``PortPool``).
///
/// Invariants:
/// - The mapping is a bijection between live server endpoints and live gateway ports: one server
///   endpoint has at most one port, and one port maps to at most one server endpoint.
/// - A mapping with open connections never expires, so a port cannot be handed to another server
///   while a client is still talking through it.
/// - A mapping with no open connection expires once `now - lastUsed >= idleTimeout`.
///
/// Ports are handed out round-robin: the search for a free port starts just after the port most
/// recently allocated and wraps around the range. A port released by expiry is therefore reused
/// only after every other free port has been used, which makes it less likely that a client
/// holding a stale tower (cached from an old EPM answer) reaches a different server than the one
/// it looked up.
package struct PortAllocator: Sendable {
    /// The result of ``allocate(for:now:)``.
    package enum Allocation: Hashable, Sendable {
        /// The server already had this port; its mapping was refreshed.
        case existing(UInt16)
        /// The server was given this newly mapped port.
        case allocated(UInt16)
        /// Every port in the range is mapped to a server that is in use or not yet idle.
        case exhausted

        /// The gateway port, unless the range is exhausted.
        package var port: UInt16? {
            switch self {
            case .existing(let port), .allocated(let port): port
            case .exhausted: nil
            }
        }
    }

    private struct Entry: Sendable {
        var server: TCPEndpoint
        var activeConnections: Int
        var lastUsed: NIODeadline
    }

    /// The gateway ports this allocator hands out.
    package let ports: ClosedRange<UInt16>
    /// How long a mapping with no connection lives after its last use.
    package let idleTimeout: TimeAmount

    private var entries: [UInt16: Entry] = [:]
    private var portByServer: [TCPEndpoint: UInt16] = [:]
    /// Offset into `ports` where the search for the next free port starts.
    private var cursor: Int = 0

    package init(ports: ClosedRange<UInt16>, idleTimeout: TimeAmount) {
        self.ports = ports
        self.idleTimeout = idleTimeout
    }

    /// How many ports the range holds.
    package var capacity: Int { self.ports.count }

    /// How many ports are currently mapped.
    package var activeMappingCount: Int { self.entries.count }

    /// Every live mapping, ordered by gateway port.
    package var mappings: [PortMapping] {
        self.entries
            .map { port, entry in
                PortMapping(
                    gatewayPort: port,
                    server: entry.server,
                    activeConnections: entry.activeConnections,
                    lastUsed: entry.lastUsed
                )
            }
            .sorted { $0.gatewayPort < $1.gatewayPort }
    }

    // MARK: - Allocation

    /// The gateway port for `server`: its current port if it has one, else a free port.
    ///
    /// Looking up an existing mapping refreshes it (idle expiry counts from `now`) and does not use
    /// up a port. If no port is free, mappings that are idle at `now` are expired first.
    package mutating func allocate(for server: TCPEndpoint, now: NIODeadline) -> Allocation {
        var released: [UInt16] = []
        return self.allocate(for: server, now: now, released: &released)
    }

    /// ``allocate(for:now:)`` that also reports the ports it released by expiring idle mappings
    /// (only when the range was full), so the caller can log or account for them.
    package mutating func allocate(
        for server: TCPEndpoint,
        now: NIODeadline,
        released: inout [UInt16]
    ) -> Allocation {
        if let port = self.portByServer[server] {
            self.entries[port]!.lastUsed.refresh(to: now)
            return .existing(port)
        }
        if self.entries.count == self.capacity {
            released.append(contentsOf: self.expireIdle(now: now))
        }
        guard let port = self.nextFreePort() else {
            return .exhausted
        }
        self.entries[port] = Entry(server: server, activeConnections: 0, lastUsed: now)
        self.portByServer[server] = port
        return .allocated(port)
    }

    /// The first unmapped port at or after the cursor (wrapping around), advancing the cursor past it.
    ///
    /// O(1) while the range has plenty of free ports; at worst one pass over the range.
    private mutating func nextFreePort() -> UInt16? {
        guard self.entries.count < self.capacity else { return nil }
        let capacity = self.capacity
        for step in 0..<capacity {
            let offset = (self.cursor + step) % capacity
            let port = UInt16(Int(self.ports.lowerBound) + offset)
            if self.entries[port] == nil {
                self.cursor = (offset + 1) % capacity
                return port
            }
        }
        return nil
    }

    // MARK: - Lookup

    /// The server endpoint mapped to `port`, if any. Does not refresh the mapping.
    package func server(forPort port: UInt16) -> TCPEndpoint? {
        self.entries[port]?.server
    }

    // MARK: - Connections

    /// Records a client connection on `port` and returns the server to forward it to, or `nil` if
    /// the port is not mapped (the connection should be refused).
    package mutating func connectionOpened(port: UInt16, now: NIODeadline) -> TCPEndpoint? {
        guard var entry = self.entries[port] else { return nil }
        entry.activeConnections += 1
        entry.lastUsed.refresh(to: now)
        self.entries[port] = entry
        return entry.server
    }

    /// Records the end of a connection counted by ``connectionOpened(port:now:)``. The idle timer
    /// of the mapping restarts at `now`. Unknown ports and unbalanced closes are ignored.
    package mutating func connectionClosed(port: UInt16, now: NIODeadline) {
        guard var entry = self.entries[port] else { return }
        entry.activeConnections = max(0, entry.activeConnections - 1)
        entry.lastUsed.refresh(to: now)
        self.entries[port] = entry
    }

    // MARK: - Expiry

    /// Removes every mapping that has no open connection and was last used at least `idleTimeout`
    /// before `now`. Returns the released ports in ascending order.
    package mutating func expireIdle(now: NIODeadline) -> [UInt16] {
        var released: [UInt16] = []
        for (port, entry) in self.entries
        where entry.activeConnections == 0 && entry.lastUsed + self.idleTimeout <= now {
            released.append(port)
        }
        for port in released {
            if let entry = self.entries.removeValue(forKey: port) {
                self.portByServer[entry.server] = nil
            }
        }
        return released.sorted()
    }
}

extension NIODeadline {
    /// Moves the deadline forward to `now`; never backwards, so an out-of-order `now` cannot shorten
    /// a mapping's life.
    fileprivate mutating func refresh(to now: NIODeadline) {
        if now > self { self = now }
    }
}

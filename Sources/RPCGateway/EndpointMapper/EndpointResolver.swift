import NIOConcurrencyHelpers
package import NIOCore
package import RPCWire

/// Which server endpoint serves an interface, remembered for a short time.
///
/// A pure value: the caller passes the time, so expiry is tested without a clock. Entries are
/// keyed by (server address, server endpoint-mapper port, interface), so a transparent route with
/// many servers keeps them apart. A negative answer ("not registered") is cached too, for the
/// same time. ``invalidate(server:port:)`` drops every entry that names a server endpoint that
/// could not be reached, so a restarted server that moved its endpoints is asked again at once.
package struct EndpointResolutionCache: Sendable {
    package struct Key: Hashable, Sendable {
        package var server: TCPEndpoint
        package var interface: SyntaxID

        package init(server: TCPEndpoint, interface: SyntaxID) {
            self.server = server
            self.interface = interface
        }
    }

    private struct Entry: Sendable {
        var port: UInt16?
        var expires: NIODeadline
    }

    /// How long an answer is trusted.
    package let timeToLive: TimeAmount
    /// Most entries kept; the oldest are dropped beyond it.
    package let capacity: Int
    private var entries: [Key: Entry] = [:]

    package init(timeToLive: TimeAmount = .seconds(30), capacity: Int = 4096) {
        self.timeToLive = timeToLive
        self.capacity = capacity
    }

    package var count: Int { self.entries.count }

    /// The cached answer: `.some(port)` (port `nil`: not registered), or `nil` when unknown or
    /// expired.
    package mutating func lookUp(_ key: Key, now: NIODeadline) -> UInt16?? {
        guard let entry = self.entries[key] else { return nil }
        guard entry.expires > now else {
            self.entries.removeValue(forKey: key)
            return nil
        }
        return .some(entry.port)
    }

    package mutating func store(_ port: UInt16?, for key: Key, now: NIODeadline) {
        if self.entries.count >= self.capacity, self.entries[key] == nil {
            self.entries = self.entries.filter { $0.value.expires > now }
            if self.entries.count >= self.capacity,
                let oldest = self.entries.min(by: { $0.value.expires < $1.value.expires })?.key
            {
                self.entries.removeValue(forKey: oldest)
            }
        }
        self.entries[key] = Entry(port: port, expires: now + self.timeToLive)
    }

    /// Forgets every answer that pointed at `port` on `address`.
    package mutating func invalidate(address: IPv4Address, port: UInt16) {
        self.entries = self.entries.filter { !($0.key.server.address == address && $0.value.port == port) }
    }
}

/// Resolves interfaces at a server's endpoint mapper (`ept_map`), through an
/// ``EndpointResolutionCache``. Shared by the connections of a route, on every event loop.
package final class EndpointResolver: Sendable {
    private let cache: NIOLockedValueBox<EndpointResolutionCache>
    private let client: EndpointMapperClient

    package init(
        timeToLive: TimeAmount = .seconds(30),
        timeout: Duration = .seconds(5),
        limits: WireLimits = WireLimits()
    ) {
        self.cache = NIOLockedValueBox(EndpointResolutionCache(timeToLive: timeToLive))
        self.client = EndpointMapperClient(configuration: .init(timeout: timeout, limits: limits))
    }

    /// The server port serving `interface` at the endpoint mapper `mapper`, or `nil` when it is
    /// not registered there.
    package func resolve(
        _ interface: SyntaxID,
        at mapper: TCPEndpoint,
        group: any EventLoopGroup
    ) async throws -> UInt16? {
        let key = EndpointResolutionCache.Key(server: mapper, interface: interface)
        if let cached = self.cache.withLockedValue({ $0.lookUp(key, now: .now()) }) {
            return cached
        }
        let port = try await self.client.map(interface, host: "\(mapper.address)", port: Int(mapper.port), group: group)
        self.cache.withLockedValue { $0.store(port, for: key, now: .now()) }
        return port
    }

    /// The cached answer only (no network): used to check an `alter_context` synchronously.
    package func cached(_ interface: SyntaxID, at mapper: TCPEndpoint) -> UInt16?? {
        let key = EndpointResolutionCache.Key(server: mapper, interface: interface)
        return self.cache.withLockedValue { $0.lookUp(key, now: .now()) }
    }

    /// Records what an endpoint-mapper reply relayed through the gateway said, so the cache is
    /// never older than the port mappings handed out from the same reply.
    package func remember(_ interface: SyntaxID, at mapper: TCPEndpoint, port: UInt16) {
        let key = EndpointResolutionCache.Key(server: mapper, interface: interface)
        self.cache.withLockedValue { $0.store(port, for: key, now: .now()) }
    }

    /// A connection to `address:port` failed: forget the answers that led there.
    package func invalidate(address: IPv4Address, port: UInt16) {
        self.cache.withLockedValue { $0.invalidate(address: address, port: port) }
    }
}

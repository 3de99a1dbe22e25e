import NIOConcurrencyHelpers
public import NIOCore
public import RPCPolicy
public import RPCWire

/// The server endpoints a client was told about in replies the gateway could read, each open for
/// a while: what a transparent route with `pinholes: learned` admits on its `server_ports_listen`.
///
/// Fed by the endpoint-mapper role (the ncacn_ip_tcp towers of unprotected and signed replies;
/// sealed ones cannot be read). A DCOM role can feed it from OXID resolutions and activation
/// replies it can read (``open(client:server:now:)``). Thread-safe; bounded.
public final class PinholeTable: Sendable {
    private let pinholes: NIOLockedValueBox<PinholeSet>

    /// - Parameters:
    ///   - lifetime: how long a learned endpoint stays open after it was last named.
    ///   - capacity: most (client, server endpoint) pairs kept.
    public init(lifetime: Duration, capacity: Int = PinholeSet.defaultCapacity) {
        self.pinholes = NIOLockedValueBox(PinholeSet(lifetime: TimeAmount(lifetime), capacity: capacity))
    }

    /// `client` was told that `server` serves something it may use: open (or refresh) it.
    public func open(client: IPAddress, server: TCPEndpoint, now: NIODeadline = .now()) {
        self.pinholes.withLockedValue { $0.open(client: client, server: server, now: now) }
    }

    /// Whether `client` may connect to `server` now.
    public func isOpen(client: IPAddress, server: TCPEndpoint, now: NIODeadline = .now()) -> Bool {
        self.pinholes.withLockedValue { $0.isOpen(client: client, server: server, now: now) }
    }

    /// Pairs held (expired ones included until the next purge).
    public var count: Int { self.pinholes.withLockedValue { $0.count } }
}

/// The pure core of ``PinholeTable``: (client, server endpoint) pairs with an expiry, at most
/// `capacity` of them. When full, expired pairs are purged; if none expired, the pair closest to
/// expiry is dropped, so a flood of lookups costs the oldest pinholes, never memory.
public struct PinholeSet: Sendable {
    public static let defaultCapacity = 16_384

    struct Key: Hashable, Sendable {
        var client: IPAddress
        var server: TCPEndpoint
    }

    let lifetime: TimeAmount
    let capacity: Int
    private var expiries: [Key: NIODeadline] = [:]

    public init(lifetime: TimeAmount, capacity: Int = PinholeSet.defaultCapacity) {
        self.lifetime = lifetime
        self.capacity = max(1, capacity)
    }

    public var count: Int { self.expiries.count }

    public mutating func open(client: IPAddress, server: TCPEndpoint, now: NIODeadline) {
        let key = Key(client: client, server: server)
        if self.expiries[key] == nil, self.expiries.count >= self.capacity {
            self.expiries = self.expiries.filter { $0.value > now }
            if self.expiries.count >= self.capacity, let oldest = self.expiries.min(by: { $0.value < $1.value }) {
                self.expiries.removeValue(forKey: oldest.key)
            }
        }
        self.expiries[key] = now + self.lifetime
    }

    public func isOpen(client: IPAddress, server: TCPEndpoint, now: NIODeadline) -> Bool {
        guard let expiry = self.expiries[Key(client: client, server: server)] else { return false }
        return expiry > now
    }
}

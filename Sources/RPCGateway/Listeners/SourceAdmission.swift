import RPCPolicy

/// A client address reduced to the prefix that counts as one source: each IPv4 address (/32) and
/// each IPv6 /64 by default, since a host picks its own address inside its /64 (RFC 4941).
struct SourceKey: Hashable, Sendable, CustomStringConvertible {
    let address: IPAddress
    let prefixLength: Int

    init(_ address: IPAddress, limits: SourceLimits) {
        switch address {
        case .v4(let value):
            let length = min(max(limits.ipv4PrefixLength, 0), 32)
            let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - length)
            self.address = .v4(value & mask)
            self.prefixLength = length
        case .v6(let high, let low):
            let length = min(max(limits.ipv6PrefixLength, 0), 128)
            let highMask: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << (64 - length))
            let lowMask: UInt64 = length <= 64 ? 0 : (length == 128 ? ~0 : ~UInt64(0) << (128 - length))
            self.address = .v6(high & highMask, low & lowMask)
            self.prefixLength = length
        }
    }

    /// `10.0.0.7`, or `2001:db8:1:2::/64`: the address alone when the prefix is the whole address.
    var description: String {
        switch self.address {
        case .v4 where self.prefixLength == 32, .v6 where self.prefixLength == 128:
            return "\(self.address)"
        default:
            return "\(self.address)/\(self.prefixLength)"
        }
    }
}

/// Per-source books for fair admission: concurrent connections and a rate limit per source, and
/// when a refusal was last logged. Pure: the caller passes the time (monotonic nanoseconds).
///
/// Rate: the generic cell rate algorithm (ITU-T I.371), a token bucket kept as one time: the
/// source's "theoretical arrival time" moves one emission interval (1 s / rate) per admitted
/// connection; a connection is refused while that time is more than the burst tolerance ahead of
/// now. A source is idle (and its entry dropped) once it has no connection, its bucket is full
/// again and its last refusal log is an interval old.
///
/// Bounded: an entry with open connections is kept (those are bounded by the connection caps);
/// idle entries are dropped at release, and entries without connections are evicted once the
/// table holds ``maximumIdleSources`` more than the active ones.
struct SourceTable {
    enum Refusal: Equatable, Sendable, CustomStringConvertible {
        /// The source has `maximumConnections` open on the route.
        case concurrent
        /// The source opened connections faster than `newConnectionsPerSecond` (beyond the burst).
        case rate

        var description: String {
            switch self {
            case .concurrent: "too many concurrent connections from this source"
            case .rate: "too many new connections per second from this source"
            }
        }
    }

    enum Decision: Equatable, Sendable {
        case admitted
        /// Refused; `log` says whether to write a line now (at most one per source per log
        /// interval), and `suppressed` how many refusals of this source went unlogged since.
        case refused(Refusal, log: Bool, suppressed: Int)
    }

    private struct Entry {
        var active = 0
        /// GCRA theoretical arrival time, in nanoseconds.
        var theoreticalArrival: UInt64 = 0
        var lastLogged: UInt64?
        var suppressed = 0
    }

    private struct Key: Hashable {
        var route: String
        var source: SourceKey
    }

    private var entries: [Key: Entry] = [:]
    /// Sources that have open connections.
    private var activeSources = 0
    let logInterval: UInt64
    let maximumIdleSources: Int

    /// - Parameters:
    ///   - logIntervalNanoseconds: at most one refusal line per source per this long.
    ///   - maximumIdleSources: entries without open connections kept (for their rate and log state).
    init(logIntervalNanoseconds: UInt64 = 60_000_000_000, maximumIdleSources: Int = 16_384) {
        self.logInterval = logIntervalNanoseconds
        self.maximumIdleSources = maximumIdleSources
    }

    /// Sources tracked (for tests and the bound).
    var count: Int { self.entries.count }

    /// Counts a new connection of `source` on `route`, or says why it is refused.
    mutating func admit(route: String, source: SourceKey, limits: SourceLimits, now: UInt64) -> Decision {
        let key = Key(route: route, source: source)
        if self.entries[key] == nil, self.entries.count - self.activeSources >= self.maximumIdleSources {
            self.evictIdle(now: now)
        }
        var entry = self.entries[key] ?? Entry()
        let refusal: Refusal?
        let interval = Self.emissionInterval(limits)
        let tolerance = interval * UInt64(max(limits.burst - 1, 0))
        let arrival = max(entry.theoreticalArrival, now)
        if entry.active >= limits.maximumConnections {
            refusal = .concurrent
        } else if limits.newConnectionsPerSecond > 0, arrival - now > tolerance {
            refusal = .rate
        } else {
            refusal = nil
        }
        guard let refusal else {
            if entry.active == 0 { self.activeSources += 1 }
            entry.active += 1
            if limits.newConnectionsPerSecond > 0 { entry.theoreticalArrival = arrival + interval }
            self.entries[key] = entry
            return .admitted
        }
        let decision: Decision
        if let last = entry.lastLogged, now &- last < self.logInterval {
            entry.suppressed += 1
            decision = .refused(refusal, log: false, suppressed: 0)
        } else {
            decision = .refused(refusal, log: true, suppressed: entry.suppressed)
            entry.lastLogged = now
            entry.suppressed = 0
        }
        self.entries[key] = entry
        return decision
    }

    /// The connection of `source` admitted on `route` closed.
    mutating func release(route: String, source: SourceKey, now: UInt64) {
        let key = Key(route: route, source: source)
        guard var entry = self.entries[key], entry.active > 0 else { return }
        entry.active -= 1
        if entry.active == 0 { self.activeSources -= 1 }
        if self.isIdle(entry, now: now) {
            self.entries.removeValue(forKey: key)
        } else {
            self.entries[key] = entry
        }
    }

    /// Open connections of `source` on `route` (for tests and the status page).
    func active(route: String, source: SourceKey) -> Int {
        self.entries[Key(route: route, source: source)]?.active ?? 0
    }

    private func isIdle(_ entry: Entry, now: UInt64) -> Bool {
        guard entry.active == 0, entry.theoreticalArrival <= now else { return false }
        guard let last = entry.lastLogged else { return true }
        return now &- last >= self.logInterval
    }

    /// Drops idle entries; if the table is still full, every entry without open connections
    /// (their rate and log state is lost: a fresh burst, one more log line).
    private mutating func evictIdle(now: UInt64) {
        self.entries = self.entries.filter { !self.isIdle($0.value, now: now) }
        if self.entries.count - self.activeSources >= self.maximumIdleSources {
            self.entries = self.entries.filter { $0.value.active > 0 }
        }
    }

    private static func emissionInterval(_ limits: SourceLimits) -> UInt64 {
        guard limits.newConnectionsPerSecond > 0 else { return 0 }
        return 1_000_000_000 / UInt64(limits.newConnectionsPerSecond)
    }
}

import NIOConcurrencyHelpers

/// Remembers which keys were already acted on (say, warned about), so a log line is written once
/// per client or per endpoint rather than once per connection. Bounded: when `capacity` keys are
/// held the table starts over, so a flood of distinct keys costs at most a repeated line per key,
/// never memory. Thread-safe.
final class OnceTable<Key: Hashable & Sendable>: Sendable {
    private let seen: NIOLockedValueBox<Set<Key>>
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        self.seen = NIOLockedValueBox([])
    }

    /// `true` the first time `key` is offered (since the table last started over).
    func first(_ key: Key) -> Bool {
        self.seen.withLockedValue { seen in
            if seen.contains(key) { return false }
            if seen.count >= self.capacity { seen.removeAll(keepingCapacity: true) }
            seen.insert(key)
            return true
        }
    }
}

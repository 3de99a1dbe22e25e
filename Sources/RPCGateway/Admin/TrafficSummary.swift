import NIOConcurrencyHelpers
package import RPCWire

/// How often each interface and each client address was seen and refused since start, for the
/// status page's "top interfaces" and "top sources" (the learning view: what do clients use?).
///
/// Counted: every policy decision on a mapped port (each bind context, and each call the policy
/// inspected). Memory is bounded: at most ``maximumKeys`` interfaces and as many sources are
/// counted by name; decisions beyond that are added to ``Snapshot/otherSources`` (or
/// `otherInterfaces`), so a scan from many addresses cannot grow the table.
package final class TrafficSummary: Sendable {
    package static let maximumKeys = 4096
    /// Rows the status page shows per table.
    package static let topCount = 10

    package struct Counts: Hashable, Sendable {
        package var seen = 0
        package var denied = 0

        package init(seen: Int = 0, denied: Int = 0) {
            self.seen = seen
            self.denied = denied
        }
    }

    package struct Row<Key: Hashable & Sendable>: Hashable, Sendable {
        package var key: Key
        package var counts: Counts
    }

    package struct Snapshot: Hashable, Sendable {
        /// Most seen first (ties: most denied, then key order).
        package var interfaces: [Row<SyntaxID>]
        package var sources: [Row<String>]
        /// Most denied first.
        package var deniedInterfaces: [Row<SyntaxID>]
        package var deniedSources: [Row<String>]
        package var otherInterfaces: Counts
        package var otherSources: Counts

        package static let empty = Snapshot(
            interfaces: [],
            sources: [],
            deniedInterfaces: [],
            deniedSources: [],
            otherInterfaces: Counts(),
            otherSources: Counts()
        )
    }

    private struct State {
        var interfaces: [SyntaxID: Counts] = [:]
        var sources: [String: Counts] = [:]
        var otherInterfaces = Counts()
        var otherSources = Counts()
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    /// Counts one decision about `interface` for the client at `source` (an address, no port).
    package func record(interface: SyntaxID, source: String, denied: Bool) {
        self.state.withLockedValue { state in
            Self.count(&state.interfaces, &state.otherInterfaces, interface, denied)
            Self.count(&state.sources, &state.otherSources, source, denied)
        }
    }

    private static func count<Key: Hashable>(
        _ table: inout [Key: Counts],
        _ other: inout Counts,
        _ key: Key,
        _ denied: Bool
    ) {
        if table[key] == nil, table.count >= Self.maximumKeys {
            other.seen += 1
            if denied { other.denied += 1 }
            return
        }
        table[key, default: Counts()].seen += 1
        if denied { table[key, default: Counts()].denied += 1 }
    }

    package var snapshot: Snapshot {
        let state = self.state.withLockedValue { $0 }
        return Snapshot(
            interfaces: Self.top(state.interfaces, by: \.seen, then: \.denied, order: { "\($0)" }),
            sources: Self.top(state.sources, by: \.seen, then: \.denied, order: { $0 }),
            deniedInterfaces: Self.top(
                state.interfaces.filter { $0.value.denied > 0 },
                by: \.denied,
                then: \.seen,
                order: { "\($0)" }
            ),
            deniedSources: Self.top(
                state.sources.filter { $0.value.denied > 0 },
                by: \.denied,
                then: \.seen,
                order: { $0 }
            ),
            otherInterfaces: state.otherInterfaces,
            otherSources: state.otherSources
        )
    }

    private static func top<Key: Hashable & Sendable>(
        _ table: [Key: Counts],
        by primary: KeyPath<Counts, Int>,
        then secondary: KeyPath<Counts, Int>,
        order: (Key) -> String
    ) -> [Row<Key>] {
        table.sorted { lhs, rhs in
            if lhs.value[keyPath: primary] != rhs.value[keyPath: primary] {
                return lhs.value[keyPath: primary] > rhs.value[keyPath: primary]
            }
            if lhs.value[keyPath: secondary] != rhs.value[keyPath: secondary] {
                return lhs.value[keyPath: secondary] > rhs.value[keyPath: secondary]
            }
            return order(lhs.key) < order(rhs.key)
        }.prefix(Self.topCount).map { Row(key: $0.key, counts: $0.value) }
    }
}

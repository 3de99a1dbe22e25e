/// A set that keeps its first element inline and uses a `Set` only from the second on.
///
/// A connection almost always has one call in flight at a time: with this, tracking it neither
/// hashes nor allocates, and an idle connection holds no set storage (a `Set` keeps its capacity
/// after its last element is removed; the massif profile counted it per idle connection).
struct InlineFirstSet<Element: Hashable & Sendable>: Sendable {
    /// Non-`nil` whenever the set is not empty.
    private var first: Element?
    private var others: Set<Element> = []

    init() {}

    var isEmpty: Bool { self.first == nil }

    var count: Int { self.first == nil ? 0 : 1 + self.others.count }

    func contains(_ element: Element) -> Bool {
        self.first == element || (!self.others.isEmpty && self.others.contains(element))
    }

    /// Inserts `element`; `false` when it was already there.
    @discardableResult
    mutating func insert(_ element: Element) -> Bool {
        guard let first = self.first else {
            self.first = element
            return true
        }
        if first == element { return false }
        return self.others.insert(element).inserted
    }

    mutating func remove(_ element: Element) {
        if self.first == element {
            self.first = self.others.popFirst()
        } else if !self.others.isEmpty {
            self.others.remove(element)
        } else {
            return
        }
        // Give the storage back once the spill-over is empty again.
        if self.others.isEmpty { self.others = [] }
    }

    var elements: [Element] {
        guard let first = self.first else { return [] }
        return [first] + self.others
    }
}

extension InlineFirstSet: Hashable {
    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.count == rhs.count && lhs.elements.allSatisfy(rhs.contains)
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(Set(self.elements))
    }
}

/// A dictionary that keeps its first entry inline and uses a `Dictionary` only from the second
/// on: a bound connection almost always has one accepted presentation context, looked up on
/// every request (no hashing then), and holds no dictionary storage for it.
struct InlineFirstDictionary<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    /// Non-`nil` whenever the dictionary is not empty.
    private var first: (key: Key, value: Value)?
    private var others: [Key: Value] = [:]

    init() {}

    var isEmpty: Bool { self.first == nil }

    var count: Int { self.first == nil ? 0 : 1 + self.others.count }

    subscript(key: Key) -> Value? {
        guard let first = self.first else { return nil }
        if first.key == key { return first.value }
        return self.others.isEmpty ? nil : self.others[key]
    }

    /// Adds or replaces the entry for `key` (entries are never removed one by one).
    mutating func set(_ value: Value, for key: Key) {
        if let first = self.first, first.key != key {
            self.others[key] = value
        } else {
            self.first = (key, value)
        }
    }

    /// The entries in key order.
    func sortedByKey() -> [(key: Key, value: Value)] where Key: Comparable {
        guard let first = self.first else { return [] }
        return ([first] + self.others.map { (key: $0.key, value: $0.value) }).sorted { $0.key < $1.key }
    }
}

extension InlineFirstDictionary: Equatable where Value: Equatable {
    static func == (lhs: Self, rhs: Self) -> Bool {
        guard lhs.count == rhs.count else { return false }
        guard let first = lhs.first else { return true }
        return rhs[first.key] == first.value && lhs.others.allSatisfy { rhs[$0.key] == $0.value }
    }
}

extension InlineFirstDictionary: Hashable where Value: Hashable {
    func hash(into hasher: inout Hasher) {
        var all = self.others
        if let first = self.first { all[first.key] = first.value }
        hasher.combine(all)
    }
}

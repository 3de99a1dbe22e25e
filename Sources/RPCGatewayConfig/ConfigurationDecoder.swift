import Yams

/// A location in the document, printed the way users would write it: `routes[0].ports`,
/// `policies.dc.rules[2].interfaces[1]`.
struct ConfigPath: CustomStringConvertible, Sendable {
    enum Component: Sendable {
        case key(String)
        case index(Int)
    }

    var components: [Component] = []

    static let root = ConfigPath()

    func key(_ name: String) -> ConfigPath {
        var copy = self
        copy.components.append(.key(name))
        return copy
    }

    func index(_ index: Int) -> ConfigPath {
        var copy = self
        copy.components.append(.index(index))
        return copy
    }

    var description: String {
        var result = ""
        for component in self.components {
            switch component {
            case .key(let name):
                if !name.isEmpty, name.unicodeScalars.allSatisfy(Self.isPlainKeyScalar) {
                    result += result.isEmpty ? name : ".\(name)"
                } else {
                    result += "[\"\(name)\"]"
                }
            case .index(let index):
                result += "[\(index)]"
            }
        }
        return result
    }

    private static func isPlainKeyScalar(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", "_", "-": return true
        default: return false
        }
    }
}

/// A mapping's entries by key, after the unknown-key check and `<<` merges.
struct Fields {
    var path: ConfigPath
    /// The mapping itself, for the location of "missing key" problems.
    var node: Node
    var entries: [String: (key: Node, value: Node)]

    subscript(_ key: String) -> Node? { self.entries[key]?.value }

    func keyNode(_ key: String) -> Node? { self.entries[key]?.key }
}

/// Walks the composed YAML tree, collecting every problem instead of stopping at the first.
///
/// Each `decode…` function reports what is wrong with its part of the tree and returns `nil` for
/// values it could not make sense of, so later checks can skip them without piling up follow-on
/// errors.
struct ConfigurationDecoder {
    let fileName: String
    private(set) var problems: [ConfigurationProblem] = []

    init(fileName: String) {
        self.fileName = fileName
    }

    // MARK: - Reporting

    mutating func report(_ message: String, at path: ConfigPath, node: Node?) {
        self.report(message, at: path, mark: node?.mark)
    }

    mutating func report(_ message: String, at path: ConfigPath, mark: Mark?) {
        self.problems.append(
            ConfigurationProblem(
                fileName: self.fileName,
                keyPath: path.description,
                line: mark?.line,
                column: mark?.column,
                message: message
            )
        )
    }

    // MARK: - Mappings

    /// The entries of a mapping node. Keys outside `known` are reported (with a suggestion when a
    /// known key is close), as are missing `required` keys. `nil` when `node` is not a mapping.
    mutating func fields(
        of node: Node,
        at path: ConfigPath,
        known: [String],
        required: [String] = [],
        what: String = "a mapping"
    ) -> Fields? {
        guard case .mapping(let mapping) = node else {
            self.report("expected \(what), found \(Self.describe(node))", at: path, node: node)
            return nil
        }
        var entries: [String: (key: Node, value: Node)] = [:]
        for (key, value) in self.flattenedPairs(of: mapping, at: path) {
            guard case .scalar(let scalar) = key, !Self.isNull(key) else {
                self.report("keys must be plain names, found \(Self.describe(key))", at: path, node: key)
                continue
            }
            let name = scalar.string
            guard known.contains(name) else {
                var message = "unknown key \"\(name)\""
                if let hint = Suggestions.didYouMean(name, among: known) {
                    message += "; \(hint)"
                } else {
                    message += " (expected \(Suggestions.list(known, conjunction: "or")))"
                }
                self.report(message, at: path.key(name), node: key)
                continue
            }
            // Explicit keys come first in `flattenedPairs`, so they win over merged ones.
            if entries[name] == nil {
                entries[name] = (key, value)
            }
        }
        for name in required where entries[name] == nil {
            self.report("missing required key \"\(name)\"", at: path, node: node)
        }
        return Fields(path: path, node: node, entries: entries)
    }

    /// The pairs of a mapping with YAML merge keys (`<<: *defaults`) expanded: the mapping's own
    /// pairs first, then merged pairs in order (the YAML merge-key rule: earlier ones win).
    private mutating func flattenedPairs(of mapping: Node.Mapping, at path: ConfigPath) -> [(Node, Node)] {
        var own: [(Node, Node)] = []
        var merged: [(Node, Node)] = []
        for (key, value) in mapping {
            guard Self.tagName(of: key) == .merge else {
                own.append((key, value))
                continue
            }
            let sources: [Node]
            if case .sequence(let sequence) = value { sources = Array(sequence) } else { sources = [value] }
            for source in sources {
                guard case .mapping(let inner) = source else {
                    self.report("\"<<\" merges mappings only, found \(Self.describe(source))", at: path, node: source)
                    continue
                }
                merged += self.flattenedPairs(of: inner, at: path)
            }
        }
        return own + merged
    }

    // MARK: - Scalars

    /// The text of a scalar. Any scalar is accepted (`name: 123` is the name "123"); a missing
    /// value or a list or mapping is reported.
    mutating func string(_ node: Node, at path: ConfigPath, what: String = "a string") -> String? {
        guard case .scalar(let scalar) = node else {
            self.report("expected \(what), found \(Self.describe(node))", at: path, node: node)
            return nil
        }
        guard !Self.isNull(node) else {
            self.report("has no value; expected \(what)", at: path, node: node)
            return nil
        }
        return scalar.string
    }

    /// A decimal integer written as a YAML number (not a quoted string) within `range`.
    mutating func integer(
        _ node: Node,
        at path: ConfigPath,
        in range: ClosedRange<Int>,
        what: String = "a number"
    ) -> Int? {
        guard case .scalar(let scalar) = node else {
            self.report("expected \(what), found \(Self.describe(node))", at: path, node: node)
            return nil
        }
        guard !Self.isNull(node) else {
            self.report("has no value; expected \(what)", at: path, node: node)
            return nil
        }
        let text = scalar.string
        guard let value = ValueParsers.signedDecimal(text) else {
            self.report("expected \(what), found \(Self.describe(node))", at: path, node: node)
            return nil
        }
        guard Self.tagName(of: node) == .int else {
            self.report(
                "expected \(what), found the string \"\(text)\" (write it without quotes)",
                at: path,
                node: node
            )
            return nil
        }
        guard range.contains(value) else {
            self.report("\(text) is out of range (\(range.lowerBound)-\(range.upperBound))", at: path, node: node)
            return nil
        }
        return value
    }

    /// A port number, 1-65535.
    mutating func port(_ node: Node, at path: ConfigPath) -> UInt16? {
        self.integer(node, at: path, in: 1...65535, what: "a port number").map { UInt16($0) }
    }

    /// A duration: `500ms`, `30s`, `10m`, `1h`, combinations such as `1m30s`, or a bare number of
    /// seconds. Must be positive.
    mutating func duration(_ node: Node, at path: ConfigPath) -> Duration? {
        guard let text = self.string(node, at: path, what: "a duration such as 30s") else { return nil }
        switch ValueParsers.duration(text) {
        case .success(let duration):
            return duration
        case .failure(let failure):
            self.report(failure.message(for: text), at: path, node: node)
            return nil
        }
    }

    /// The items of a list. With `allowingSingle`, a lone scalar counts as a list of one, so
    /// `interfaces: samr` means `interfaces: [samr]`.
    mutating func list(
        _ node: Node,
        at path: ConfigPath,
        allowingSingle: Bool = false,
        what: String = "a list"
    ) -> [(node: Node, path: ConfigPath)]? {
        switch node {
        case .sequence(let sequence):
            return sequence.enumerated().map { ($0.element, path.index($0.offset)) }
        case .scalar where allowingSingle && !Self.isNull(node):
            return [(node, path)]
        default:
            if Self.isNull(node) {
                self.report("has no value; expected \(what)", at: path, node: node)
            } else {
                self.report("expected \(what), found \(Self.describe(node))", at: path, node: node)
            }
            return nil
        }
    }

    // MARK: - Helpers

    /// The node's resolved tag (`!!int` for a plain `135`, `!!str` for `"135"`).
    static func tagName(of node: Node) -> Tag.Name {
        Tag.Name(rawValue: node.tag.rawValue)
    }

    static func isNull(_ node: Node) -> Bool {
        guard case .scalar = node else { return false }
        return Self.tagName(of: node) == .null
    }

    /// How a node reads in a message: `a list`, `a mapping`, `nothing`, `"text"`.
    static func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let scalar):
            if self.isNull(node) { return "nothing" }
            return "\"\(scalar.string)\""
        }
    }
}

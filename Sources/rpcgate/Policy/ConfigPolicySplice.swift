import Yams

/// Replaces entries of a configuration's `policies:` section in the file's own text, so that
/// everything else (comments, order, quoting) is printed as the operator wrote it.
///
/// Uses the YAML parser's positions: the top-level `policies` key and the key after it bound the
/// section; each policy's key and the next one bound an entry. The section must be a block
/// mapping (`policies:` on a line of its own, one entry per key), which is how every shipped
/// configuration writes it.
struct ConfigPolicySplice {
    struct SpliceError: Error, CustomStringConvertible {
        var description: String
    }

    let lines: [Substring]
    /// Zero-based line range of the whole section, `policies:` line included.
    let section: Range<Int>
    /// Policy names in file order, with the zero-based line range of each entry.
    let entries: [(name: String, lines: Range<Int>)]
    /// The column of the policy keys (their indentation).
    let indent: Int

    init(text: String) throws {
        self.lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let root = try Yams.compose(yaml: text), let mapping = root.mapping else {
            throw SpliceError(description: "the configuration is not a YAML mapping")
        }
        let keys = Array(mapping.keys)
        guard let position = keys.firstIndex(where: { $0.string == "policies" }),
            let keyLine = keys[position].mark?.line
        else {
            throw SpliceError(description: "the configuration has no policies section")
        }
        let end =
            position + 1 < keys.count ? (keys[position + 1].mark?.line ?? self.lines.count + 1) - 1 : self.lines.count
        let start = keyLine - 1
        self.section = start..<Self.trimmed(self.lines, start..<end)
        guard let policies = mapping["policies"], let entries = policies.mapping else {
            throw SpliceError(description: "policies is not a block mapping of policy names")
        }
        let entryKeys = Array(entries.keys)
        guard entryKeys.allSatisfy({ ($0.mark?.line ?? 0) - 1 > start }) else {
            throw SpliceError(description: "write the policies section in block style (policies: on a line of its own)")
        }
        var located: [(String, Range<Int>)] = []
        for (index, key) in entryKeys.enumerated() {
            guard let name = key.string, let line = key.mark?.line else { continue }
            let next =
                index + 1 < entryKeys.count ? (entryKeys[index + 1].mark?.line ?? 0) - 1 : self.section.upperBound
            located.append((name, (line - 1)..<Self.trimmed(self.lines, (line - 1)..<next)))
        }
        self.entries = located
        self.indent = max(1, (entryKeys.first?.mark?.column ?? 3) - 1)
    }

    /// The end of `range` without its trailing blank and comment-only lines (they belong to
    /// what follows).
    private static func trimmed(_ lines: [Substring], _ range: Range<Int>) -> Int {
        var end = min(range.upperBound, lines.count)
        while end > range.lowerBound + 1 {
            let line = lines[end - 1].drop { $0 == " " || $0 == "\t" }
            guard line.isEmpty || line.hasPrefix("#") else { break }
            end -= 1
        }
        return end
    }

    /// The text with the entries named in `replacements` replaced by their lines (entries not
    /// named are kept as written) and `header` comment lines at the top of the section.
    func text(replacing replacements: [String: [String]], header: [String]) -> String {
        var output = Array(self.lines[..<self.section.lowerBound]).map(String.init)
        output.append(String(self.lines[self.section.lowerBound]))
        let pad = String(repeating: " ", count: self.indent)
        output += header.map { "\(pad)# \($0)" }
        var cursor = self.section.lowerBound + 1
        for entry in self.entries {
            // Lines between entries are kept, except the comment lines right above a replaced
            // entry: they describe the policy being replaced.
            var between = Array(self.lines[cursor..<entry.lines.lowerBound])
            if let replacement = replacements[entry.name] {
                while let last = between.last, last.drop(while: { $0 == " " || $0 == "\t" }).hasPrefix("#") {
                    between.removeLast()
                }
                output += between.map(String.init)
                output += replacement
            } else {
                output += between.map(String.init)
                output += self.lines[entry.lines].map(String.init)
            }
            cursor = entry.lines.upperBound
        }
        output += self.lines[cursor...].map(String.init)
        return output.joined(separator: "\n")
    }
}

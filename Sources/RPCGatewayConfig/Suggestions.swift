/// "Did you mean" hints for misspelt keys and names.
package enum Suggestions {
    /// Largest edit distance at which a known word is offered as a correction.
    package static let maximumDistance = 2

    /// Levenshtein distance over Unicode scalars, ignoring ASCII case.
    package static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.lowercased().unicodeScalars)
        let b = Array(b.lowercased().unicodeScalars)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = Array(repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    /// Candidates within ``maximumDistance`` of `word`, closest first. With `matchingSubstrings`,
    /// candidates that contain the word or are contained in it also count (`drs` → `drsuapi`).
    package static func closest(
        to word: String,
        among candidates: [String],
        matchingSubstrings: Bool = false,
        limit: Int = 3
    ) -> [String] {
        let lowered = word.lowercased()
        let scored = candidates.compactMap { candidate -> (String, Int)? in
            let distance = self.editDistance(word, candidate)
            if distance <= self.maximumDistance, distance < max(candidate.count, lowered.count) {
                return (candidate, distance)
            }
            if matchingSubstrings, lowered.count >= 3 {
                let other = candidate.lowercased()
                if other.contains(lowered) || lowered.contains(other) { return (candidate, self.maximumDistance + 1) }
            }
            return nil
        }
        return scored.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(limit).map(\.0)
    }

    /// `did you mean "policies"?`, or `nil` when nothing is close.
    package static func didYouMean(
        _ word: String,
        among candidates: [String],
        matchingSubstrings: Bool = false
    ) -> String? {
        let close = self.closest(to: word, among: candidates, matchingSubstrings: matchingSubstrings)
        guard !close.isEmpty else { return nil }
        return "did you mean \(self.list(close, conjunction: "or"))?"
    }

    /// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
    package static func list(_ words: [String], conjunction: String) -> String {
        let quoted = words.map { "\"\($0)\"" }
        guard quoted.count > 1 else { return quoted.first ?? "" }
        return quoted.dropLast().joined(separator: ", ") + " \(conjunction) " + quoted[quoted.count - 1]
    }
}

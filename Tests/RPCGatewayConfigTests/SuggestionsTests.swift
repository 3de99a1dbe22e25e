import RPCGatewayConfig
import Testing

@Suite("Suggestions")
struct SuggestionsTests {
    @Test("Edit distance")
    func editDistance() {
        #expect(Suggestions.editDistance("policies", "polices") == 1)
        #expect(Suggestions.editDistance("timeout", "timeouts") == 1)
        #expect(Suggestions.editDistance("Routes", "routes") == 0)
        #expect(Suggestions.editDistance("", "abc") == 3)
        #expect(Suggestions.editDistance("kitten", "sitting") == 3)
    }

    @Test("Closest candidates")
    func closest() {
        let keys = ["routes", "policies", "admin", "limits", "timeouts"]
        #expect(Suggestions.closest(to: "route", among: keys) == ["routes"])
        #expect(Suggestions.closest(to: "logging", among: keys).isEmpty)
        // Replacing every letter is not "close", however short the words.
        #expect(Suggestions.closest(to: "xy", among: ["ab"]).isEmpty)
        #expect(Suggestions.closest(to: "a", among: ["ab", "cd"]) == ["ab"])
        #expect(Suggestions.closest(to: "drs", among: ["drsuapi", "dssetup"], matchingSubstrings: true) == ["drsuapi"])
        #expect(Suggestions.didYouMean("lsarcp", among: ["lsarpc", "lsarpc-efs"]) == "did you mean \"lsarpc\"?")
        #expect(Suggestions.list(["a", "b", "c"], conjunction: "or") == "\"a\", \"b\" or \"c\"")
    }
}

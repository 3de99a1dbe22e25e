import RPCPolicy

/// Built-in rule bundles that a rule list includes with an item `- profile: NAME`.
///
/// The profiles themselves are data in RPCPolicy (``BuiltInProfiles``); this is where the loader
/// turns a profile item into rules, spliced into the list where the item stands.
enum PolicyProfiles {
    /// Why a profile item cannot be used; `message` is shown to the user at the item's `profile`
    /// value.
    struct ExpansionFailure: Error, Hashable {
        var message: String
    }

    /// The rules that `- profile: name` stands for at position `index` of a `rules` list: deny
    /// rules with `RuleOrigin(index: index, profile: name)`, each carrying `exceptSources`.
    static func expand(
        _ name: String,
        index: Int,
        exceptSources: [IPNetwork] = []
    ) -> Result<[PolicyRule], ExpansionFailure> {
        if let profile = BuiltInProfiles.named(name) {
            return .success(profile.expand(at: index, exceptSources: exceptSources))
        }
        let names = BuiltInProfiles.names
        var message = "unknown profile \"\(name)\""
        if let hint = Suggestions.didYouMean(name, among: names, matchingSubstrings: true) {
            message += "; \(hint)"
        }
        message += " (known profiles: \(Suggestions.list(names, conjunction: "and")))"
        return .failure(ExpansionFailure(message: message))
    }
}

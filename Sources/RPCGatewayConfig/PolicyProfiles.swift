import RPCPolicy

/// Built-in rule bundles that a rule list includes with an item `- profile: NAME`.
///
/// Profiles are not available in this version. ``expand(_:index:)`` is the single place they plug
/// in: return the profile's rules, each with `RuleOrigin(index: index, profile: name)`, and the
/// loader splices them into the list where the item stands.
enum PolicyProfiles {
    /// Why a profile item cannot be used; `message` is shown to the user at the item's `profile`
    /// value.
    struct ExpansionFailure: Error, Hashable {
        var message: String
    }

    /// The rules that `- profile: name` stands for at position `index` of a `rules` list.
    static func expand(_ name: String, index: Int) -> Result<[PolicyRule], ExpansionFailure> {
        .failure(
            ExpansionFailure(
                message: "profiles are not available in this version (profile \"\(name)\"); write the rules out instead"
            )
        )
    }
}

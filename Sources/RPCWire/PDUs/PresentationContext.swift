/// One presentation context element, `p_cont_elem_t` (C706 12.6.3.1): an interface and the
/// transfer syntaxes the client offers for it.
public struct PresentationContext: Hashable, Sendable {
    public var contextID: UInt16
    public var abstractSyntax: SyntaxID
    public var transferSyntaxes: [SyntaxID]

    public init(contextID: UInt16, abstractSyntax: SyntaxID, transferSyntaxes: [SyntaxID]) {
        self.contextID = contextID
        self.abstractSyntax = abstractSyntax
        self.transferSyntaxes = transferSyntaxes
    }

    /// Whether this element is only a bind-time feature negotiation (MS-RPCE 3.3.1.5.3): exactly one
    /// transfer syntax with the `6cb71c2c-9812-4540-` prefix. It names no interface to authorise.
    public var isBindTimeFeatureNegotiation: Bool {
        self.transferSyntaxes.count == 1 && self.transferSyntaxes[0].isBindTimeFeatureNegotiation
    }
}

/// `p_cont_def_result_t` (C706 12.6.3.1; MS-RPCE adds negotiate_ack).
public struct PresentationResultCode: Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let acceptance = PresentationResultCode(rawValue: 0)
    public static let userRejection = PresentationResultCode(rawValue: 1)
    public static let providerRejection = PresentationResultCode(rawValue: 2)
    /// The answer to a bind-time feature negotiation element (MS-RPCE 2.2.2.4).
    public static let negotiateAck = PresentationResultCode(rawValue: 3)
}

/// `p_provider_reason_t` (C706 12.6.3.1). For a negotiate_ack the field carries feature bits instead.
public struct ProviderReason: Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let notSpecified = ProviderReason(rawValue: 0)
    public static let abstractSyntaxNotSupported = ProviderReason(rawValue: 1)
    public static let proposedTransferSyntaxesNotSupported = ProviderReason(rawValue: 2)
    public static let localLimitExceeded = ProviderReason(rawValue: 3)
}

/// One entry of a bind_ack's result list; results are positional, one per context element.
public struct PresentationResult: Hashable, Sendable {
    public var result: PresentationResultCode
    public var reason: ProviderReason
    public var transferSyntax: SyntaxID

    public init(result: PresentationResultCode, reason: ProviderReason, transferSyntax: SyntaxID) {
        self.result = result
        self.reason = reason
        self.transferSyntax = transferSyntax
    }

    /// An all-zero transfer syntax, as servers send in rejected results.
    public static let nullSyntax = SyntaxID(uuid: .zero, majorVersion: 0, minorVersion: 0)
}

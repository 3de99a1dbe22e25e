/// An error raised while decoding DCE/RPC bytes.
///
/// Every malformed-input path in `RPCWire` throws one of these, never traps. The ``code`` says what
/// was wrong and is what callers (metrics, tests) match on; ``detail`` carries the offending values
/// for logs and is built only when the error is thrown.
public struct RPCWireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of malformation this is. Stable, low-cardinality: suitable as a metric label.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unsupportedVersion = "unsupported_version"
            case invalidDataRepresentation = "invalid_drep"
            case invalidPacketType = "invalid_packet_type"
            case fragmentTooShort = "fragment_too_short"
            case fragmentTooLong = "fragment_too_long"
            case authLengthTooLong = "auth_length_too_long"
            case authPaddingTooLong = "auth_padding_too_long"
            case truncatedBody = "truncated_body"
            case noPresentationContexts = "no_presentation_contexts"
            case tooManyPresentationContexts = "too_many_presentation_contexts"
            case noTransferSyntaxes = "no_transfer_syntaxes"
            case tooManyTransferSyntaxes = "too_many_transfer_syntaxes"
            case invalidTower = "invalid_tower"
            case invalidNDR = "invalid_ndr"
            case reassemblyTooLarge = "reassembly_too_large"
            case fragmentSequence = "fragment_sequence"
            case unexpectedPacketType = "unexpected_packet_type"
            case invalidNTLMMessage = "invalid_ntlm_message"
            case invalidSPNEGOToken = "invalid_spnego_token"
            case invalidKerberosToken = "invalid_kerberos_token"
            case invalidDCOM = "invalid_dcom"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// `rpc_vers` is not 5 or `rpc_vers_minor` is not 0 or 1 (C706 12.6.3.1).
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// The integer representation nibble of `drep[0]` is neither big (0) nor little (1) endian.
        public static let invalidDataRepresentation = Code(.invalidDataRepresentation)
        /// `PTYPE` is not a connection-oriented PDU type (C706 12.6.4).
        public static let invalidPacketType = Code(.invalidPacketType)
        /// `frag_length` is below the 16-byte common header or below the PDU type's fixed body.
        public static let fragmentTooShort = Code(.fragmentTooShort)
        /// `frag_length` is above the configured maximum.
        public static let fragmentTooLong = Code(.fragmentTooLong)
        /// `auth_length` plus the 8-byte `sec_trailer` does not fit in the PDU body.
        public static let authLengthTooLong = Code(.authLengthTooLong)
        /// `auth_pad_length` is larger than the body before the `sec_trailer`.
        public static let authPaddingTooLong = Code(.authPaddingTooLong)
        /// A field runs past the end of the PDU body.
        public static let truncatedBody = Code(.truncatedBody)
        /// A bind or alter_context carries no presentation context.
        public static let noPresentationContexts = Code(.noPresentationContexts)
        /// More presentation contexts than the configured limit.
        public static let tooManyPresentationContexts = Code(.tooManyPresentationContexts)
        /// A presentation context element offers no transfer syntax.
        public static let noTransferSyntaxes = Code(.noTransferSyntaxes)
        /// More transfer syntaxes in one context element than the configured limit.
        public static let tooManyTransferSyntaxes = Code(.tooManyTransferSyntaxes)
        /// A protocol tower whose floor count or lengths are inconsistent or over a limit.
        public static let invalidTower = Code(.invalidTower)
        /// NDR-encoded endpoint-mapper data that is inconsistent or over a limit.
        public static let invalidNDR = Code(.invalidNDR)
        /// Reassembling a fragmented call would exceed the configured cap.
        public static let reassemblyTooLarge = Code(.reassemblyTooLarge)
        /// Fragments of a call arrive out of order (missing FIRST_FRAG, interleaved call ids).
        public static let fragmentSequence = Code(.fragmentSequence)
        /// A PDU of a type that is not valid at this point.
        public static let unexpectedPacketType = Code(.unexpectedPacketType)
        /// An NTLMSSP message (MS-NLMP 2.2.1) in an `auth_value` whose fields are inconsistent or
        /// over a limit.
        public static let invalidNTLMMessage = Code(.invalidNTLMMessage)
        /// A SPNEGO token (RFC 4178 4.2) in an `auth_value` that is not well-formed DER.
        public static let invalidSPNEGOToken = Code(.invalidSPNEGOToken)
        /// A Kerberos token (RFC 4121 4.1, RFC 4120 5.5.1) in an `auth_value` that is not
        /// well-formed DER or over a limit.
        public static let invalidKerberosToken = Code(.invalidKerberosToken)
        /// DCOM data (MS-DCOM 2.2: ORPC headers, OBJREFs, string bindings, activation properties)
        /// whose fields are inconsistent or over a limit.
        public static let invalidDCOM = Code(.invalidDCOM)

        /// A short, stable identifier such as `fragment_too_long`.
        public var description: String { self.base.rawValue }
    }

    /// What kind of malformation this is.
    public var code: Code
    /// Human-readable specifics (offending values), for logs.
    public var detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(self.code): \(self.detail)" }

    @inline(never)
    static func truncated(_ what: String, need: Int, have: Int) -> RPCWireError {
        RPCWireError(.truncatedBody, "\(what) needs \(need) bytes, \(have) available")
    }
}

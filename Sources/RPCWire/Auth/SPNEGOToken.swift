public import NIOCore

/// SPNEGO tokens (RFC 4178 4.2), as carried with auth type 9 (`RPC_C_AUTHN_GSS_NEGOTIATE`).
public enum SPNEGOToken {
    /// DER contents of the SPNEGO OID 1.3.6.1.5.5.2.
    static let spnegoOID: [UInt8] = [0x2B, 0x06, 0x01, 0x05, 0x05, 0x02]

    /// The mechanism token a SPNEGO token carries, if any:
    ///
    /// ```
    /// InitialContextToken ::= [APPLICATION 0] IMPLICIT SEQUENCE { thisMech OID, innerContextToken }
    /// NegotiationToken ::= CHOICE { negTokenInit [0] NegTokenInit, negTokenResp [1] NegTokenResp }
    /// NegTokenInit ::= SEQUENCE { mechTypes [0], reqFlags [1] OPTIONAL, mechToken [2] OCTET STRING OPTIONAL, ... }
    /// NegTokenResp ::= SEQUENCE { negState [0] OPTIONAL, supportedMech [1] OPTIONAL, responseToken [2] OCTET STRING OPTIONAL, ... }
    /// ```
    ///
    /// The first token of a context is the `InitialContextToken` holding a `negTokenInit` (an
    /// unwrapped `negTokenInit` is accepted too); later tokens are bare `negTokenResp`s. `nil`
    /// when the token has no `mechToken`/`responseToken` (a mechanism list alone, or the last
    /// `accept-completed`).
    ///
    /// - Throws: ``RPCWireError`` `.invalidSPNEGOToken` on malformed DER, a wrapper whose OID
    ///   is not SPNEGO, or a token that is neither `negTokenInit` nor `negTokenResp`.
    public static func mechanismToken(in token: ByteBuffer) throws -> ByteBuffer? {
        let code = RPCWireError.Code.invalidSPNEGOToken
        var bytes = token
        var element = try bytes.readDERElement(code, "SPNEGO token")
        if element.identifier == DERElement.application(0) {
            var inner = element.contents
            let mechanism = try inner.readDERElement(DERElement.objectIdentifier, code, "GSS-API thisMech")
            guard Array(mechanism.readableBytesView) == self.spnegoOID else {
                throw RPCWireError(code, "GSS-API initial token for a mechanism other than SPNEGO")
            }
            element = try inner.readDERElement(code, "NegotiationToken")
        }
        guard element.identifier == DERElement.context(0) || element.identifier == DERElement.context(1) else {
            throw RPCWireError(code, "NegotiationToken choice 0x\(String(element.identifier, radix: 16))")
        }
        var choice = element.contents
        let fields = try choice.readDERElement(DERElement.sequence, code, "NegTokenInit/NegTokenResp")
        guard var tokenField = try fields.derField(2, code, "SPNEGO field") else { return nil }
        return try tokenField.readDERElement(DERElement.octetString, code, "mechToken/responseToken")
    }
}

public import NIOCore

/// Who a client says it is, read from the `auth_value` of a `bind`, `alter_context` or `auth3`
/// (MS-RPCE 2.2.2.11): the names the security protocols send in clear, nothing secret.
///
/// - NTLM (auth type 10, or inside SPNEGO): the AUTHENTICATE message's user, domain and
///   workstation (``NTLMIdentity``).
/// - Kerberos (auth type 16, or inside SPNEGO): the service principal and realm of the AP-REQ's
///   ticket (``KerberosServiceIdentity``). The client's own name is encrypted and cannot be known.
public enum AuthIdentity: Hashable, Sendable {
    case ntlm(NTLMIdentity)
    case kerberos(KerberosServiceIdentity)

    /// The identity in an `auth_value` of `authType`.
    ///
    /// `nil` when the token names nobody: NTLM NEGOTIATE or CHALLENGE, a Kerberos AP-REP, a
    /// SPNEGO token without a mechanism token or with one of another mechanism (NegoEx), or an
    /// auth type that carries no names (none, Netlogon's secure channel, others).
    ///
    /// - Throws: ``RPCWireError`` (`.invalidNTLMMessage`, `.invalidSPNEGOToken`,
    ///   `.invalidKerberosToken`) when the token is malformed or a name is over `limits`.
    public static func parse(
        authType: AuthType,
        token: ByteBuffer,
        limits: WireLimits = WireLimits()
    ) throws
        -> AuthIdentity?
    {
        switch authType {
        case .ntlm:
            return try NTLMMessage.identity(in: token, limits: limits).map(AuthIdentity.ntlm)
        case .kerberos:
            return try KerberosToken.serviceIdentity(in: token, limits: limits).map(AuthIdentity.kerberos)
        case .spnego:
            // Some peers send raw NTLMSSP under the SPNEGO auth type once NTLM is chosen.
            if NTLMMessage.hasSignature(token) {
                return try NTLMMessage.identity(in: token, limits: limits).map(AuthIdentity.ntlm)
            }
            guard let mechanismToken = try SPNEGOToken.mechanismToken(in: token) else { return nil }
            return try self.parseMechanismToken(mechanismToken, limits: limits)
        default:
            return nil
        }
    }

    /// A SPNEGO mechanism token: NTLMSSP (by its signature) or Kerberos (by its framing).
    private static func parseMechanismToken(_ token: ByteBuffer, limits: WireLimits) throws -> AuthIdentity? {
        if NTLMMessage.hasSignature(token) {
            return try NTLMMessage.identity(in: token, limits: limits).map(AuthIdentity.ntlm)
        }
        if KerberosToken.mayBeKerberos(token) {
            return try KerberosToken.serviceIdentity(in: token, limits: limits).map(AuthIdentity.kerberos)
        }
        return nil
    }
}

extension AuthVerifier {
    /// The identity this verifier's `auth_value` carries, if any (``AuthIdentity/parse(authType:token:limits:)``).
    public func identity(limits: WireLimits = WireLimits()) throws -> AuthIdentity? {
        try AuthIdentity.parse(authType: self.authType, token: self.value, limits: limits)
    }
}

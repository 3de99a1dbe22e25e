import RPCWire

// Identities for the audit log (issue 16): the names a client's NTLM AUTHENTICATE or Kerberos
// AP-REQ carries in clear, read from the auth_value of its bind, alter_context and auth3.
extension ConnectionStateMachine {
    /// Reads the identity in `verifier`'s token, if it names one, and keeps it. A token that
    /// names nobody (NTLM NEGOTIATE, a Kerberos AP-REP) or cannot be parsed leaves the last one
    /// in place: the identity is evidence for the audit, never a policy input, so a malformed
    /// token changes nothing about what is forwarded.
    mutating func noteIdentity(in verifier: AuthVerifier?) {
        guard let verifier, let identity = try? verifier.identity(limits: self.limits) else { return }
        self.identity = identity
    }

    /// As ``noteIdentity(in:)-(AuthVerifier?)``, for an `auth3`, which the machine does not parse
    /// otherwise: only its verifier is split off (not counted in `pduParses`).
    mutating func noteIdentity(in raw: RawPDU) {
        guard raw.header.authLength > 0, let split = try? raw.splitAuthVerifier() else { return }
        self.noteIdentity(in: split.verifier)
    }
}

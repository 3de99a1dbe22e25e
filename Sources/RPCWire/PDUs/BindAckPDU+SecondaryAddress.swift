/// What replacing a bind_ack's or alter_context_resp's `sec_addr` gives.
public enum SecondaryAddressReplacement: Hashable, Sendable {
    /// Not an acknowledgement, an empty `sec_addr` (alter_context_resp usually sends none), or it
    /// names the port already: nothing to change.
    case unchanged
    /// The PDU carries an auth verifier: it is left as it is (MS-RPCE 2.2.2.13: with header
    /// signing the verifier covers the whole PDU); `secondaryAddress` is what it names, as text.
    case authenticated(secondaryAddress: String)
    /// The same PDU naming the new port; written with ``ByteBuffer/writePDU(_:)``, which sets the
    /// new `frag_length` (the address is 2 to 6 bytes, padded so the result list stays 4-aligned).
    case rewritten(PDU)
}

extension PDU {
    /// This acknowledgement with `sec_addr` naming `port` (C706 12.6.4.4: `port_any_t`, the port
    /// as decimal text with its NUL, which is how Windows and Samba fill it).
    public func replacingSecondaryAddress(port: UInt16) -> SecondaryAddressReplacement {
        var pdu = self
        switch self.body {
        case .bindAck(var ack), .alterContextResponse(var ack):
            let replacement = BindAckPDU.secondaryAddress(port: port)
            guard !ack.secondaryAddress.isEmpty, ack.secondaryAddress != replacement else { return .unchanged }
            guard self.authVerifier == nil, self.header.authLength == 0 else {
                let text = String(decoding: ack.secondaryAddress.prefix { $0 != 0 }, as: UTF8.self)
                return .authenticated(secondaryAddress: text)
            }
            ack.secondaryAddress = replacement
            pdu.body = self.packetType == .bindAck ? .bindAck(ack) : .alterContextResponse(ack)
            return .rewritten(pdu)
        default:
            return .unchanged
        }
    }
}

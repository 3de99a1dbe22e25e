public import NIOCore

/// Who an NTLM AUTHENTICATE message says the client is: the names MS-NLMP 2.2.1.3 carries in
/// clear.
///
/// Only the three names and whether the session is anonymous are kept. The LM and NT challenge
/// responses, the encrypted session key and the MIC are never read into a value: with them an
/// attacker could crack or relay the password.
public struct NTLMIdentity: Hashable, Sendable {
    /// `UserName`; empty for an anonymous session.
    public var user: String
    /// `DomainName`: the NetBIOS or DNS domain the user belongs to (empty when not given).
    public var domain: String
    /// `Workstation`: the client machine's name as the client states it (not verified).
    public var workstation: String
    /// An anonymous authentication (MS-NLMP 3.2.5.1.2): empty user name and no NT response.
    public var isAnonymous: Bool

    public init(user: String, domain: String, workstation: String, isAnonymous: Bool = false) {
        self.user = user
        self.domain = domain
        self.workstation = workstation
        self.isAnonymous = isAnonymous
    }
}

/// NTLMSSP message framing (MS-NLMP 2.2.1).
public enum NTLMMessage {
    /// `"NTLMSSP\0"`, the first 8 bytes of every message.
    public static let signature: [UInt8] = Array("NTLMSSP".utf8) + [0]
    /// `MessageType` of NEGOTIATE, CHALLENGE and AUTHENTICATE.
    public static let negotiateType: UInt32 = 1
    public static let challengeType: UInt32 = 2
    public static let authenticateType: UInt32 = 3
    /// The fixed part of AUTHENTICATE up to and including `NegotiateFlags` (MS-NLMP 2.2.1.3):
    /// signature, type, six 8-byte field descriptors, flags.
    public static let authenticateFixedLength = 64
    /// `NTLMSSP_NEGOTIATE_UNICODE` (MS-NLMP 2.2.2.5, flag A): names are UTF-16LE, else OEM.
    static let negotiateUnicode: UInt32 = 0x0000_0001

    /// Whether `token` starts with the NTLMSSP signature.
    public static func hasSignature(_ token: ByteBuffer) -> Bool {
        token.getBytes(at: token.readerIndex, length: signature.count) == signature
    }

    /// The identity in an NTLMSSP message: a value for AUTHENTICATE, `nil` for NEGOTIATE and
    /// CHALLENGE (which name no user).
    ///
    /// - Throws: ``RPCWireError`` `.invalidNTLMMessage` when the signature or message type is
    ///   wrong, the message is shorter than its fixed part, a name's offset and length fall outside
    ///   the message, a name is longer than `limits.maximumIdentityNameLength`, or a UTF-16 name
    ///   has an odd length.
    public static func identity(in token: ByteBuffer, limits: WireLimits = WireLimits()) throws -> NTLMIdentity? {
        let start = token.readerIndex
        let total = token.readableBytes
        guard self.hasSignature(token) else {
            throw RPCWireError(.invalidNTLMMessage, "no NTLMSSP signature")
        }
        guard let type = token.getInteger(at: start + 8, endianness: .little, as: UInt32.self) else {
            throw RPCWireError(.invalidNTLMMessage, "message of \(total) bytes has no MessageType")
        }
        switch type {
        case self.negotiateType, self.challengeType:
            return nil
        case self.authenticateType:
            break
        default:
            throw RPCWireError(.invalidNTLMMessage, "MessageType \(type)")
        }
        guard total >= self.authenticateFixedLength,
            let flags = token.getInteger(at: start + 60, endianness: .little, as: UInt32.self),
            let ntResponseLength = token.getInteger(at: start + 20, endianness: .little, as: UInt16.self)
        else {
            throw RPCWireError(
                .invalidNTLMMessage,
                "AUTHENTICATE of \(total) bytes, fixed part is \(self.authenticateFixedLength)"
            )
        }
        let unicode = flags & self.negotiateUnicode != 0
        // Field descriptors (len u16, maxlen u16, offset u32) at 28 DomainName, 36 UserName,
        // 44 Workstation. MaximumLength is ignored, as MS-NLMP 2.2.1.3 lets receivers do.
        let domain = try self.name(in: token, descriptorAt: 28, unicode: unicode, field: "DomainName", limits: limits)
        let user = try self.name(in: token, descriptorAt: 36, unicode: unicode, field: "UserName", limits: limits)
        let workstation = try self.name(
            in: token,
            descriptorAt: 44,
            unicode: unicode,
            field: "Workstation",
            limits: limits
        )
        return NTLMIdentity(
            user: user,
            domain: domain,
            workstation: workstation,
            isAnonymous: user.isEmpty && ntResponseLength == 0
        )
    }

    private static func name(
        in token: ByteBuffer,
        descriptorAt descriptor: Int,
        unicode: Bool,
        field: String,
        limits: WireLimits
    ) throws -> String {
        let start = token.readerIndex
        guard let length = token.getInteger(at: start + descriptor, endianness: .little, as: UInt16.self),
            let offset = token.getInteger(at: start + descriptor + 4, endianness: .little, as: UInt32.self)
        else {
            throw RPCWireError(.invalidNTLMMessage, "\(field) descriptor past the end")
        }
        guard length > 0 else { return "" }
        guard Int(length) <= limits.maximumIdentityNameLength else {
            throw RPCWireError(
                .invalidNTLMMessage,
                "\(field) of \(length) bytes, limit \(limits.maximumIdentityNameLength)"
            )
        }
        guard Int(offset) <= token.readableBytes - Int(length),
            let bytes = token.getBytes(at: start + Int(offset), length: Int(length))
        else {
            throw RPCWireError(
                .invalidNTLMMessage,
                "\(field) at offset \(offset), \(length) bytes, in a message of \(token.readableBytes)"
            )
        }
        guard unicode else {
            // OEM code page: unknown to the gateway; bytes above 0x7F are shown as `?`.
            return String(decoding: bytes.map { $0 < 0x80 ? $0 : 0x3F }, as: UTF8.self)
        }
        guard length % 2 == 0 else {
            throw RPCWireError(.invalidNTLMMessage, "UTF-16 \(field) of odd length \(length)")
        }
        let units = stride(from: 0, to: bytes.count, by: 2).map { UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8 }
        // Unpaired surrogates become U+FFFD: a name is for reading, not for matching.
        return String(decoding: units, as: UTF16.self)
    }
}

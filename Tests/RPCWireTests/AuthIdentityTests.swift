import NIOCore
import RPCWire
import Testing

/// Builders for hand-made tokens: a minimal DER writer and an NTLM AUTHENTICATE writer.
enum TokenBuilder {
    static func der(_ identifier: UInt8, _ contents: [UInt8]) -> [UInt8] {
        var bytes = [identifier]
        let length = contents.count
        if length < 0x80 {
            bytes.append(UInt8(length))
        } else if length <= 0xFF {
            bytes += [0x81, UInt8(length)]
        } else {
            bytes += [0x82, UInt8(length >> 8), UInt8(length & 0xFF)]
        }
        return bytes + contents
    }

    static func generalString(_ text: String) -> [UInt8] { der(0x1B, Array(text.utf8)) }

    /// `KRB_AP_REQ` whose ticket names `realm` and `sname`; the encrypted parts are filler.
    static func apRequest(realm: String, sname: [String]) -> [UInt8] {
        let principal = der(0x30, der(0xA0, der(0x02, [2])) + der(0xA1, der(0x30, sname.flatMap(generalString))))
        let ticket = der(
            0x61,
            der(
                0x30,
                der(0xA0, der(0x02, [5])) + der(0xA1, generalString(realm)) + der(0xA2, principal)
                    + der(
                        0xA3,
                        der(
                            0x30,
                            der(0xA0, der(0x02, [18])) + der(0xA2, der(0x04, [UInt8](repeating: 0xEE, count: 40)))
                        )
                    )
            )
        )
        let authenticator = der(
            0x30,
            der(0xA0, der(0x02, [18])) + der(0xA2, der(0x04, [UInt8](repeating: 0xAA, count: 32)))
        )
        return der(
            0x6E,
            der(
                0x30,
                der(0xA0, der(0x02, [5])) + der(0xA1, der(0x02, [14])) + der(0xA2, der(0x03, [0, 0x20, 0, 0, 0]))
                    + der(0xA3, ticket) + der(0xA4, authenticator)
            )
        )
    }

    static let kerberosOID: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x12, 0x01, 0x02, 0x02]
    static let spnegoOID: [UInt8] = [0x2B, 0x06, 0x01, 0x05, 0x05, 0x02]

    /// A GSS-API initial token with the Kerberos OID, `TOK_ID` and `body`.
    static func gssKerberos(_ body: [UInt8], tokenID: [UInt8] = [0x01, 0x00]) -> [UInt8] {
        der(0x60, der(0x06, kerberosOID) + tokenID + body)
    }

    /// An InitialContextToken holding a negTokenInit with `mechToken`.
    static func negTokenInit(mechToken: [UInt8]?) -> [UInt8] {
        var fields = der(0xA0, der(0x30, der(0x06, kerberosOID)))
        if let mechToken { fields += der(0xA2, der(0x04, mechToken)) }
        return der(0x60, der(0x06, spnegoOID) + der(0xA0, der(0x30, fields)))
    }

    static func negTokenResp(responseToken: [UInt8]?) -> [UInt8] {
        var fields = der(0xA0, der(0x0A, [1]))
        if let responseToken { fields += der(0xA2, der(0x04, responseToken)) }
        return der(0xA1, der(0x30, fields))
    }

    static func utf16(_ text: String) -> [UInt8] { text.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] } }

    /// An AUTHENTICATE message with the given names (Unicode) and filler responses.
    static func ntlmAuthenticate(
        user: String,
        domain: String,
        workstation: String,
        ntResponse: [UInt8] = [UInt8](repeating: 0x5A, count: 24),
        unicode: Bool = true
    ) -> [UInt8] {
        func encode(_ text: String) -> [UInt8] { unicode ? utf16(text) : Array(text.utf8) }
        let lmResponse = [UInt8](repeating: 0x11, count: 24)
        let payloads: [[UInt8]] = [lmResponse, ntResponse, encode(domain), encode(user), encode(workstation), []]
        var header: [UInt8] = Array("NTLMSSP".utf8)
        header += [0]
        header += le32(3)
        var body: [UInt8] = []
        var offset = 64 + 8 + 16  // fixed part, version, MIC
        for payload in payloads {
            header += le16(payload.count) + le16(payload.count) + le32(offset)
            body += payload
            offset += payload.count
        }
        header += le32(unicode ? 0xE288_8215 : 0xE288_8214)
        return header + [UInt8](repeating: 0, count: 8 + 16) + body
    }

    static func le16(_ value: Int) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF)] }
    static func le32(_ value: Int) -> [UInt8] { le16(value & 0xFFFF) + le16(value >> 16) }
}

@Suite("Auth identity")
struct AuthIdentityTests {
    private func parse(_ type: AuthType, _ bytes: [UInt8], limits: WireLimits = WireLimits()) throws -> AuthIdentity? {
        try AuthIdentity.parse(authType: type, token: ByteBuffer(bytes: bytes), limits: limits)
    }

    private func expectError(
        _ code: RPCWireError.Code,
        _ type: AuthType,
        _ bytes: [UInt8],
        limits: WireLimits = WireLimits()
    ) {
        #expect {
            _ = try self.parse(type, bytes, limits: limits)
        } throws: { error in
            (error as? RPCWireError)?.code == code
        }
    }

    // MARK: - NTLM

    @Test func ntlmAuthenticateNamesRawAndInSPNEGO() throws {
        let message = TokenBuilder.ntlmAuthenticate(user: "alice", domain: "EXAMPLE", workstation: "WS-ÄÖ")
        let expected = AuthIdentity.ntlm(NTLMIdentity(user: "alice", domain: "EXAMPLE", workstation: "WS-ÄÖ"))
        #expect(try parse(.ntlm, message) == expected)
        #expect(try parse(.spnego, TokenBuilder.negTokenResp(responseToken: message)) == expected)
        #expect(try parse(.spnego, message) == expected)
    }

    @Test func ntlmOEMNamesAndAnonymous() throws {
        let oem = TokenBuilder.ntlmAuthenticate(user: "bob", domain: "D", workstation: "W", unicode: false)
        #expect(try parse(.ntlm, oem) == .ntlm(NTLMIdentity(user: "bob", domain: "D", workstation: "W")))
        let anonymous = TokenBuilder.ntlmAuthenticate(user: "", domain: "", workstation: "WS", ntResponse: [])
        #expect(
            try parse(.ntlm, anonymous)
                == .ntlm(NTLMIdentity(user: "", domain: "", workstation: "WS", isAnonymous: true))
        )
    }

    @Test func ntlmNegotiateAndChallengeNameNobody() throws {
        let negotiate =
            Array("NTLMSSP".utf8) + [0] + TokenBuilder.le32(1) + TokenBuilder.le32(0xE208_8297)
            + [UInt8](repeating: 0, count: 16)
        #expect(try parse(.ntlm, negotiate) == nil)
        #expect(try parse(.spnego, TokenBuilder.negTokenInit(mechToken: negotiate)) == nil)
        let challenge = Array("NTLMSSP".utf8) + [0] + TokenBuilder.le32(2)
        #expect(try parse(.ntlm, challenge) == nil)
    }

    @Test func ntlmIdentityHoldsNoSecretBytes() throws {
        let secret: [UInt8] = Array("SECRETRESPONSE0123456789".utf8)
        let message = TokenBuilder.ntlmAuthenticate(user: "u", domain: "d", workstation: "w", ntResponse: secret)
        let identity = try #require(try parse(.ntlm, message))
        #expect(!"\(identity)".contains("SECRET"))
    }

    @Test func malformedNTLM() throws {
        let good = TokenBuilder.ntlmAuthenticate(user: "alice", domain: "EXAMPLE", workstation: "WS")
        // Wrong signature, unknown type, truncated fixed part.
        expectError(.invalidNTLMMessage, .ntlm, Array("NTLMSSX".utf8) + [0] + TokenBuilder.le32(3))
        expectError(.invalidNTLMMessage, .ntlm, Array("NTLMSSP".utf8) + [0] + TokenBuilder.le32(7))
        expectError(.invalidNTLMMessage, .ntlm, Array("NTLMSSP".utf8) + [0])
        expectError(.invalidNTLMMessage, .ntlm, Array(good.prefix(63)))
        // UserName pointing past the end; the offset field near UInt32.max must not overflow.
        var pastEnd = good
        pastEnd[40] = 0xF0
        pastEnd[41] = 0xFF
        pastEnd[42] = 0xFF
        pastEnd[43] = 0xFF
        expectError(.invalidNTLMMessage, .ntlm, pastEnd)
        // Odd UTF-16 length.
        var odd = good
        odd[36] = 9
        expectError(.invalidNTLMMessage, .ntlm, odd)
        // Over the name limit.
        expectError(.invalidNTLMMessage, .ntlm, good, limits: WireLimits(maximumIdentityNameLength: 8))
        // Every truncation either parses or throws; none traps.
        for length in 0..<good.count {
            _ = try? parse(.ntlm, Array(good.prefix(length)))
        }
    }

    // MARK: - Kerberos

    @Test func kerberosServicePrincipalInEveryFraming() throws {
        let apRequest = TokenBuilder.apRequest(realm: "EXAMPLE.TEST", sname: ["ldap", "dc1.example.test"])
        let expected = AuthIdentity.kerberos(
            KerberosServiceIdentity(realm: "EXAMPLE.TEST", serviceName: ["ldap", "dc1.example.test"])
        )
        #expect(try parse(.kerberos, apRequest) == expected)
        #expect(try parse(.kerberos, TokenBuilder.gssKerberos(apRequest)) == expected)
        #expect(
            try parse(.spnego, TokenBuilder.negTokenInit(mechToken: TokenBuilder.gssKerberos(apRequest))) == expected
        )
        if case .kerberos(let service) = expected { #expect(service.servicePrincipal == "ldap/dc1.example.test") }
    }

    @Test func kerberosTokensWithoutTicketNameNobody() throws {
        // The AP-REP of DCE-style Kerberos' third leg, and a KRB-ERROR.
        #expect(try parse(.kerberos, TokenBuilder.gssKerberos([0x6F, 0x00], tokenID: [0x02, 0x00])) == nil)
        #expect(try parse(.kerberos, TokenBuilder.gssKerberos([0x7E, 0x00], tokenID: [0x03, 0x00])) == nil)
        #expect(try parse(.kerberos, TokenBuilder.der(0x6F, [])) == nil)
        #expect(try parse(.spnego, TokenBuilder.negTokenResp(responseToken: nil)) == nil)
        #expect(try parse(.netlogon, [1, 2, 3]) == nil)
        #expect(try parse(.none, []) == nil)
    }

    @Test func malformedKerberosAndSPNEGO() throws {
        let apRequest = TokenBuilder.apRequest(realm: "EXAMPLE.TEST", sname: ["host", "ws1"])
        // Truncated at every length: parses, names nobody or throws; never traps.
        for framing in [apRequest, TokenBuilder.gssKerberos(apRequest)] {
            for length in 0..<framing.count {
                _ = try? parse(.kerberos, Array(framing.prefix(length)))
            }
        }
        let spnego = TokenBuilder.negTokenInit(mechToken: TokenBuilder.gssKerberos(apRequest))
        for length in 0..<spnego.count {
            _ = try? parse(.spnego, Array(spnego.prefix(length)))
        }
        expectError(.invalidKerberosToken, .kerberos, Array(apRequest.prefix(apRequest.count - 1)))
        // Indefinite length, multi-octet tag, five-octet length.
        expectError(.invalidKerberosToken, .kerberos, [0x6E, 0x80, 0x00, 0x00])
        expectError(.invalidKerberosToken, .kerberos, [0x7F, 0x81, 0x01, 0x00])
        expectError(.invalidKerberosToken, .kerberos, [0x6E, 0x85, 0, 0, 0, 0, 1])
        // An AP-REQ without a ticket field.
        expectError(
            .invalidKerberosToken,
            .kerberos,
            TokenBuilder.der(0x6E, TokenBuilder.der(0x30, TokenBuilder.der(0xA0, TokenBuilder.der(0x02, [5]))))
        )
        // Too many sname components, a realm over the limit.
        let long = TokenBuilder.apRequest(realm: "R", sname: (0..<9).map { "c\($0)" })
        expectError(.invalidKerberosToken, .kerberos, long)
        expectError(.invalidKerberosToken, .kerberos, apRequest, limits: WireLimits(maximumIdentityNameLength: 4))
        // SPNEGO: another mechanism's wrapper, a choice other than init/resp.
        expectError(
            .invalidSPNEGOToken,
            .spnego,
            TokenBuilder.der(0x60, TokenBuilder.der(0x06, TokenBuilder.kerberosOID))
        )
        expectError(.invalidSPNEGOToken, .spnego, TokenBuilder.der(0xA3, TokenBuilder.der(0x30, [])))
        expectError(.invalidSPNEGOToken, .spnego, [])
        // An unknown mechanism token inside SPNEGO (NegoEx) names nobody.
        #expect(try parse(.spnego, TokenBuilder.negTokenResp(responseToken: Array("NEGOEXTS".utf8))) == nil)
    }

    // MARK: - Captured Samba traffic

    @Test func sambaNTLMAuth3NamesTheUser() throws {
        var bytes = try Fixture.buffer("ntlm_auth3")
        let pdu = try #require(try bytes.readRawPDU(limits: WireLimits())).parse()
        let identity = try #require(try pdu.authVerifier?.identity())
        guard case .ntlm(let ntlm) = identity else {
            Issue.record("not NTLM: \(identity)")
            return
        }
        #expect(ntlm.user.lowercased() == "administrator")
        #expect(ntlm.domain.uppercased().hasPrefix("EXAMPLE"))
    }

    @Test(arguments: ["ntlm_bind", "spnego_bind", "spnego_alter_context", "sealed_bind"])
    func sambaHandshakeTokensParse(name: String) throws {
        guard Fixture.exists(name) else { return }
        var bytes = try Fixture.buffer(name)
        let pdu = try #require(try bytes.readRawPDU(limits: WireLimits())).parse()
        _ = try pdu.authVerifier?.identity()
    }
}

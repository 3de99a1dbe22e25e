public import NIOCore

/// The service a Kerberos AP-REQ is for: the realm and server name of its ticket (RFC 4120
/// 5.3, 5.5.1).
///
/// These are the only cleartext names in an AP-REQ. The client's name is in the ticket's
/// `enc-part` (encrypted with the service's key) and in the authenticator (encrypted with the
/// session key), so an in-path gateway cannot know who the client is: the audit shows which
/// service was asked for, not by whom. The ticket and authenticator themselves are never kept.
public struct KerberosServiceIdentity: Hashable, Sendable {
    /// The ticket's `realm`: the realm of the service (and of the KDC that issued the ticket).
    public var realm: String
    /// The ticket's `sname` components, e.g. `["ldap", "dc1.example.com"]`.
    public var serviceName: [String]

    public init(realm: String, serviceName: [String]) {
        self.realm = realm
        self.serviceName = serviceName
    }

    /// `ldap/dc1.example.com`: the components joined with `/` (RFC 1964 2.1.1 form, no realm).
    public var servicePrincipal: String { self.serviceName.joined(separator: "/") }
}

/// Kerberos GSS-API tokens (RFC 4121 4.1) and the AP-REQ inside them (RFC 4120 5.5.1).
public enum KerberosToken {
    /// DER contents of the Kerberos V5 mechanism OID 1.2.840.113554.1.2.2.
    static let kerberosOID: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x12, 0x01, 0x02, 0x02]
    /// 1.2.840.48018.1.2.2, the OID Windows also uses for Kerberos (MS-KILE 3.1.5.2).
    static let microsoftKerberosOID: [UInt8] = [0x2A, 0x86, 0x48, 0x82, 0xF7, 0x12, 0x01, 0x02, 0x02]
    /// 1.2.840.113554.1.2.2.3, Kerberos user-to-user (RFC 4121 4.1, same framing).
    static let userToUserOID: [UInt8] = kerberosOID + [0x03]
    /// `TOK_ID` of an AP-REQ in a GSS-API initial token (RFC 4121 4.1).
    static let apRequestTokenID: UInt16 = 0x0100
    /// `KRB_AP_REQ ::= [APPLICATION 14]` (RFC 4120 5.5.1).
    static let apRequestTag = DERElement.application(14)
    /// `Ticket ::= [APPLICATION 1]` (RFC 4120 5.3).
    static let ticketTag = DERElement.application(1)

    /// Whether `mechanism` (the DER contents of an OID) names Kerberos.
    static func isKerberos(_ mechanism: ByteBuffer) -> Bool {
        let bytes = Array(mechanism.readableBytesView)
        return bytes == kerberosOID || bytes == microsoftKerberosOID || bytes == userToUserOID
    }

    /// Whether `token` looks like a Kerberos token: a GSS-API initial token, or a bare AP-REQ.
    static func mayBeKerberos(_ token: ByteBuffer) -> Bool {
        let first = token.getInteger(at: token.readerIndex, as: UInt8.self)
        return first == DERElement.application(0) || first == apRequestTag
    }

    /// The service of the AP-REQ in `token`: a GSS-API initial token (`[APPLICATION 0]`, the
    /// Kerberos OID, `TOK_ID`, the AP-REQ), as sent with auth type 16 or inside SPNEGO, or a
    /// bare `KRB_AP_REQ`. `nil` for tokens that carry no AP-REQ (the AP-REP of the third leg of
    /// DCE-style Kerberos, a KRB-ERROR) or a GSS token of another mechanism.
    ///
    /// - Throws: ``RPCWireError`` `.invalidKerberosToken` when the DER is malformed, a field the
    ///   AP-REQ must have is missing, or a name is over `limits`.
    public static func serviceIdentity(
        in token: ByteBuffer,
        limits: WireLimits = WireLimits()
    ) throws
        -> KerberosServiceIdentity?
    {
        var bytes = token
        let code = RPCWireError.Code.invalidKerberosToken
        let element = try bytes.readDERElement(code, "Kerberos token")
        switch element.identifier {
        case apRequestTag:
            return try self.serviceIdentity(apRequestContents: element.contents, limits: limits)
        case DERElement.application(0):
            var inner = element.contents
            let mechanism = try inner.readDERElement(DERElement.objectIdentifier, code, "GSS-API thisMech")
            guard self.isKerberos(mechanism) else { return nil }
            guard let tokenID = inner.readInteger(endianness: .big, as: UInt16.self) else {
                throw RPCWireError(code, "GSS-API Kerberos token without TOK_ID")
            }
            guard tokenID == self.apRequestTokenID else { return nil }
            let apRequest = try inner.readDERElement(self.apRequestTag, code, "KRB_AP_REQ")
            return try self.serviceIdentity(apRequestContents: apRequest, limits: limits)
        default:
            return nil
        }
    }

    /// `AP-REQ ::= SEQUENCE { pvno [0], msg-type [1], ap-options [2], ticket [3] Ticket,
    /// authenticator [4] }`; `Ticket ::= [APPLICATION 1] SEQUENCE { tkt-vno [0], realm [1],
    /// sname [2] PrincipalName, enc-part [3] }`.
    private static func serviceIdentity(
        apRequestContents: ByteBuffer,
        limits: WireLimits
    ) throws
        -> KerberosServiceIdentity
    {
        let code = RPCWireError.Code.invalidKerberosToken
        var apRequest = apRequestContents
        let fields = try apRequest.readDERElement(DERElement.sequence, code, "AP-REQ")
        guard var ticketField = try fields.derField(3, code, "AP-REQ field") else {
            throw RPCWireError(code, "AP-REQ without a ticket")
        }
        var ticketApplication = try ticketField.readDERElement(self.ticketTag, code, "Ticket")
        let ticket = try ticketApplication.readDERElement(DERElement.sequence, code, "Ticket")
        guard var realmField = try ticket.derField(1, code, "Ticket field"),
            var snameField = try ticket.derField(2, code, "Ticket field")
        else {
            throw RPCWireError(code, "Ticket without realm or sname")
        }
        let realm = try self.kerberosString(&realmField, limits: limits, "Ticket realm")
        // PrincipalName ::= SEQUENCE { name-type [0] Int32, name-string [1] SEQUENCE OF KerberosString }
        let principal = try snameField.readDERElement(DERElement.sequence, code, "PrincipalName")
        guard var nameStringField = try principal.derField(1, code, "PrincipalName field") else {
            throw RPCWireError(code, "PrincipalName without name-string")
        }
        var components = try nameStringField.readDERElement(DERElement.sequence, code, "name-string")
        var serviceName: [String] = []
        while components.readableBytes > 0 {
            guard serviceName.count < limits.maximumPrincipalComponents else {
                throw RPCWireError(code, "sname with more than \(limits.maximumPrincipalComponents) components")
            }
            serviceName.append(try self.kerberosString(&components, limits: limits, "sname component"))
        }
        return KerberosServiceIdentity(realm: realm, serviceName: serviceName)
    }

    /// A `KerberosString` (`GeneralString` restricted to IA5, RFC 4120 5.2.1). Bytes above 0x7F
    /// become `?`.
    private static func kerberosString(_ buffer: inout ByteBuffer, limits: WireLimits, _ what: String) throws -> String
    {
        let code = RPCWireError.Code.invalidKerberosToken
        let contents = try buffer.readDERElement(DERElement.generalString, code, what)
        guard contents.readableBytes <= limits.maximumIdentityNameLength else {
            throw RPCWireError(
                code,
                "\(what) of \(contents.readableBytes) bytes, limit \(limits.maximumIdentityNameLength)"
            )
        }
        return String(decoding: contents.readableBytesView.map { $0 < 0x80 ? $0 : 0x3F }, as: UTF8.self)
    }
}

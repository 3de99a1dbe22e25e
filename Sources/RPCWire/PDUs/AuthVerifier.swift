public import NIOCore

/// Authentication levels of the `sec_trailer` (C706 13.1.2.1; MS-RPCE 2.2.1.1.8).
public struct AuthLevel: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let none = AuthLevel(rawValue: 1)
    public static let connect = AuthLevel(rawValue: 2)
    public static let call = AuthLevel(rawValue: 3)
    public static let packet = AuthLevel(rawValue: 4)
    public static let integrity = AuthLevel(rawValue: 5)
    public static let privacy = AuthLevel(rawValue: 6)

    public static func < (lhs: AuthLevel, rhs: AuthLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self.rawValue {
        case 0, 1: return "none"
        case 2: return "connect"
        case 3: return "call"
        case 4: return "packet"
        case 5: return "integrity"
        case 6: return "privacy"
        default: return "level(\(self.rawValue))"
        }
    }
}

/// Authentication services of the `sec_trailer` (MS-RPCE 2.2.1.1.7).
public struct AuthType: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let none = AuthType(rawValue: 0)
    public static let spnego = AuthType(rawValue: 9)
    public static let ntlm = AuthType(rawValue: 10)
    public static let kerberos = AuthType(rawValue: 16)
    public static let netlogon = AuthType(rawValue: 68)

    public var description: String {
        switch self.rawValue {
        case 0: return "none"
        case 9: return "spnego"
        case 10: return "ntlm"
        case 16: return "kerberos"
        case 68: return "netlogon"
        default: return "authn(\(self.rawValue))"
        }
    }
}

/// The authentication verifier of a PDU: the padding before the `sec_trailer`, the trailer, and
/// `auth_value` (C706 13.2.6.1; MS-RPCE 2.2.2.11).
///
/// The gateway only reads these bytes; they are kept verbatim so that a re-serialized PDU is
/// byte-for-byte identical and signatures stay valid.
public struct AuthVerifier: Hashable, Sendable {
    public var authType: AuthType
    public var authLevel: AuthLevel
    /// The `auth_pad_length` bytes that align the trailer; their count is written as `auth_pad_length`.
    public var padding: ByteBuffer
    public var reserved: UInt8
    public var contextID: UInt32
    public var value: ByteBuffer

    public init(
        authType: AuthType,
        authLevel: AuthLevel,
        padding: ByteBuffer = ByteBuffer(),
        reserved: UInt8 = 0,
        contextID: UInt32,
        value: ByteBuffer
    ) {
        self.authType = authType
        self.authLevel = authLevel
        self.padding = padding
        self.reserved = reserved
        self.contextID = contextID
        self.value = value
    }
}

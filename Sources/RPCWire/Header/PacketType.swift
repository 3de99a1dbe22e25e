/// The `PTYPE` of a connection-oriented PDU (C706 12.6.4; MS-RPCE 2.2.2.1).
public struct PacketType: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let request = PacketType(rawValue: 0)
    public static let response = PacketType(rawValue: 2)
    public static let fault = PacketType(rawValue: 3)
    public static let bind = PacketType(rawValue: 11)
    public static let bindAck = PacketType(rawValue: 12)
    public static let bindNak = PacketType(rawValue: 13)
    public static let alterContext = PacketType(rawValue: 14)
    public static let alterContextResponse = PacketType(rawValue: 15)
    public static let auth3 = PacketType(rawValue: 16)
    public static let shutdown = PacketType(rawValue: 17)
    public static let coCancel = PacketType(rawValue: 18)
    public static let orphaned = PacketType(rawValue: 19)

    /// Whether this type may appear on a connection-oriented transport such as TCP.
    ///
    /// Types 1 and 4-10 are connectionless-only; 20 (rts) belongs to ncacn_http (MS-RPCH), which
    /// this gateway does not carry.
    public var isConnectionOriented: Bool {
        switch self.rawValue {
        case 0, 2, 3, 11...19: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .request: return "request"
        case .response: return "response"
        case .fault: return "fault"
        case .bind: return "bind"
        case .bindAck: return "bind_ack"
        case .bindNak: return "bind_nak"
        case .alterContext: return "alter_context"
        case .alterContextResponse: return "alter_context_resp"
        case .auth3: return "auth3"
        case .shutdown: return "shutdown"
        case .coCancel: return "co_cancel"
        case .orphaned: return "orphaned"
        default: return "ptype(\(self.rawValue))"
        }
    }
}

/// `pfc_flags` (C706 12.6.3.1; MS-RPCE 2.2.2.3 adds SUPPORT_HEADER_SIGN on bind-type PDUs).
public struct PFCFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let firstFragment = PFCFlags(rawValue: 0x01)
    public static let lastFragment = PFCFlags(rawValue: 0x02)
    /// PFC_PENDING_CANCEL on requests; PFC_SUPPORT_HEADER_SIGN on bind, bind_ack, alter_context(_resp).
    public static let pendingCancelOrSupportHeaderSign = PFCFlags(rawValue: 0x04)
    public static let concurrentMultiplexing = PFCFlags(rawValue: 0x10)
    public static let didNotExecute = PFCFlags(rawValue: 0x20)
    public static let maybe = PFCFlags(rawValue: 0x40)
    public static let objectUUID = PFCFlags(rawValue: 0x80)

    /// A PDU that is a whole call on its own.
    public static let singleFragment: PFCFlags = [.firstFragment, .lastFragment]
}

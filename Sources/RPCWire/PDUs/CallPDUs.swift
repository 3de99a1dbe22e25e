public import NIOCore

/// The body of a `request` (PTYPE 0, C706 12.6.4.9).
public struct RequestPDU: Hashable, Sendable {
    public var allocationHint: UInt32
    public var contextID: UInt16
    public var opnum: UInt16
    /// Present when `PFC_OBJECT_UUID` is set.
    public var objectUUID: DCEUUID?
    /// Stub data (encrypted at privacy level). Auth padding is not part of it.
    public var stub: ByteBuffer

    public init(allocationHint: UInt32, contextID: UInt16, opnum: UInt16, objectUUID: DCEUUID? = nil, stub: ByteBuffer)
    {
        self.allocationHint = allocationHint
        self.contextID = contextID
        self.opnum = opnum
        self.objectUUID = objectUUID
        self.stub = stub
    }

    static let fixedLength = 8
}

/// The body of a `response` (PTYPE 2, C706 12.6.4.10).
public struct ResponsePDU: Hashable, Sendable {
    public var allocationHint: UInt32
    public var contextID: UInt16
    public var cancelCount: UInt8
    public var reserved: UInt8
    public var stub: ByteBuffer

    public init(
        allocationHint: UInt32,
        contextID: UInt16,
        cancelCount: UInt8 = 0,
        reserved: UInt8 = 0,
        stub: ByteBuffer
    ) {
        self.allocationHint = allocationHint
        self.contextID = contextID
        self.cancelCount = cancelCount
        self.reserved = reserved
        self.stub = stub
    }

    static let fixedLength = 8
}

/// Status codes carried by faults and endpoint-mapper replies (C706 Appendix E; MS-RPCE 2.2.2.11).
public struct RPCStatus: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `nca_s_op_rng_error`: the opnum is out of range for the interface.
    public static let operationRangeError = RPCStatus(rawValue: 0x1C01_0002)
    /// `nca_s_unk_if`: unknown interface.
    public static let unknownInterface = RPCStatus(rawValue: 0x1C01_0003)
    /// `nca_s_proto_error`.
    public static let protocolError = RPCStatus(rawValue: 0x1C01_000B)
    /// `nca_s_invalid_pres_context_id` (MS-RPCE 3.3.1.5.5): a request on a context never accepted.
    public static let invalidPresentationContextID = RPCStatus(rawValue: 0x1C00_001C)
    /// ERROR_ACCESS_DENIED.
    public static let accessDenied = RPCStatus(rawValue: 0x0000_0005)
    /// RPC_X_BAD_STUB_DATA.
    public static let badStubData = RPCStatus(rawValue: 0x0000_06F7)
    /// `ept_s_not_registered` / EPMAPPER_STATUS_NO_MORE_ENTRIES (C706 Appendix O).
    public static let endpointNotRegistered = RPCStatus(rawValue: 0x16C9_A0D6)

    public var description: String {
        let text = String(self.rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - text.count)) + text
    }
}

/// The body of a `fault` (PTYPE 3, C706 12.6.4.7).
public struct FaultPDU: Hashable, Sendable {
    public var allocationHint: UInt32
    public var contextID: UInt16
    public var cancelCount: UInt8
    /// MS-RPCE 2.2.2.2: 0x01 means extended error information follows.
    public var flags: UInt8
    public var status: RPCStatus
    /// Everything after `status`: the 4 reserved bytes and any extended error data.
    public var trailingBytes: ByteBuffer

    public init(
        allocationHint: UInt32 = 0,
        contextID: UInt16,
        cancelCount: UInt8 = 0,
        flags: UInt8 = 0,
        status: RPCStatus,
        trailingBytes: ByteBuffer = ByteBuffer(repeating: 0, count: 4)
    ) {
        self.allocationHint = allocationHint
        self.contextID = contextID
        self.cancelCount = cancelCount
        self.flags = flags
        self.status = status
        self.trailingBytes = trailingBytes
    }

    static let fixedLength = 12
}

/// The body of a `bind_nak` (PTYPE 13, C706 12.6.4.5).
public struct BindNakPDU: Hashable, Sendable {
    public var rejectReason: BindNakReason
    /// Protocol versions the server supports, as (major, minor) pairs.
    public var supportedVersions: [RPCProtocolVersion]
    /// Padding and the optional MS-RPCE extended-error signature, kept verbatim.
    public var trailingBytes: ByteBuffer

    public init(
        rejectReason: BindNakReason,
        supportedVersions: [RPCProtocolVersion],
        trailingBytes: ByteBuffer = ByteBuffer()
    ) {
        self.rejectReason = rejectReason
        self.supportedVersions = supportedVersions
        self.trailingBytes = trailingBytes
    }
}

/// A (major, minor) protocol version entry of a bind_nak.
public struct RPCProtocolVersion: Hashable, Sendable {
    public var major: UInt8
    public var minor: UInt8
    public init(major: UInt8, minor: UInt8) {
        self.major = major
        self.minor = minor
    }
}

/// `p_reject_reason_t` (C706 12.6.3.1; Samba dcerpc.idl).
public struct BindNakReason: Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let notSpecified = BindNakReason(rawValue: 0)
    public static let temporaryCongestion = BindNakReason(rawValue: 1)
    public static let localLimitExceeded = BindNakReason(rawValue: 2)
    public static let protocolVersionNotSupported = BindNakReason(rawValue: 4)
    public static let invalidAuthType = BindNakReason(rawValue: 8)
    public static let invalidChecksum = BindNakReason(rawValue: 9)
}

/// The body of an `auth3` (PTYPE 16, MS-RPCE 2.2.2.10): 4 bytes of padding before the trailer.
public struct Auth3PDU: Hashable, Sendable {
    public var padding: UInt32
    public var trailingBytes: ByteBuffer

    public init(padding: UInt32 = 0, trailingBytes: ByteBuffer = ByteBuffer()) {
        self.padding = padding
        self.trailingBytes = trailingBytes
    }
}

import NIOCore

/// The fixed fields that open a `request` body, right after the common header (C706 12.6.4.9).
///
/// `p_cont_id` and `opnum` stay in the clear even when the stub is sealed, so the gateway can
/// decide on them without the session key.
public struct RequestHeaderFields: Hashable, Sendable {
    /// `alloc_hint`: the stub size the client expects to send for the whole call (a hint only).
    public var allocationHint: UInt32
    /// `p_cont_id`: the presentation context the call is made on.
    public var contextID: UInt16
    /// `opnum`: the operation of the interface.
    public var opnum: UInt16

    public init(allocationHint: UInt32, contextID: UInt16, opnum: UInt16) {
        self.allocationHint = allocationHint
        self.contextID = contextID
        self.opnum = opnum
    }
}

/// The 8-byte `sec_trailer` that precedes `auth_value` (C706 13.2.6.1; MS-RPCE 2.2.2.11).
public struct SecurityTrailerFields: Hashable, Sendable {
    public var authType: AuthType
    public var authLevel: AuthLevel
    /// `auth_pad_length`: the padding bytes between the stub and the trailer.
    public var padLength: UInt8
    public var reserved: UInt8
    /// `auth_context_id`, in the PDU's byte order.
    public var contextID: UInt32
    /// Where the trailer starts, counted from the first byte of the PDU:
    /// `frag_length - auth_length - 8`.
    public var offset: Int

    public init(
        authType: AuthType,
        authLevel: AuthLevel,
        padLength: UInt8,
        reserved: UInt8,
        contextID: UInt32,
        offset: Int
    ) {
        self.authType = authType
        self.authLevel = authLevel
        self.padLength = padLength
        self.reserved = reserved
        self.contextID = contextID
        self.offset = offset
    }
}

// Reads of single fields without parsing the whole PDU: the gateway decides most PDUs on these
// and forwards the bytes untouched. Both return nil rather than trap on any input.
extension RawPDU {
    /// The fixed request header (`alloc_hint` u32, `p_cont_id` u16, `opnum` u16 at offset 16),
    /// in the byte order `drep` names.
    ///
    /// `nil` when the PDU is not a `request` or is too short to hold the fields.
    public var requestHeader: RequestHeaderFields? {
        guard self.header.packetType == .request,
            let (allocationHint, contextID, opnum) = self.bytes.getMultipleIntegers(
                at: self.bytes.readerIndex + WireLimits.commonHeaderLength,
                endianness: self.header.endianness,
                as: (UInt32, UInt16, UInt16).self
            )
        else { return nil }
        return RequestHeaderFields(allocationHint: allocationHint, contextID: contextID, opnum: opnum)
    }

    /// The object UUID of a `request` whose `PFC_OBJECT_UUID` flag is set (C706 12.6.4.9: it
    /// follows `opnum`, in `drep` order). For DCOM calls this is the IPID of the interface
    /// pointer called (MS-DCOM 1.3.5); it stays in the clear when the stub is sealed.
    ///
    /// `nil` when the PDU is not a request, has no object UUID, or is too short to hold it.
    public var requestObjectUUID: DCEUUID? {
        guard self.header.packetType == .request, self.header.flags.contains(.objectUUID) else { return nil }
        return self.bytes.getDCEUUID(
            at: self.bytes.readerIndex + WireLimits.commonHeaderLength + 8,
            endianness: self.header.endianness
        )
    }

    /// The `sec_trailer`, at `frag_length - auth_length - 8` (the PDU's end is the end of
    /// ``bytes``, which the framer makes `frag_length` long).
    ///
    /// `nil` when `auth_length` is 0 (no verifier) or when the trailer would not lie wholly
    /// after the common header.
    public var securityTrailer: SecurityTrailerFields? {
        let authLength = Int(self.header.authLength)
        guard authLength > 0 else { return nil }
        let offset = self.bytes.readableBytes - authLength - WireLimits.securityTrailerLength
        guard offset >= WireLimits.commonHeaderLength,
            let (authType, authLevel, padLength, reserved) = self.bytes.getMultipleIntegers(
                at: self.bytes.readerIndex + offset,
                as: (UInt8, UInt8, UInt8, UInt8).self
            ),
            let contextID = self.bytes.getInteger(
                at: self.bytes.readerIndex + offset + 4,
                endianness: self.header.endianness,
                as: UInt32.self
            )
        else { return nil }
        return SecurityTrailerFields(
            authType: AuthType(rawValue: authType),
            authLevel: AuthLevel(rawValue: authLevel),
            padLength: padLength,
            reserved: reserved,
            contextID: contextID,
            offset: offset
        )
    }
}

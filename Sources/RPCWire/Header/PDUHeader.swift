public import NIOCore

/// The 16-byte common header of every connection-oriented PDU (C706 12.6.3.1).
public struct PDUHeader: Hashable, Sendable {
    public var versionMinor: UInt8
    public var packetType: PacketType
    public var flags: PFCFlags
    public var dataRepresentation: DataRepresentation
    /// Length of the whole PDU, header and authentication verifier included.
    public var fragmentLength: UInt16
    /// Length of `auth_value`, not counting the 8-byte `sec_trailer`.
    public var authLength: UInt16
    public var callID: UInt32

    /// `rpc_vers` is always 5 for the connection-oriented protocol.
    public static let rpcVersion: UInt8 = 5

    public init(
        versionMinor: UInt8 = 0,
        packetType: PacketType,
        flags: PFCFlags = .singleFragment,
        dataRepresentation: DataRepresentation = .littleEndian,
        fragmentLength: UInt16 = 0,
        authLength: UInt16 = 0,
        callID: UInt32
    ) {
        self.versionMinor = versionMinor
        self.packetType = packetType
        self.flags = flags
        self.dataRepresentation = dataRepresentation
        self.fragmentLength = fragmentLength
        self.authLength = authLength
        self.callID = callID
    }

    public var endianness: Endianness { self.dataRepresentation.endianness }
}

extension ByteBuffer {
    /// Reads and validates a common header without moving the reader index.
    ///
    /// Returns `nil` when fewer than 16 bytes are readable. Throws when the header can never start
    /// a valid PDU: wrong version, unknown data representation, a connectionless or unknown type,
    /// `frag_length` below 16 or above `limits`, or `auth_length` that does not fit.
    public func peekPDUHeader(limits: WireLimits) throws -> PDUHeader? {
        try self.peekPDUHeader(maximumFragmentLength: limits.maximumFragmentLength)
    }

    /// ``peekPDUHeader(limits:)`` with the one limit a header is checked against, for framing
    /// that keeps only that limit per connection direction (``PDUStream``).
    public func peekPDUHeader(maximumFragmentLength: Int) throws -> PDUHeader? {
        let start = self.readerIndex
        guard self.readableBytes >= WireLimits.commonHeaderLength,
            let (version, minor, ptype, flags) = self.getMultipleIntegers(
                at: start,
                as: (UInt8, UInt8, UInt8, UInt8).self
            ),
            let drep = self.getDataRepresentation(at: start + 4)
        else { return nil }

        guard version == PDUHeader.rpcVersion, minor <= 1 else {
            throw RPCWireError(.unsupportedVersion, "rpc_vers \(version).\(minor)")
        }
        guard drep.hasValidIntegerRepresentation else {
            throw RPCWireError(.invalidDataRepresentation, "drep[0] 0x\(String(drep.bytes.0, radix: 16))")
        }
        let packetType = PacketType(rawValue: ptype)
        guard packetType.isConnectionOriented else {
            throw RPCWireError(.invalidPacketType, "PTYPE \(ptype)")
        }
        guard
            let (fragmentLength, authLength, callID) = self.getMultipleIntegers(
                at: start + 8,
                endianness: drep.endianness,
                as: (UInt16, UInt16, UInt32).self
            )
        else { return nil }

        guard Int(fragmentLength) >= WireLimits.commonHeaderLength else {
            throw RPCWireError(.fragmentTooShort, "frag_length \(fragmentLength)")
        }
        guard Int(fragmentLength) <= maximumFragmentLength else {
            throw RPCWireError(
                .fragmentTooLong,
                "frag_length \(fragmentLength) > limit \(maximumFragmentLength)"
            )
        }
        if authLength > 0 {
            let needed = WireLimits.commonHeaderLength + WireLimits.securityTrailerLength + Int(authLength)
            guard needed <= Int(fragmentLength) else {
                throw RPCWireError(
                    .authLengthTooLong,
                    "auth_length \(authLength) + trailer does not fit in frag_length \(fragmentLength)"
                )
            }
        }
        return PDUHeader(
            versionMinor: minor,
            packetType: packetType,
            flags: PFCFlags(rawValue: flags),
            dataRepresentation: drep,
            fragmentLength: fragmentLength,
            authLength: authLength,
            callID: callID
        )
    }

    /// Writes a common header. `frag_length` and `auth_length` are written as given; serializers
    /// write placeholders and patch them with ``setPDULengths(fragmentLength:authLength:at:endianness:)``.
    @discardableResult
    public mutating func writePDUHeader(_ header: PDUHeader) -> Int {
        var written = self.writeMultipleIntegers(
            PDUHeader.rpcVersion,
            header.versionMinor,
            header.packetType.rawValue,
            header.flags.rawValue
        )
        written += self.writeDataRepresentation(header.dataRepresentation)
        written += self.writeMultipleIntegers(
            header.fragmentLength,
            header.authLength,
            header.callID,
            endianness: header.endianness
        )
        return written
    }

    /// Back-patches `frag_length` and `auth_length` of a header written at `headerIndex`.
    mutating func setPDULengths(fragmentLength: UInt16, authLength: UInt16, at headerIndex: Int, endianness: Endianness)
    {
        self.setInteger(fragmentLength, at: headerIndex + 8, endianness: endianness)
        self.setInteger(authLength, at: headerIndex + 10, endianness: endianness)
    }
}

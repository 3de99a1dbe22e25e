public import NIOCore

/// The body of a `bind_ack` (PTYPE 12) or `alter_context_resp` (PTYPE 15) (C706 12.6.4.4, 12.6.4.2).
public struct BindAckPDU: Hashable, Sendable {
    public var maxTransmitFragment: UInt16
    public var maxReceiveFragment: UInt16
    public var associationGroupID: UInt32
    /// `sec_addr`: the server's port as text, NUL included; may be empty in alter_context_resp.
    /// The gateway rewrites it to its own port on mapped connections
    /// (``PDU/replacingSecondaryAddress(port:)``).
    public var secondaryAddress: [UInt8]
    public var results: [PresentationResult]
    public var trailingBytes: ByteBuffer

    public init(
        maxTransmitFragment: UInt16,
        maxReceiveFragment: UInt16,
        associationGroupID: UInt32,
        secondaryAddress: [UInt8],
        results: [PresentationResult],
        trailingBytes: ByteBuffer = ByteBuffer()
    ) {
        self.maxTransmitFragment = maxTransmitFragment
        self.maxReceiveFragment = maxReceiveFragment
        self.associationGroupID = associationGroupID
        self.secondaryAddress = secondaryAddress
        self.results = results
        self.trailingBytes = trailingBytes
    }

    /// `sec_addr` for a port, as servers write it: decimal ASCII with a terminating NUL.
    public static func secondaryAddress(port: UInt16) -> [UInt8] {
        Array(String(port).utf8) + [0]
    }

    /// Each result is u16 result, u16 reason, 20-byte transfer syntax.
    static let resultLength = 24
}

extension ByteBuffer {
    /// Parses a bind_ack/alter_context_resp body; `self` is exactly the body. Alignment of the
    /// result list is relative to the PDU start, which is 16 bytes (4-aligned) before the body.
    mutating func readBindAckPDUBody(endianness: Endianness, limits: WireLimits) throws -> BindAckPDU {
        let bodyStart = self.readerIndex
        guard
            let (maxTransmit, maxReceive, group, addressLength) = self.readMultipleIntegers(
                endianness: endianness,
                as: (UInt16, UInt16, UInt32, UInt16).self
            )
        else { throw RPCWireError.truncated("bind_ack header", need: 10, have: self.readableBytes) }
        guard let address = self.readBytes(length: Int(addressLength)) else {
            throw RPCWireError.truncated("sec_addr", need: Int(addressLength), have: self.readableBytes)
        }
        let consumed = self.readerIndex - bodyStart
        let padding = (4 - consumed % 4) % 4
        guard self.readableBytes >= padding,
            let (count, _, _) = self.getMultipleIntegers(
                at: self.readerIndex + padding,
                endianness: endianness,
                as: (UInt8, UInt8, UInt16).self
            )
        else {
            throw RPCWireError.truncated("bind_ack result list", need: padding + 4, have: self.readableBytes)
        }
        self.moveReaderIndex(forwardBy: padding + 4)
        guard Int(count) <= limits.maximumPresentationContexts else {
            throw RPCWireError(
                .tooManyPresentationContexts,
                "n_results \(count) > limit \(limits.maximumPresentationContexts)"
            )
        }
        let needed = Int(count) * BindAckPDU.resultLength
        guard self.readableBytes >= needed else {
            throw RPCWireError.truncated("bind_ack results", need: needed, have: self.readableBytes)
        }
        var results: [PresentationResult] = []
        results.reserveCapacity(Int(count))
        for _ in 0..<Int(count) {
            guard
                let (result, reason) = self.readMultipleIntegers(endianness: endianness, as: (UInt16, UInt16).self),
                let syntax = self.readSyntaxID(endianness: endianness)
            else {
                throw RPCWireError.truncated("bind_ack result", need: BindAckPDU.resultLength, have: self.readableBytes)
            }
            results.append(
                PresentationResult(
                    result: PresentationResultCode(rawValue: result),
                    reason: ProviderReason(rawValue: reason),
                    transferSyntax: syntax
                )
            )
        }
        return BindAckPDU(
            maxTransmitFragment: maxTransmit,
            maxReceiveFragment: maxReceive,
            associationGroupID: group,
            secondaryAddress: address,
            results: results,
            trailingBytes: self.readSlice(length: self.readableBytes) ?? ByteBuffer()
        )
    }

    mutating func writeBindAckPDUBody(_ ack: BindAckPDU, endianness: Endianness) {
        let bodyStart = self.writerIndex
        self.writeMultipleIntegers(
            ack.maxTransmitFragment,
            ack.maxReceiveFragment,
            ack.associationGroupID,
            UInt16(truncatingIfNeeded: ack.secondaryAddress.count),
            endianness: endianness
        )
        self.writeBytes(ack.secondaryAddress)
        let padding = (4 - (self.writerIndex - bodyStart) % 4) % 4
        self.writeRepeatingByte(0, count: padding)
        self.writeMultipleIntegers(
            UInt8(truncatingIfNeeded: ack.results.count),
            UInt8(0),
            UInt16(0),
            endianness: endianness
        )
        for result in ack.results {
            self.writeMultipleIntegers(result.result.rawValue, result.reason.rawValue, endianness: endianness)
            self.writeSyntaxID(result.transferSyntax, endianness: endianness)
        }
        var trailing = ack.trailingBytes
        self.writeBuffer(&trailing)
    }
}

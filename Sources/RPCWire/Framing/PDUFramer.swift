public import NIOCore

/// Splits a connection-oriented DCE/RPC byte stream into PDUs by `frag_length` (C706 12.6.3.1).
///
/// `frag_length` is encoded in the byte order that `drep` names, so a fixed-endianness length-field
/// decoder does not fit. The framer never buffers more than one PDU beyond the configured
/// ``WireLimits/maximumFragmentLength``: an oversized `frag_length` is an error at the header.
public struct PDUFramer: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = RawPDU

    public let limits: WireLimits

    public init(limits: WireLimits = WireLimits()) {
        self.limits = limits
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RawPDU? {
        try buffer.readRawPDU(limits: self.limits)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RawPDU? {
        try self.decode(buffer: &buffer)
    }
}

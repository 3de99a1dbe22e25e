public import NIOCore

/// One whole PDU as it came off the wire: its validated header and all of its bytes.
///
/// The gateway forwards ``bytes`` unchanged unless it must rewrite them (endpoint-mapper replies),
/// so nothing here re-encodes a PDU that is only being inspected.
public struct RawPDU: Hashable, Sendable {
    public var header: PDUHeader
    /// The whole PDU, common header included; `readableBytes == header.fragmentLength`.
    public var bytes: ByteBuffer

    public init(header: PDUHeader, bytes: ByteBuffer) {
        self.header = header
        self.bytes = bytes
    }
}

extension ByteBuffer {
    /// Reads one whole PDU.
    ///
    /// Returns `nil` (reader index unchanged) until `frag_length` bytes are readable; throws
    /// ``RPCWireError`` as soon as the header shows the stream can never be valid.
    public mutating func readRawPDU(limits: WireLimits) throws -> RawPDU? {
        try self.readRawPDU(maximumFragmentLength: limits.maximumFragmentLength)
    }

    /// ``readRawPDU(limits:)`` with the one limit framing checks.
    public mutating func readRawPDU(maximumFragmentLength: Int) throws -> RawPDU? {
        guard let header = try self.peekPDUHeader(maximumFragmentLength: maximumFragmentLength),
            let bytes = self.readSlice(length: Int(header.fragmentLength))
        else { return nil }
        return RawPDU(header: header, bytes: bytes)
    }
}

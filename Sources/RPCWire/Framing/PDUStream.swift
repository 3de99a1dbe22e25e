public import NIOCore

/// One direction of a connection's byte stream, cut into whole PDUs (C706 12.6.3.1): bytes are
/// appended as they arrive and PDUs taken off the front.
///
/// The same framing as ``PDUFramer``, for a channel handler that frames for itself instead of
/// sitting behind NIO's generic `ByteToMessageHandler` (which, used across modules, runs
/// unspecialized and boxes every PDU into an existential: a third of the gateway's per-PDU cost).
///
/// Memory stays bounded: a PDU is never longer than ``WireLimits/maximumFragmentLength`` (checked
/// at its header), so at most one partial PDU plus the bytes of one read are kept. When the stream
/// is empty no buffer is kept at all (an idle connection holds no receive storage here), and the
/// bytes of a partial PDU are moved to the front at most once per PDU taken, so a client that
/// sends one byte per read costs linear, not quadratic, copying.
public struct PDUStream: Sendable {
    /// The one limit framing checks (``WireLimits/maximumFragmentLength``): kept alone, not the
    /// whole ``WireLimits``, because every proxied connection holds two streams for its lifetime.
    public let maximumFragmentLength: Int
    private var pending: ByteBuffer?

    public init(limits: WireLimits = WireLimits()) {
        self.maximumFragmentLength = limits.maximumFragmentLength
    }

    /// Bytes received and not yet taken as a PDU.
    public var bufferedBytes: Int { self.pending?.readableBytes ?? 0 }

    /// Appends bytes that arrived. A buffer handed over whole (the common case: a read that starts
    /// at a PDU boundary) is kept as it is, without copying.
    public mutating func append(_ bytes: ByteBuffer) {
        guard var pending = self.pending, pending.readableBytes > 0 else {
            self.pending = bytes
            return
        }
        self.pending = nil  // keep the storage uniquely referenced while it grows
        if pending.readerIndex > 0 {
            pending.discardReadBytes()
        }
        pending.writeImmutableBuffer(bytes)
        self.pending = pending
    }

    /// The next whole PDU, or `nil` until all of its bytes have arrived. Throws ``RPCWireError``
    /// as soon as the stream can never be valid; the bytes stay where they were.
    public mutating func nextPDU() throws -> RawPDU? {
        guard var pending = self.pending else { return nil }
        self.pending = nil
        defer { self.pending = pending.readableBytes > 0 ? pending : nil }
        return try pending.readRawPDU(maximumFragmentLength: self.maximumFragmentLength)
    }

    /// Takes every byte not yet framed (for a handler that leaves the pipeline and passes them on).
    public mutating func takeBufferedBytes() -> ByteBuffer? {
        defer { self.pending = nil }
        return self.pending
    }

    /// Forgets every byte not yet framed (after a framing error: nothing more is read).
    public mutating func removeAll() {
        self.pending = nil
    }
}

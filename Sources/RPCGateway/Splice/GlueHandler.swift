import NIOCore
import RPCWire

/// Which side of a proxied connection a channel is.
enum ProxySide: Sendable {
    case client
    case server

    var other: ProxySide { self == .client ? .server : .client }
}

/// The tail handler of each of the two channels of a proxied connection. It cuts the channel's
/// bytes into whole PDUs, hands them to the shared ``ProxyConnection`` and implements the splice
/// mechanics (after swift-nio-ssh's `GlueHandler`): a side reads only while its partner is
/// writable, half-close is propagated, and closing either side closes both.
///
/// Before the splice (a connection routed by its first bind) the client's handler reads only
/// while the connection takes PDUs: while the runtime resolves or connects, what arrived stays
/// framed-but-unread here, at most ``maximumHeldFragments`` fragments' worth, and a half-close is
/// held until it is taken.
///
/// It frames for itself (``PDUStream``) instead of sitting behind `ByteToMessageHandler`: NIO's
/// generic handler runs unspecialized across modules and boxes each PDU into `NIOAny`, which the
/// callgrind profile of bulk forwarding put at about a third of the gateway's instructions
/// (docs/PERFORMANCE.md).
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Most bytes held while the connection takes no PDU, in units of the largest fragment: a
    /// client waits for its bind_ack, so a well-behaved one sends nothing more.
    static let maximumHeldFragments = 2

    let side: ProxySide
    private let connection: ProxyConnection
    private(set) var context: ChannelHandlerContext?
    private var pendingRead = false
    private var input: PDUStream
    /// A framing error ended the stream: later bytes are ignored (the connection is closing).
    private var inputFailed = false
    /// The peer half-closed while PDUs were still held: passed on once they are taken.
    private var inputClosedHeld = false

    init(side: ProxySide, connection: ProxyConnection, limits: WireLimits) {
        self.side = side
        self.connection = connection
        self.input = PDUStream(limits: limits)
    }

    private var partner: GlueHandler? { self.connection.handler(for: self.side.other) }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: - Writes from the connection

    func write(_ bytes: ByteBuffer) {
        self.context?.write(NIOAny(bytes), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func closeOutput() {
        self.context?.close(mode: .output, promise: nil)
    }

    func close() {
        self.context?.close(promise: nil)
    }

    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    /// The handler could not be installed: the connection ends (and releases what it holds).
    func abandon() {
        self.connection.close(.protocolError)
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.inputFailed else { return }
        self.input.append(Self.unwrapInboundIn(data))
        self.deliverPDUs()
        if !self.connection.isClosing, !self.connection.acceptsPDUs(from: self.side),
            self.input.bufferedBytes > Self.maximumHeldFragments * self.input.maximumFragmentLength
        {
            self.connection.close(.protocolError)
        }
    }

    /// Hands whole PDUs to the connection while it takes them.
    private func deliverPDUs() {
        do {
            while !self.connection.isClosing, self.connection.acceptsPDUs(from: self.side),
                let pdu = try self.input.nextPDU()
            {
                self.connection.received(pdu, from: self.side)
            }
        } catch {
            self.inputFailed = true
            self.input.removeAll()
            self.connection.errorCaught(error, on: self.side)
        }
    }

    /// The connection takes PDUs again (routing finished): the held ones first, then reads.
    func resumeInput() {
        guard let context = self.context, !self.connection.isClosing, self.connection.acceptsPDUs(from: self.side)
        else { return }
        self.deliverPDUs()
        self.connection.readComplete(from: self.side)
        if self.inputClosedHeld, self.connection.acceptsPDUs(from: self.side) {
            self.inputClosedHeld = false
            self.connection.inputClosed(on: self.side)
        }
        if self.pendingRead, self.partner?.isWritable ?? true {
            self.pendingRead = false
            context.read()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.connection.readComplete(from: self.side)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.partner?.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            if self.connection.acceptsPDUs(from: self.side) || self.connection.isClosing {
                self.connection.inputClosed(on: self.side)
            } else {
                self.inputClosedHeld = true
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.connection.channelInactive(self.side)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.connection.errorCaught(error, on: self.side)
    }

    // MARK: - Backpressure

    func read(context: ChannelHandlerContext) {
        if (self.partner?.isWritable ?? true) && self.connection.acceptsPDUs(from: self.side) {
            context.read()
        } else {
            self.pendingRead = true
        }
    }

    private func resumeReading() {
        guard self.pendingRead, let context = self.context, self.connection.acceptsPDUs(from: self.side) else { return }
        self.pendingRead = false
        context.read()
    }
}

@available(*, unavailable)
extension GlueHandler: Sendable {}

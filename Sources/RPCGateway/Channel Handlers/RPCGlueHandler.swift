import NIOCore
import RPCWire

/// Which side of a proxied connection a channel is.
enum ProxySide: Sendable {
    case client
    case server

    var other: ProxySide { self == .client ? .server : .client }
}

/// The tail handler of each of the two channels of a proxied connection. It hands whole PDUs to
/// the shared ``RPCProxyConnection`` and implements the splice mechanics (after swift-nio-ssh's
/// `GlueHandler`): a side reads only while its partner is writable, half-close is propagated,
/// and closing either side closes both.
final class RPCGlueHandler: ChannelDuplexHandler {
    typealias InboundIn = RawPDU
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let side: ProxySide
    private let connection: RPCProxyConnection
    private(set) var context: ChannelHandlerContext?
    private var pendingRead = false

    init(side: ProxySide, connection: RPCProxyConnection) {
        self.side = side
        self.connection = connection
    }

    private var partner: RPCGlueHandler? { self.connection.handler(for: self.side.other) }

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

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.connection.received(Self.unwrapInboundIn(data), from: self.side)
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
            self.connection.inputClosed(on: self.side)
        } else if event is IdleStateHandler.IdleStateEvent {
            self.connection.idleTimeout()
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
        if self.partner?.isWritable ?? true {
            context.read()
        } else {
            self.pendingRead = true
        }
    }

    private func resumeReading() {
        guard self.pendingRead, let context = self.context else { return }
        self.pendingRead = false
        context.read()
    }
}

@available(*, unavailable)
extension RPCGlueHandler: Sendable {}

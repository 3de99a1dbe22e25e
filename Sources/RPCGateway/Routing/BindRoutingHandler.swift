import NIOCore
import RPCWire

/// Sits on a client channel whose server is not known yet: frames the client's bytes, hands the
/// first PDU to the gateway (which decides with ``BindRouting``, resolves the interface and
/// connects) and holds the bytes that follow until it is removed, when it passes them on, still
/// unframed, to the splice's glue handler.
final class BindRoutingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Most bytes held after the PDU being routed, in units of the largest fragment: a client
    /// waits for its bind_ack, so a well-behaved one sends nothing more.
    static let maximumHeldFragments = 2

    private enum State {
        case waiting
        case routing
        case handedOver
    }

    private var state = State.waiting
    private var input: PDUStream
    private var maximumHeldBytes: Int { Self.maximumHeldFragments * self.input.limits.maximumFragmentLength }
    /// The client half-closed while its first bind was being routed: passed on after the handover.
    private var inputClosedWhileRouting = false
    private let onFirstPDU: (RawPDU, BindRoutingHandler) -> Void
    private let onClosedBeforeHandover: () -> Void
    private(set) var context: ChannelHandlerContext?

    init(
        limits: WireLimits,
        onFirstPDU: @escaping (RawPDU, BindRoutingHandler) -> Void,
        onClosedBeforeHandover: @escaping () -> Void
    ) {
        self.input = PDUStream(limits: limits)
        self.onFirstPDU = onFirstPDU
        self.onClosedBeforeHandover = onClosedBeforeHandover
    }

    var isHandedOver: Bool { self.state == .handedOver }

    /// No PDU is being routed: nothing of this connection has reached a server.
    var isWaiting: Bool { self.state == .waiting }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// The connection now owns the client channel (and its accounting).
    func handOver() {
        self.state = .handedOver
    }

    /// The first bind was answered locally (refused); the next PDU is routed afresh.
    func awaitNextBind() {
        guard self.state == .routing else { return }
        self.state = .waiting
        self.routeNextPDU()
    }

    /// In the waiting state, routes the next whole PDU if one has arrived. A framing error closes
    /// the connection: nothing of it has reached a server yet.
    private func routeNextPDU() {
        guard self.state == .waiting else { return }
        do {
            guard let pdu = try self.input.nextPDU() else { return }
            self.state = .routing
            self.onFirstPDU(pdu, self)
        } catch {
            self.input.removeAll()
            self.close()
        }
    }

    func write(_ bytes: ByteBuffer) {
        self.context?.writeAndFlush(NIOAny(bytes), promise: nil)
    }

    func close() {
        self.context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.input.append(Self.unwrapInboundIn(data))
        self.routeNextPDU()
        // Waiting, what is left is less than one PDU (its header bounds it); routing, it is held.
        if self.state != .waiting, self.input.bufferedBytes > self.maximumHeldBytes {
            context.close(promise: nil)
        }
    }

    /// Child channels allow remote half-closure, so a client that closes shows up as `inputClosed`,
    /// not as an inactive channel. Waiting for a bind, there is nothing left to route: close (the
    /// connection is released at once instead of at the bind timeout). While a bind is being
    /// routed, the event is passed on to the splice after the handover.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, case .inputClosed = event, self.state != .handedOver else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if self.state == .waiting {
            context.close(promise: nil)
        } else {
            self.inputClosedWhileRouting = true
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.state != .handedOver {
            self.state = .handedOver
            self.onClosedBeforeHandover()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.state != .handedOver {
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let held = self.input.takeBufferedBytes() {
            context.fireChannelRead(Self.wrapInboundOut(held))
            context.fireChannelReadComplete()
        }
        if self.inputClosedWhileRouting {
            self.inputClosedWhileRouting = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        self.context = nil
    }
}

@available(*, unavailable)
extension BindRoutingHandler: Sendable {}

import NIOCore
import RPCWire

/// Sits on a client channel whose server is not known yet: hands the first PDU to the gateway
/// (which decides with ``BindRouting``, resolves the interface and connects) and holds any later
/// PDUs until it is removed, when it passes them on to the splice's glue handler.
final class BindRoutingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = RawPDU
    typealias InboundOut = RawPDU

    /// Most PDUs held while the first bind is being routed (a client waits for its bind_ack, so a
    /// well-behaved one sends none).
    static let maximumHeldPDUs = 16

    private enum State {
        case waiting
        case routing
        case handedOver
    }

    private var state = State.waiting
    private var held: [RawPDU] = []
    /// The client half-closed while its first bind was being routed: passed on after the handover.
    private var inputClosedWhileRouting = false
    private let onFirstPDU: (RawPDU, BindRoutingHandler) -> Void
    private let onClosedBeforeHandover: () -> Void
    private(set) var context: ChannelHandlerContext?

    init(onFirstPDU: @escaping (RawPDU, BindRoutingHandler) -> Void, onClosedBeforeHandover: @escaping () -> Void) {
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
        let held = self.held
        self.held = []
        for pdu in held {
            guard self.state == .waiting else {
                self.held.append(pdu)
                continue
            }
            self.state = .routing
            self.onFirstPDU(pdu, self)
        }
    }

    func write(_ bytes: ByteBuffer) {
        self.context?.writeAndFlush(NIOAny(bytes), promise: nil)
    }

    func close() {
        self.context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let pdu = Self.unwrapInboundIn(data)
        switch self.state {
        case .waiting:
            self.state = .routing
            self.onFirstPDU(pdu, self)
        case .routing, .handedOver:
            guard self.held.count < Self.maximumHeldPDUs else {
                context.close(promise: nil)
                return
            }
            self.held.append(pdu)
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
        let held = self.held
        self.held = []
        for pdu in held {
            context.fireChannelRead(Self.wrapInboundOut(pdu))
        }
        if !held.isEmpty { context.fireChannelReadComplete() }
        if self.inputClosedWhileRouting {
            self.inputClosedWhileRouting = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        self.context = nil
    }
}

@available(*, unavailable)
extension BindRoutingHandler: Sendable {}

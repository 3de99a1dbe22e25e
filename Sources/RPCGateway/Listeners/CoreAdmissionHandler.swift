import Logging
import NIOCore
import NIOSSL
import NIOTLS
import RPCPolicy
import RPCWire

/// The first handler after TLS on a core connection: checks the edge's certificate against the
/// allow list once the handshake completes, reads the PROXY v2 header (bounded in size by the
/// codec and in time by `timeout`), asks the core to admit the connection, then replaces itself
/// with the inspection handlers and passes on the bytes that followed the header.
final class CoreAdmissionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum State {
        case handshaking
        case awaitingHeader(peer: String)
        case connecting
        case admitted
        case refused
    }

    private let core: CoreListener
    private let timeout: TimeAmount
    private var state: State = .handshaking
    private var buffer = ByteBuffer()
    private var timer: Scheduled<Void>?
    private var identity: [PeerName] = []

    init(core: CoreListener, timeout: TimeAmount) {
        self.core = core
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) { [self] in
            let context = loopBound.value
            switch self.state {
            case .handshaking:
                self.core.handshake(.timeout, peer: "unknown", address: context.channel.remoteAddress, identity: [])
                self.refuse(context)
            case .awaitingHeader:
                self.core.refuse(
                    .proxyHeader,
                    "no PROXY header in time",
                    address: context.channel.remoteAddress,
                    detail: "timeout"
                )
                self.refuse(context)
            case .connecting, .admitted, .refused:
                break
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .handshaking = self.state, let tls = event as? TLSUserEvent, case .handshakeCompleted = tls else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let address = context.channel.remoteAddress
        let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
        guard let certificate, let der = try? certificate.toDERBytes() else {
            self.core.handshake(.noCertificate, peer: "unknown", address: address, identity: [])
            self.refuse(context)
            return
        }
        do {
            self.identity = try PeerName.names(ofDERCertificate: der)
        } catch {
            self.core.handshake(.badCertificate, peer: "unknown", address: address, identity: [], error: error)
            self.refuse(context)
            return
        }
        guard let peer = self.core.allowList.match(self.identity) else {
            self.core.handshake(.peerNotAllowed, peer: "unknown", address: address, identity: self.identity)
            self.refuse(context)
            return
        }
        self.core.handshake(.success, peer: peer, address: address, identity: self.identity)
        self.state = .awaitingHeader(peer: peer)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch self.state {
        case .handshaking:
            self.core.handshake(
                TLSHandshakeResult.classify(error),
                peer: "unknown",
                address: context.channel.remoteAddress,
                identity: [],
                error: error
            )
            self.refuse(context)
        case .awaitingHeader, .connecting:
            self.refuse(context)
        case .admitted, .refused:
            context.fireErrorCaught(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .handshaking = self.state {
            self.state = .refused
            self.core.handshake(.failed, peer: "unknown", address: context.channel.remoteAddress, identity: [])
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        switch self.state {
        case .awaitingHeader(let peer):
            self.buffer.writeBuffer(&bytes)
            self.readHeader(context: context, peer: peer)
        case .connecting:
            self.buffer.writeBuffer(&bytes)
        case .handshaking, .refused:
            break
        case .admitted:
            context.fireChannelRead(data)
        }
    }

    private func readHeader(context: ChannelHandlerContext, peer: String) {
        let address = context.channel.remoteAddress
        let header: ProxyHeader
        do {
            guard let decoded = try self.buffer.readProxyHeader() else { return }
            header = decoded
        } catch {
            self.core.refuse(.proxyHeader, "invalid PROXY header", address: address, detail: "\(error)")
            self.refuse(context)
            return
        }
        guard header.command == .proxy, let target = header.rpcGateTarget else {
            self.core.refuse(
                .proxyHeader,
                "PROXY header without a target",
                address: address,
                detail: "\(header.command)"
            )
            self.refuse(context)
            return
        }
        let client: SocketAddress?
        let clientIP: IPAddress
        switch header.addresses {
        case .tcp4(let source, let port, _, _):
            clientIP = .v4(source.value)
            client = try? clientIP.socketAddress(port: port)
        case .tcp6(let source, let port, _, _):
            var high: UInt64 = 0
            var low: UInt64 = 0
            for (index, byte) in source.enumerated() {
                if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
            }
            clientIP = .v6(high, low)
            client = try? clientIP.socketAddress(port: port)
        case .unspecified:
            self.core.refuse(
                .proxyHeader,
                "PROXY header without a client address",
                address: address,
                detail: "unspecified"
            )
            self.refuse(context)
            return
        }
        guard self.core.allows(target) else {
            self.core.refuse(
                .targetNotAllowed,
                "tunnelled connection to a server not in core.upstreams refused",
                address: address,
                detail: "\(target)"
            )
            self.refuse(context)
            return
        }
        self.state = .connecting
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.core.admit(context.channel, client: client, clientIP: clientIP, target: target, peer: peer)
            .assumeIsolated()
            .whenComplete { [self] result in
                let context = loopBound.value
                switch result {
                case .success(let handlers):
                    do {
                        try context.pipeline.syncOperations.addHandlers(handlers, position: .after(self))
                    } catch {
                        self.refuse(context)
                        return
                    }
                    self.state = .admitted
                    self.timer?.cancel()
                    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                    context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                case .failure:
                    self.refuse(context)
                }
            }
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if self.buffer.readableBytes > 0 {
            let rest = self.buffer
            self.buffer = ByteBuffer()
            context.fireChannelRead(Self.wrapInboundOut(rest))
            context.fireChannelReadComplete()
        }
        context.leavePipeline(removalToken: removalToken)
    }

    private func refuse(_ context: ChannelHandlerContext) {
        self.state = .refused
        self.timer?.cancel()
        self.buffer = ByteBuffer()
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension CoreAdmissionHandler: Sendable {}

import ArgumentParser
import NIOCore
import NIOPosix

/// A bare SwiftNIO TCP forwarder: no parsing, no policy, no metrics, no timers. It is the floor
/// any proxy built on SwiftNIO's channels starts from, measured in the same run as rpcgate and
/// haproxy (`BASELINE=nio` in Benchmarks/compare.sh), so that docs/PERFORMANCE.md can say which
/// part of a cost is NIO's and which is the gateway's own.
///
/// It does what the haproxy path does (`mode tcp`, the EPM and the data port each forwarded to the
/// same port upstream, the upstream connected at accept) with the channel settings rpcgate uses
/// (half-close allowed, TCP_NODELAY, the same adaptive read sizes), the upstream on the accepted
/// channel's event loop, and the splice of swift-nio-examples' `GlueHandler`: a side reads only
/// while its partner is writable, a half-close is passed on, closing one side closes both.
struct Splice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A bare SwiftNIO TCP forwarder (the floor of a NIO proxy, for compare.sh)."
    )

    @Option(help: "Address the listeners bind to.")
    var listen: String

    @Option(help: "Ports to listen on; each forwards to the same port on --upstream.")
    var ports: String

    @Option(help: "Address connections are forwarded to.")
    var upstream: String = "127.0.0.1"

    @Option(help: "Event loop threads.")
    var threads: Int = 1

    func validate() throws {
        guard !self.parsedPorts.isEmpty else { throw ValidationError("--ports: a comma-separated list of 1-65535") }
        guard (1...64).contains(self.threads) else { throw ValidationError("--threads must be 1-64") }
    }

    /// The ports of `--ports`; empty when any entry is not a port (none is dropped silently).
    private var parsedPorts: [Int] {
        let entries = self.ports.split(separator: ",", omittingEmptySubsequences: false)
        let ports = entries.compactMap { Int($0) }.filter { (1...65535).contains($0) }
        return ports.count == entries.count ? ports : []
    }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        var listeners: [any Channel] = []
        for port in self.parsedPorts {
            let target = try SocketAddress(ipAddress: self.upstream, port: port)
            let listener = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { inbound in
                    do {
                        try BareSplice.configure(inbound)
                    } catch {
                        return inbound.eventLoop.makeFailedFuture(error)
                    }
                    return ClientBootstrap(group: inbound.eventLoop)
                        .channelInitializer { outbound in
                            do {
                                try BareSplice.configure(outbound)
                                return outbound.eventLoop.makeSucceededVoidFuture()
                            } catch {
                                return outbound.eventLoop.makeFailedFuture(error)
                            }
                        }
                        .connect(to: target)
                        .flatMapThrowing { outbound in
                            let (client, server) = BareSplice.matchedPair()
                            try inbound.pipeline.syncOperations.addHandler(client)
                            try outbound.pipeline.syncOperations.addHandler(server)
                        }
                }
                .bind(host: self.listen, port: port)
                .get()
            listeners.append(listener)
        }
        stderrLine("splice: forwarding \(self.listen):{\(self.ports)} to \(self.upstream)")
        try await listeners.first?.closeFuture.get()
    }
}

/// One side of a bare splice (after swift-nio-examples' GlueHandler; both channels share one
/// event loop, so no lock).
final class BareSplice: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: BareSplice?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func configure(_ channel: any Channel) throws {
        guard let options = channel.syncOptions else { return }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.socketOption(.tcp_nodelay), value: 1)
        // rpcgate's read sizing (ProxiedConnectionReads), so that kept receive buffers compare.
        let reads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
        try options.setOption(.recvAllocator, value: reads)
    }

    static func matchedPair() -> (BareSplice, BareSplice) {
        let first = BareSplice()
        let second = BareSplice()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.partner?.context?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.partner?.context?.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            self.partner?.context?.close(mode: .output, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let partner = self.partner, partner.pendingRead {
            partner.pendingRead = false
            partner.context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if self.partner?.context?.channel.isWritable ?? false {
            context.read()
        } else {
            self.pendingRead = true
        }
    }
}

@available(*, unavailable)
extension BareSplice: Sendable {}

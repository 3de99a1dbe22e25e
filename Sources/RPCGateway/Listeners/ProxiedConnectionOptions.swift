import NIOCore
import NIOPosix

/// How the channels of a proxied connection size their reads.
enum ProxiedConnectionReads {
    /// Starts at 256 bytes instead of NIO's 2,048: binds, endpoint-mapper calls and most DCE/RPC
    /// calls are a few hundred bytes, and NIO keeps each channel's last receive buffer for the next
    /// read (its pool never shrinks a kept buffer), so an idle connection (two channels) holds
    /// 3.5 KiB less. A larger first PDU (an NTLM bind) costs one more read, after which the
    /// allocator has stepped up (it does whenever a read fills the buffer), up to NIO's usual
    /// 64 KiB for bulk traffic.
    static let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
}

/// The options of a proxied connection's channels (client and upstream sides): half-close allowed,
/// so a client's FIN can be passed on while the reply still flows; no Nagle delay on
/// request/response traffic; ``ProxiedConnectionReads`` sizing.
///
/// Set synchronously from the channel initializers rather than as bootstrap channel options: a
/// bootstrap applies its options one by one through a chain of futures, which the callgrind churn
/// profile put at about 16 % of the instructions of a connection set-up (docs/PERFORMANCE.md).
enum ProxiedChannelOptions {
    static func apply(to channel: any Channel) throws {
        guard let options = channel.syncOptions else {
            // Not a socket channel (no synchronous options): the same options, each applied at once
            // on the channel's event loop.
            _ = channel.setOption(.allowRemoteHalfClosure, value: true)
            _ = channel.setOption(.socketOption(.tcp_nodelay), value: 1)
            _ = channel.setOption(.recvAllocator, value: ProxiedConnectionReads.allocator)
            return
        }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.socketOption(.tcp_nodelay), value: 1)
        try options.setOption(.recvAllocator, value: ProxiedConnectionReads.allocator)
    }
}

extension ClientBootstrap {
    /// The outbound side of a proxied connection (to the server, or to a core gateway), with
    /// ``ProxiedChannelOptions``. A caller that sets its own `channelInitializer` applies them there.
    /// (NIO's client bootstrap sets TCP_NODELAY by default, as one bootstrap option.)
    static func proxiedConnection(on eventLoop: any EventLoop, connectTimeout: TimeAmount) -> ClientBootstrap {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                do {
                    try ProxiedChannelOptions.apply(to: channel)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
    }
}

extension ServerBootstrap {
    /// A listener whose accepted channels are the client side of proxied connections. Its
    /// `childChannelInitializer` applies ``ProxiedChannelOptions`` first.
    static func proxiedConnections(group: any EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    }
}

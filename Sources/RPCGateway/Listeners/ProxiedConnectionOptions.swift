import NIOCore
import NIOPosix

/// How the channels of a proxied connection size their reads.
enum ProxiedConnectionReads {
    /// Starts at 512 bytes instead of NIO's 2,048: binds, endpoint-mapper calls and most DCE/RPC
    /// calls are a few hundred bytes, and NIO keeps each channel's next receive buffer, so an idle
    /// connection (two channels) holds 3 KiB less. Bulk traffic grows it back within a few reads
    /// (the allocator steps up whenever a read fills the buffer), up to NIO's usual 64 KiB.
    static let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
}

extension ClientBootstrap {
    /// The outbound side of a proxied connection (to the server, or to a core gateway): half-close
    /// allowed, so a client's FIN can be passed on while the reply still flows; no Nagle delay on
    /// request/response traffic; ``ProxiedConnectionReads`` sizing.
    static func proxiedConnection(on eventLoop: any EventLoop, timeouts: Timeouts) -> ClientBootstrap {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeouts.connectDuration))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: ProxiedConnectionReads.allocator)
    }
}

extension ServerBootstrap {
    /// A listener whose accepted channels are the client side of proxied connections: the same
    /// child options as ``ClientBootstrap/proxiedConnection(on:timeouts:)``.
    static func proxiedConnections(group: any EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: ProxiedConnectionReads.allocator)
    }
}

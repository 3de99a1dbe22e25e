import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RPCWire

/// A core gateway routes tunnel to, with its TLS context (swapped on reload).
struct PeerRuntime: Sendable {
    var settings: PeerSettings
    var context: NIOSSLContext
}

/// The two ways a connection reaches its server.
enum UpstreamConnection {
    /// A TCP connection to the server itself.
    static func direct(timeouts: Timeouts) -> UpstreamConnector {
        // The closure is held by every connection for its lifetime: it captures the one timeout
        // it needs (8 bytes), not the whole ``Timeouts``.
        let connectTimeout = TimeAmount(timeouts.connectDuration)
        return { server, _, eventLoop in
            guard let address = try? server.socketAddress() else {
                return eventLoop.makeFailedFuture(GatewayStartError(description: "no socket address for \(server)"))
            }
            return ClientBootstrap.proxiedConnection(on: eventLoop, connectTimeout: connectTimeout).connect(to: address)
        }
    }

    /// Mutual TLS to the core gateway `peer`, which connects to the server: the PROXY v2 header
    /// carries the real client and the target (sent as soon as the handshake completes;
    /// swift-nio-ssl buffers application data until then). `peer` is `nil` when the route names
    /// a peer the configuration lacks: every connect fails.
    static func tunnel(
        via name: String,
        peer: PeerRuntime?,
        client: SocketAddress?,
        gateway: SocketAddress?,
        timeouts: Timeouts,
        tlsMetrics: TLSMetrics,
        logger: Logger
    ) -> UpstreamConnector {
        let connectTimeout = TimeAmount(timeouts.connectDuration)
        return { server, role, eventLoop in
            guard let peer else {
                return eventLoop.makeFailedFuture(GatewayStartError(description: "unknown peer \(name)"))
            }
            let target = RPCGateTarget(kind: role == .endpointMapper ? .endpointMapper : .mapped, server: server)
            let header = EdgeTunnel.header(client: client, gateway: gateway, target: target)
            return ClientBootstrap.proxiedConnection(on: eventLoop, connectTimeout: connectTimeout)
                .channelInitializer { channel in
                    do {
                        try ProxiedChannelOptions.apply(to: channel)
                        let tls = try NIOSSLClientHandler(
                            context: peer.context,
                            serverHostname: peer.settings.serverName
                        )
                        try channel.pipeline.syncOperations.addHandlers([
                            tls,
                            TLSHandshakeObserver(peer: peer.settings.name, metrics: tlsMetrics, logger: logger),
                        ])
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                .connect(host: peer.settings.host, port: peer.settings.port)
                .map { channel in
                    var bytes = channel.allocator.buffer(capacity: 64)
                    bytes.writeProxyHeader(header)
                    channel.writeAndFlush(bytes, promise: nil)
                    return channel
                }
        }
    }
}

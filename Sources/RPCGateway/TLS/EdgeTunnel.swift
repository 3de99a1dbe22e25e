import Logging
package import NIOCore
import NIOSSL
import NIOTLS
import RPCPolicy
package import RPCWire

/// The edge side of the inter-gateway hop: a route with `via` reaches its server through a core
/// gateway over mutual TLS, and starts each tunnelled connection with a PROXY v2 header naming the
/// real client and the server endpoint the connection is for.
package enum EdgeTunnel {
    /// The PROXY v2 header for a client connection: source is the client, destination the gateway
    /// address and port it reached, plus the ``RPCGateTarget`` TLV.
    package static func header(client: SocketAddress?, gateway: SocketAddress?, target: RPCGateTarget) -> ProxyHeader {
        let addresses: ProxyHeader.Addresses
        switch (Self.address(client), Self.address(gateway)) {
        case (.v4(let source)?, let destination):
            var destinationAddress = IPv4Address.any
            if case .v4(let value)? = destination { destinationAddress = IPv4Address(value: value) }
            addresses = .tcp4(
                source: IPv4Address(value: source),
                sourcePort: UInt16(clamping: client?.port ?? 0),
                destination: destinationAddress,
                destinationPort: UInt16(clamping: gateway?.port ?? 0)
            )
        case (.v6(let high, let low)?, let destination):
            var destinationBytes = [UInt8](repeating: 0, count: 16)
            if case .v6(let dHigh, let dLow)? = destination { destinationBytes = Self.bytes(dHigh, dLow) }
            addresses = .tcp6(
                source: Self.bytes(high, low),
                sourcePort: UInt16(clamping: client?.port ?? 0),
                destination: destinationBytes,
                destinationPort: UInt16(clamping: gateway?.port ?? 0)
            )
        case (nil, _):
            addresses = .unspecified
        }
        return ProxyHeader(command: .proxy, addresses: addresses, tlvs: [target.tlv])
    }

    private static func address(_ socket: SocketAddress?) -> IPAddress? {
        IPAddress(socket)
    }

    private static func bytes(_ high: UInt64, _ low: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }
}

/// Sits after `NIOSSLClientHandler` on an edge's tunnel channel: counts and logs the handshake's
/// outcome (`rpcgate_tls_handshakes_total{peer,result}`) and passes everything on.
final class TLSHandshakeObserver: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let peer: String
    private let metrics: TLSMetrics
    private let logger: Logger
    private var done = false

    init(peer: String, metrics: TLSMetrics, logger: Logger) {
        self.peer = peer
        self.metrics = metrics
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !self.done, let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            self.done = true
            self.metrics.handshake(peer: self.peer, result: .success)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.done {
            self.done = true
            let result = TLSHandshakeResult.classify(error)
            self.metrics.handshake(peer: self.peer, result: result)
            var identity = "none"
            if let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)
                .peerCertificate,
                let der = try? certificate.toDERBytes(), let names = try? PeerName.names(ofDERCertificate: der)
            {
                identity = names.map(\.description).joined(separator: ",")
            }
            self.logger.warning(
                "TLS handshake with core failed",
                metadata: [
                    "peer": "\(self.peer)", "peer_address": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")",
                    "identity": "\(identity)", "result": "\(result.rawValue)", "error": "\(error)",
                ]
            )
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.done {
            self.done = true
            self.metrics.handshake(peer: self.peer, result: .failed)
        }
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension TLSHandshakeObserver: Sendable {}

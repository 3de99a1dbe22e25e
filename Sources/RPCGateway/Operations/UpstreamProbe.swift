package import NIOCore
import NIOPosix
package import RPCWire

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a route's readiness probe connects to: the upstream endpoint mapper, or, for a route that
/// tunnels (`via`), the core gateway's TLS port (the edge cannot reach the server directly).
package struct ProbeTarget: Hashable, Sendable, CustomStringConvertible {
    package var host: String
    package var port: Int
    /// `upstream endpoint mapper` or `core gateway NAME`, for log messages.
    package var what: String
    /// The core gateway's peer name, for a tunnelled route.
    package var peer: String?

    package init(host: String, port: Int, what: String, peer: String? = nil) {
        self.host = host
        self.port = port
        self.what = what
        self.peer = peer
    }

    package init(upstream endpoint: TCPEndpoint) {
        self.init(host: "\(endpoint.address)", port: Int(endpoint.port), what: "upstream endpoint mapper")
    }

    /// `10.0.1.10:135`, or `core dc-core 10.97.0.2:8443` for a tunnelled route.
    package var description: String {
        let address = HostPort.text(self.host, UInt16(clamping: self.port))
        return self.peer.map { "core \($0) \(address)" } ?? address
    }
}

/// The readiness probe: a plain TCP connect, closed at once with a FIN. It sends nothing, so the
/// server (or the core gateway) sees a connection that ends before any PDU or TLS handshake.
package enum UpstreamProbe {
    /// Succeeds when the TCP handshake completes within `timeout`.
    package static func connect(
        to target: ProbeTarget,
        timeout: Duration,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .connect(host: target.host, port: target.port)
            .flatMap { channel in channel.close() }
    }

    /// Probes an upstream endpoint mapper (see the ``ProbeTarget`` variant).
    package static func connect(
        to endpoint: TCPEndpoint,
        timeout: Duration,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        Self.connect(to: ProbeTarget(upstream: endpoint), timeout: timeout, on: eventLoop)
    }

    /// A short description of a connect failure: `Connection refused`, `timed out after 2 s`.
    package static func describe(_ error: any Error) -> String {
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first {
                return Self.describe(first.error)
            }
            if let dns = error.dnsAAAAError ?? error.dnsAError {
                return "cannot resolve \(error.host): \(dns)"
            }
            return "cannot connect to \(error.host):\(error.port)"
        }
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
            return "timed out after \(DurationText.short(.nanoseconds(amount.nanoseconds)))"
        }
        return "\(error)"
    }
}

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

/// The readiness probe: a plain TCP connect to an upstream endpoint mapper, closed at once with a
/// FIN. It sends nothing, so the server sees a connection that ends before any PDU.
package enum UpstreamProbe {
    /// Succeeds when the TCP handshake completes within `timeout`.
    package static func connect(
        to endpoint: TCPEndpoint,
        timeout: Duration,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .connect(host: "\(endpoint.address)", port: Int(endpoint.port))
            .flatMap { channel in channel.close() }
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

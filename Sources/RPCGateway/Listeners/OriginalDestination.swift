import NIOCore
import RPCWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `SO_ORIGINAL_DST` from `linux/netfilter_ipv4.h`; the Glibc module does not export it.
private let soOriginalDestination: CInt = 80

/// Where a connection redirected by nftables (`redirect`/`dnat`) was going: the netfilter
/// conntrack's original destination, read with `getsockopt(SOL_IP, SO_ORIGINAL_DST)`. `nil` when
/// the connection was not redirected (the call fails) or the address is not IPv4.
///
/// Kept non-public and non-inlinable: `SocketOptionProvider.unsafeGetSocketOption` warns that
/// release builds may crash otherwise (docs/proxy-and-perf.md §3).
@inline(never)
func originalDestination(of channel: any Channel) -> EventLoopFuture<TCPEndpoint?> {
    #if os(Linux)
    guard let provider = channel as? any SocketOptionProvider else { return channel.eventLoop.makeSucceededFuture(nil) }
    let future: EventLoopFuture<sockaddr_in> = provider.unsafeGetSocketOption(
        level: SocketOptionLevel(IPPROTO_IP),
        name: SocketOptionName(soOriginalDestination)
    )
    return future.map { address -> TCPEndpoint? in
        let socketAddress = SocketAddress(address, host: "")
        guard let ip = IPv4Address(socketAddress), let port = socketAddress.port else { return nil }
        return TCPEndpoint(address: ip, port: UInt16(truncatingIfNeeded: port))
    }
    .recover { _ in nil }
    #else
    return channel.eventLoop.makeSucceededFuture(nil)
    #endif
}

/// Under TPROXY the socket's local address already is the original destination.
func localDestination(of channel: any Channel) -> TCPEndpoint? {
    guard let local = channel.localAddress, let address = IPv4Address(local), let port = local.port else { return nil }
    return TCPEndpoint(address: address, port: UInt16(truncatingIfNeeded: port))
}

/// `SO_REUSEPORT`, which `NIOBSDSocket.Option` does not name.
let reusePortOption: NIOBSDSocket.Option = {
    #if os(Linux)
    NIOBSDSocket.Option(rawValue: SO_REUSEPORT)
    #else
    NIOBSDSocket.Option(rawValue: 0x0200)
    #endif
}()

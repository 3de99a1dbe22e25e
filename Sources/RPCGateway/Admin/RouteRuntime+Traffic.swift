import NIOCore
import RPCPolicy
import RPCWire

// The status page's top interfaces and sources, and `rpcgate_source_decisions_total`.
extension RouteRuntime {
    /// Client networks in `rpcgate_source_decisions_total` are /24 (IPv4) and /64 (IPv6): fine
    /// enough to find a segment, coarse enough to keep the label set small.
    static let sourceNetworkPrefixIPv4 = 24
    static let sourceNetworkPrefixIPv6 = 64

    /// Counts a policy decision on a mapped port (the endpoint-mapper listener's own decisions
    /// are not the policy's) for the status page and the per-network metric.
    func countForTraffic(_ event: ConnectionEvent, client: SocketAddress?, listener: GatewayMetrics.Listener) {
        guard listener == .mapped else { return }
        let interface: SyntaxID
        let denied: Bool
        switch event {
        case .bindDecision(let bound, let decision, _, _):
            interface = bound
            denied = !decision.permits
        case .callDenied(let called, _, _, _, _):
            interface = called
            denied = true
        case .callAudited(let called, _, _, _, _):
            interface = called
            denied = false
        case .unknownContext, .endpointLookupDenied, .firstBindRouted, .firstBindNotRegistered,
            .alterContextServedElsewhere, .secondaryAddressKept, .authenticatedEndpointMapperRefused,
            .protectedEndpointLookupDenied, .protocolError:
            return
        }
        // Read from the socket address once; no text round trip.
        let address = IPAddress(client)
        self.denials?.traffic.record(interface: interface, source: address?.description ?? "unknown", denied: denied)
        let network = address.map { address -> String in
            switch address {
            case .v4: return IPNetwork(containing: address, prefixLength: Self.sourceNetworkPrefixIPv4).description
            case .v6: return IPNetwork(containing: address, prefixLength: Self.sourceNetworkPrefixIPv6).description
            }
        }
        self.metrics.sourceDecision(network: network ?? "unknown", denied: denied)
    }
}

import Logging
import NIOCore
import RPCWire

/// Endpoint-mapper replies on their way to the client: every ncacn_ip_tcp tower of the route's
/// server gets a gateway port (allocated from the route's pool here); ncacn_ip_tcp towers of other
/// hosts, of server ports outside the route's `server_ports`, or that cannot be mapped are redacted
/// (port 0, 0.0.0.0); and every tower of a denied interface, whatever its protocol (ncacn_np pipe
/// and NetBIOS host, ncalrpc name, ncacn_http or UDP port, IP address), has its endpoints zeroed
/// (``EPMTowerDecision/redact``: same lengths, so paging and multi-fragment replies stay right).
/// Towers of other protocols of allowed interfaces pass unchanged. An `ept_map` that ends up
/// advertising nothing is answered "not registered" instead.
extension ProxyConnection {
    func rewrite(_ reply: ConnectionStateMachine.EndpointMapperReply) -> [ByteBuffer] {
        let route = self.route
        let settings = route.settings
        let upstreamAddress = self.upstreamAddress
        let advertised: IPv4Address
        if case .transparent = settings.mode {
            // The client keeps talking to the server's own address; nftables sends it back here.
            advertised = upstreamAddress
        } else {
            advertised = settings.advertiseAddress ?? self.clientFacingAddress ?? .any
        }
        let singlePort = settings.singlePort
        // This connection's server is the endpoint mapper that bind routing asks.
        let mapper = self.serverEndpoint
        let machine = self.machine
        let mode = self.endpointMapperMode
        var exhausted = false
        var portsNotAllowed: [UInt16] = []
        do {
            let result = try EPMReplyRewriter.rewriteTowers(
                fragments: reply.fragments,
                operation: reply.operation,
                syntax: reply.syntax,
                limits: self.limits
            ) { replyTower -> EPMTowerDecision in
                guard let endpoint = replyTower.tcpEndpoint else {
                    // Not ncacn_ip_tcp: never rewritten (the gateway relays TCP only), hidden
                    // when the interface is.
                    return TowerExposure.hides(replyTower.interface, mayLookUp: machine.mayLookUp) ? .redact : .keep
                }
                let tower = EPMTowerEndpoint(interface: replyTower.interface, endpoint: endpoint)
                let exposure = TowerExposure.classify(
                    tower,
                    route: settings,
                    upstreamAddress: upstreamAddress,
                    mayLookUp: machine.mayLookUp
                )
                if case .portNotAllowed = exposure { portsNotAllowed.append(tower.endpoint.port) }
                if mode == .redactOnly {
                    switch exposure {
                    case .hidden, .foreignHost, .portNotAllowed: return .redact
                    case .endpointMapper, .mapped: return .keep
                    }
                }
                switch exposure {
                case .hidden, .foreignHost, .portNotAllowed:
                    // Never an open relay: only the configured server and ports, whatever the
                    // reply says.
                    return .redact
                case .endpointMapper:
                    return .rewrite(TCPEndpoint(address: advertised, port: settings.epmPort))
                case .mapped(let server):
                    if let interface = tower.interface {
                        route.resolver.remember(interface, at: mapper, port: server.port)
                    }
                    if let singlePort { return .rewrite(TCPEndpoint(address: advertised, port: singlePort)) }
                    switch route.pool.allocate(for: server) {
                    case .existing(let port), .allocated(let port):
                        return .rewrite(TCPEndpoint(address: advertised, port: port))
                    case .exhausted:
                        exhausted = true
                        return .redact
                    }
                }
            }
            if exhausted {
                route.metrics.portPoolExhausted()
                route.logger.warning(
                    "port range exhausted: endpoint-mapper answer redacted",
                    metadata: [
                        "conn": "\(self.id)", "ports": "\(settings.ports)", "client": "\(self.clientDescription)",
                    ]
                )
            }
            if !portsNotAllowed.isEmpty {
                route.logger.warning(
                    "endpoint-mapper reply named server ports outside server_ports: redacted",
                    metadata: [
                        "conn": "\(self.id)",
                        "server_ports": "\(portsNotAllowed.prefix(8).map(String.init).joined(separator: ","))",
                        "towers": "\(portsNotAllowed.count)",
                    ]
                )
            }
            route.metrics.towersRewritten(result.rewrittenTowers)
            if result.redactedTowers > 0 { route.metrics.towersRedacted(result.redactedTowers) }
            if reply.operation == .map, result.redactedTowers > 0,
                let notRegistered = EPMMapResponse.notRegisteredPDU(
                    callID: reply.callID,
                    contextID: reply.contextID,
                    maxTowers: reply.maxTowers,
                    syntax: reply.syntax,
                    dataRepresentation: reply.dataRepresentation
                )
            {
                return [notRegistered]
            }
            return result.fragments.map(\.bytes)
        } catch {
            route.metrics.pduError(reason: (error as? RPCWireError)?.code.description ?? "epm_rewrite")
            route.logger.notice(
                "endpoint-mapper reply not rewritable; connection closed",
                metadata: ["error": "\(error)"]
            )
            self.close(.protocolError)
            return []
        }
    }
}

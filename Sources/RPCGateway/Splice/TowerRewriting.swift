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
///
/// Preserve mapping: a server tower keeps its port (the gateway listens on the server's range) and
/// gets the gateway's address; a port outside the range is redacted, counted and logged once per
/// endpoint. Transparent routes with `server_ports_listen`: towers keep the server's address and
/// port (nftables brings the connection back), and each names a pinhole for the client.
///
/// A reply carrying an auth verifier (only where the route passes them, see
/// ``ConnectionStateMachine/ProtectedEndpointMapper``) is forwarded byte for byte; when only
/// signed, its towers are still read for pinholes and the preserve range check.
extension ProxyConnection {
    func rewrite(_ reply: ConnectionStateMachine.EndpointMapperReply) -> [ByteBuffer] {
        if reply.isProtected { return self.passProtected(reply) }
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
        let preserves = settings.preservesServerPorts
        let learnsPinholes = settings.learnsPinholes
        let client = machine.client
        var exhausted = false
        var portsNotAllowed: [UInt16] = []
        var outsideRange: [TCPEndpoint] = []
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
                    if preserves {
                        guard settings.ports.contains(server.port) else {
                            outsideRange.append(server)
                            return .redact
                        }
                        return .rewrite(TCPEndpoint(address: advertised, port: server.port))
                    }
                    if learnsPinholes {
                        route.pinholes.open(client: client, server: server)
                        return .rewrite(TCPEndpoint(address: advertised, port: server.port))
                    }
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
            self.noteOutsideRange(outsideRange, of: settings)
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

    /// A signed or sealed reply, forwarded byte for byte. A signed one (integrity) is readable:
    /// its towers open pinholes and are checked against a preserve range; a sealed one is not.
    private func passProtected(_ reply: ConnectionStateMachine.EndpointMapperReply) -> [ByteBuffer] {
        let route = self.route
        let settings = route.settings
        route.metrics.protectedReplyPassed()
        guard reply.authLevel < .privacy else { return reply.fragments.map(\.bytes) }
        let preserves = settings.preservesServerPorts
        let learnsPinholes = settings.learnsPinholes
        let upstreamAddress = self.upstreamAddress
        let machine = self.machine
        var outsideRange: [TCPEndpoint] = []
        do {
            // Read only: every tower is kept, and the fragments sent are the server's own.
            _ = try EPMReplyRewriter.rewriteTowers(
                fragments: reply.fragments,
                operation: reply.operation,
                syntax: reply.syntax,
                limits: self.limits
            ) { replyTower -> EPMTowerDecision in
                guard let endpoint = replyTower.tcpEndpoint else { return .keep }
                let exposure = TowerExposure.classify(
                    EPMTowerEndpoint(interface: replyTower.interface, endpoint: endpoint),
                    route: settings,
                    upstreamAddress: upstreamAddress,
                    mayLookUp: machine.mayLookUp
                )
                guard case .mapped(let server) = exposure else { return .keep }
                if learnsPinholes { route.pinholes.open(client: machine.client, server: server) }
                if preserves, !settings.ports.contains(server.port) { outsideRange.append(server) }
                return .keep
            }
        } catch {
            route.logger.debug(
                "signed endpoint-mapper reply not readable; forwarded unchanged",
                metadata: ["conn": "\(self.id)", "error": "\(error)"]
            )
        }
        self.noteOutsideRange(outsideRange, of: settings)
        return reply.fragments.map(\.bytes)
    }

    /// Counts a preserve route's towers outside its range, and logs each server endpoint once
    /// with the fix.
    private func noteOutsideRange(_ endpoints: [TCPEndpoint], of settings: RouteSettings) {
        guard !endpoints.isEmpty else { return }
        self.route.metrics.towersOutsideRange(endpoints.count)
        for endpoint in endpoints where self.route.outsideRangeWarnings.first(endpoint) {
            let message =
                "server endpoint outside the route's ports (port_mapping: preserve): clients cannot reach it "
                + "through the gateway; restrict the server's RPC port range to the route's ports "
                + "(HKLM\\Software\\Microsoft\\Rpc\\Internet: Ports, PortsInternetAvailable=Y, "
                + "UseInternetPorts=Y; docs/DEPLOYMENT.md, Hardened Windows clients and DCOM)"
            self.route.logger.warning(
                "\(message)",
                metadata: [
                    "conn": "\(self.id)", "server": "\(endpoint)",
                    "ports": "\(settings.ports.lowerBound)-\(settings.ports.upperBound)",
                ]
            )
        }
    }
}

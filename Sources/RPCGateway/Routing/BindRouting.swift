package import RPCWire

/// Routing a connection by the interface of its first bind: a pure decision, no I/O.
///
/// Used where the gateway cannot know the server endpoint from the port the client connected to:
/// the one port of a single-port route, a mapped port this instance did not hand out (another
/// replica did, or this one restarted), and transparent connections whose gateway port is not
/// mapped to their original destination. The first PDU must be a `bind`; its first interface
/// context (bind-time feature negotiation elements are not interfaces) names the interface the
/// gateway resolves at the server's endpoint mapper.
package enum BindRouting {
    package enum Decision: Hashable, Sendable {
        /// The client binds the endpoint mapper, and this port also serves as the route's
        /// endpoint-mapper listener: behave as that listener.
        case endpointMapper
        /// Resolve this interface at the server's endpoint mapper, connect there.
        case resolve(SyntaxID)
        /// Not a bind, or a bind with no interface: close the connection.
        case reject(reason: String)
    }

    /// Decides from the connection's first PDU.
    ///
    /// - Parameter servesEndpointMapper: whether this port is also the route's endpoint-mapper
    ///   port (single-port mode with `port` equal to `epm_port`).
    package static func decide(firstPDU raw: RawPDU, servesEndpointMapper: Bool, limits: WireLimits) -> Decision {
        guard raw.header.packetType == .bind else {
            return .reject(reason: "first PDU is \(raw.header.packetType), not bind")
        }
        guard let pdu = try? raw.parse(limits: limits), case .bind(let bind) = pdu.body else {
            return .reject(reason: "malformed bind")
        }
        guard let context = bind.contexts.first(where: { !$0.isBindTimeFeatureNegotiation }) else {
            return .reject(reason: "bind offers no interface")
        }
        if context.abstractSyntax.uuid == SyntaxID.endpointMapper.uuid {
            return servesEndpointMapper ? .endpointMapper : .resolve(context.abstractSyntax)
        }
        return .resolve(context.abstractSyntax)
    }

    /// What to do with an `alter_context` on a bind-routed connection, given what the endpoint
    /// mapper said about each new interface (`nil`: unknown yet). Samba serves many interfaces on
    /// one endpoint, so only an interface known to live on another port is refused.
    package enum AlterContextVerdict: Hashable, Sendable {
        case forward
        case refuse
    }

    package static func alterContext(
        interfaces: [SyntaxID],
        serverPort: UInt16,
        resolved: (SyntaxID) -> UInt16??
    ) -> AlterContextVerdict {
        for interface in interfaces {
            switch resolved(interface) {
            case .some(.some(let port)) where port != serverPort:
                return .refuse
            case .some(.none):
                // Not registered at the endpoint mapper: the server will refuse it itself.
                continue
            default:
                continue
            }
        }
        return .forward
    }
}

public import RPCPolicy
public import RPCWire

/// Something that happened on a connection that operators care about: each becomes a metric and
/// a log line (and, with the audit log, an audit record).
public enum ConnectionEvent: Hashable, Sendable {
    /// A bind or alter_context presentation context was decided.
    case bindDecision(interface: SyntaxID, decision: PolicyDecision, authLevel: AuthLevel, authType: AuthType)
    /// A request was refused by an opnum rule. The auth level and type are the request's own
    /// (its `sec_trailer`), or the connection's when it carries none.
    case callDenied(
        interface: SyntaxID,
        opnum: UInt16,
        decision: PolicyDecision,
        authLevel: AuthLevel,
        authType: AuthType
    )
    /// A request was allowed by an `audit` rule.
    case callAudited(
        interface: SyntaxID,
        opnum: UInt16,
        decision: PolicyDecision,
        authLevel: AuthLevel,
        authType: AuthType
    )
    /// A request named a presentation context that was never accepted.
    case unknownContext(contextID: UInt16)
    /// An endpoint-mapper query for an interface the policy denies was answered "not registered".
    case endpointLookupDenied(interface: SyntaxID)
    /// A bind to the endpoint mapper at packet level or above was refused because the route
    /// cannot pass a signed or sealed reply (pool or single-port mapping).
    case authenticatedEndpointMapperRefused(authLevel: AuthLevel, authType: AuthType)
    /// A signed endpoint-mapper lookup for an interface the policy denies: its reply cannot be
    /// forged, so the call was answered with a fault and the connection closed.
    case protectedEndpointLookupDenied(interface: SyntaxID)
    /// The first bind chose the server: resolved at the endpoint mapper, or (with `handedOutFor`)
    /// on another endpoint than the one this gateway port was handed out for.
    case firstBindRouted(server: TCPEndpoint, handedOutFor: TCPEndpoint?)
    /// The first bind's interface is not registered at the server: refused as the server would.
    case firstBindNotRegistered(interface: SyntaxID)
    /// An alter_context on a bind-routed connection named interfaces served on another endpoint.
    case alterContextServedElsewhere(interfaces: [SyntaxID])
    /// A bind_ack/alter_context_resp on a connection whose secondary address is rewritten to the
    /// gateway port carried an auth verifier, so it was passed unchanged, naming `serverPort`.
    case secondaryAddressKept(serverPort: String)
    /// A PDU broke the protocol; `reason` is a stable short code.
    case protocolError(reason: String, detail: String)
}

/// Why the gateway closes a connection, for the connection log line and the `reason` label of
/// `rpcgate_connections_closed_total`.
public enum CloseReason: String, Hashable, Sendable, CaseIterable {
    case clientClosed = "client_closed"
    case serverClosed = "server_closed"
    /// A socket error on the client side (a reset, say).
    case clientError = "client_error"
    /// A socket error on the server side: the upstream reset the connection.
    case serverError = "server_error"
    case protocolError = "protocol_error"
    case unknownContext = "unknown_context"
    case bindTimeout = "bind_timeout"
    case idleTimeout = "idle_timeout"
    case halfCloseTimeout = "half_close_timeout"
    case upstreamUnreachable = "upstream_unreachable"
    /// An endpoint-mapper lookup protected at packet level or above, on a route that cannot pass
    /// its reply unchanged (pool or single-port mapping): refused at its bind (or its reply).
    case authenticatedEndpointMapper = "authenticated_epm"
    /// A call was refused on a signed or sealed session, which cannot continue without it.
    case callDeniedOnProtectedSession = "call_denied_on_protected_session"
    case shutdown = "shutdown"
}

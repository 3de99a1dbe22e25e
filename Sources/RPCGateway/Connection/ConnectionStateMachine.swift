public import NIOCore
public import RPCPolicy
public import RPCWire

/// The protocol brain of one proxied connection: it sees every PDU from either side, and every
/// answer the runtime brings back (an endpoint resolved, the upstream connected), and decides what
/// happens. It does no I/O; ``ProxyConnection`` executes its actions. Each PDU is parsed at most
/// once and decided once (``pduParses`` counts the parses).
///
/// What it enforces (C706 ch. 12, MS-RPCE 3.3):
/// - every presentation context of every `bind` and `alter_context` is checked against the policy
///   (bind-time feature negotiation elements are not interfaces, MS-RPCE 3.3.1.5.3); a refused
///   bind never reaches the server, the client gets a bind_ack/alter_context_resp that rejects it;
/// - a `request` on a context the server never accepted gets a fault and the connection closes;
/// - with opnum rules, a refused call gets a fault, its later fragments are dropped, and the
///   connection stays usable (a signed or sealed session is closed after the fault: see
///   `clientSentRequest`);
/// - a connection whose server is not known at accept is routed by its first bind
///   (`ConnectionStateMachine+Routing.swift`);
/// - the endpoint-mapper role (`ConnectionStateMachine+EndpointMapper.swift`): only the endpoint
///   mapper may be bound, `ept_map` for a denied interface is answered "not registered" here, and
///   replies are handed back for tower rewriting.
///
/// Authenticated PDUs pass through unmodified; the machine reads only cleartext header fields
/// (context id and opnum stay in the clear even when the stub is sealed).
public struct ConnectionStateMachine: Sendable {
    public enum Role: Hashable, Sendable {
        /// The route's endpoint-mapper listener (port 135).
        case endpointMapper
        /// A gateway-owned port forwarding to one server endpoint.
        case mapped
    }

    /// Where the connection is in its life.
    enum State: Hashable, Sendable {
        /// No server yet: the first bind says where the connection goes.
        case awaitingFirstBind(FirstBindRouting)
        /// The first bind is allowed; the runtime resolves its interface at the server's endpoint
        /// mapper and answers with ``firstBindResolved(_:)``.
        /// (`indirect`: the held bind, parsed, is most of a machine's size, and only a connection
        /// being routed needs it; an idle one keeps a pointer-sized state.)
        indirect case resolvingFirstBind(FirstBindRouting, HeldBind)
        /// The upstream connection is being made; the PDU that chose it goes first once it is up
        /// (``connected()``).
        case connecting(held: HeldPDU?)
        /// Both sides connected: PDUs are decided as they come.
        case spliced
        /// An `alter_context` on a bind-routed connection waits for the runtime's cached
        /// endpoint look-up (``alterContextChecked(_:)``).
        indirect case checkingAlterContext(HeldBind)
    }

    /// What to do with a PDU that came from the client, or with the runtime's answer.
    public enum ClientAction: Hashable, Sendable {
        /// Send the PDU's bytes to the server unchanged.
        case forward
        /// Send these whole PDUs (held back until a call was complete) to the server.
        case forwardHeld([RawPDU])
        /// Hold the PDU: more fragments of the call are needed before deciding.
        case hold
        /// Swallow the PDU (a later fragment of a refused call).
        case drop
        /// Answer the client with this PDU instead of forwarding.
        case respond(ByteBuffer)
        /// Answer the client with this PDU, then close the connection.
        case respondAndClose(ByteBuffer, CloseReason)
        /// Close the connection.
        case close(CloseReason)
        /// Ask `mapper` which port of its server serves `interface`; answer with
        /// ``firstBindResolved(_:)``.
        case resolve(SyntaxID, at: TCPEndpoint)
        /// Connect to `server`; answer with ``connected()``, or close when it fails.
        case connect(TCPEndpoint)
        /// The connection cannot be routed: close it, counted as a refusal.
        case refuse(RoutingRefusal)
        /// Look up what the runtime already knows about where each interface is served (no
        /// network); answer with ``alterContextChecked(_:)``. Interfaces in `resolvable` that are
        /// not known may be resolved in the background for later alter_contexts.
        case checkEndpoints([SyntaxID], at: TCPEndpoint, resolvable: [SyntaxID])
    }

    /// Why a connection routed by its first bind is refused.
    public enum RoutingRefusal: Hashable, Sendable {
        /// The first PDU is not a bind, or a bind without an interface.
        case noBind(String)
        /// The server's endpoint mapper could not be asked.
        case mapperUnreachable(String)
    }

    /// What to do with a PDU that came from the server.
    public enum ServerAction: Hashable, Sendable {
        case forward
        case hold
        /// Rewrite the towers of this endpoint-mapper reply, then send it; answer "not registered"
        /// built from `request` when nothing can be advertised.
        case rewriteEndpointMapperReply(EndpointMapperReply)
        /// Send this to the client instead of what the server sent.
        case respond(ByteBuffer)
        case close(CloseReason)
    }

    public internal(set) var role: Role
    var state: State
    var session = Session()
    /// Endpoint-mapper calls and reassembly; created when the connection takes that role.
    var endpointMapper: EndpointMapperCalls? {
        get { self.endpointMapperStorage?.calls }
        set {
            guard let newValue else {
                self.endpointMapperStorage = nil
                return
            }
            if let storage = self.endpointMapperStorage, isKnownUniquelyReferenced(&self.endpointMapperStorage) {
                storage.calls = newValue
            } else {
                self.endpointMapperStorage = EndpointMapperStorage(newValue)
            }
        }
    }
    /// Boxed (copy on write): most connections never take the endpoint-mapper role, and the
    /// calls' state inline would be a quarter of every machine, held per idle connection.
    private var endpointMapperStorage: EndpointMapperStorage?

    /// Mutated only while uniquely referenced (see ``endpointMapper``), so copies of the machine
    /// keep value semantics.
    final class EndpointMapperStorage: @unchecked Sendable {
        var calls: EndpointMapperCalls
        init(_ calls: EndpointMapperCalls) { self.calls = calls }
    }
    /// DCOM calls on the SCM (the endpoint-mapper listener), see ConnectionStateMachine+DCOM.swift.
    var dcom = DCOMCalls()
    /// The route's policy. The connection replaces it after a configuration reload, so new binds
    /// and calls on established connections follow the new rules.
    public var policy: Policy
    public let client: IPAddress
    public let limits: WireLimits
    /// The auth level and type of the connection's security context (from the last bind/alter).
    public private(set) var authLevel: AuthLevel = .none
    public private(set) var authType: AuthType = .none
    /// Who the client said it was in its last authentication token that named someone (see
    /// ConnectionStateMachine+Identity.swift); audit lines carry it.
    public internal(set) var identity: AuthIdentity?
    /// Whether the server has accepted at least one presentation context.
    public internal(set) var isBound = false
    /// The gateway port the client connected to, when it is not the server's own (mapped and
    /// single-port connections): bind_ack/alter_context_resp secondary addresses are rewritten to
    /// name it, so the server's real port never reaches the client. `nil`: left as the server
    /// sent them (the endpoint mapper, transparent mode, a core's tunnelled connections).
    public var gatewayPort: UInt16?
    /// What the endpoint-mapper role does with a lookup protected at packet level or above (an
    /// auth verifier on every PDU), whose reply the gateway cannot rewrite: see
    /// `ConnectionStateMachine+EndpointMapper.swift`.
    public var protectedEndpointMapper: ProtectedEndpointMapper = .refuse
    /// The server the connection goes to, once known.
    public internal(set) var server: TCPEndpoint?
    /// Set when the first bind chose the server: the endpoint mapper that placed it there, which
    /// later `alter_context`s are checked against.
    public internal(set) var routedBy: TCPEndpoint?
    /// How many PDUs this machine has parsed beyond their header (binds, acks, endpoint-mapper
    /// calls): tests check that each is parsed once.
    public private(set) var pduParses = 0
    var events: [ConnectionEvent] = []

    /// Calls in flight beyond this are not tracked individually; the connection still counts as
    /// busy (the set is not empty) until the server answers some of them.
    static let maximumTrackedCalls = 4096

    /// A connection to a known server (the endpoint-mapper listener, or a gateway port whose
    /// server is known): it starts by connecting there.
    public init(role: Role, policy: Policy, client: IPAddress, limits: WireLimits, server: TCPEndpoint? = nil) {
        self.role = role
        self.policy = policy
        self.client = client
        self.limits = limits
        self.server = server
        self.state = .connecting(held: nil)
        if role == .endpointMapper { self.endpointMapper = EndpointMapperCalls(limits: limits) }
    }

    /// A connection routed by its first bind: it starts by waiting for it.
    public init(routing: FirstBindRouting, policy: Policy, client: IPAddress, limits: WireLimits) {
        self.role = .mapped
        self.policy = policy
        self.client = client
        self.limits = limits
        self.state = .awaitingFirstBind(routing)
    }

    /// A machine whose upstream is already connected (the harnesses' and benchmarks' start).
    public static func spliced(role: Role, policy: Policy, client: IPAddress, limits: WireLimits) -> Self {
        var machine = Self(role: role, policy: policy, client: client, limits: limits)
        machine.state = .spliced
        return machine
    }

    /// Events recorded since the last call; the caller turns them into metrics and logs.
    public mutating func takeEvents() -> [ConnectionEvent] {
        guard !self.events.isEmpty else { return [] }
        // Hands the storage over instead of keeping its capacity: events come with binds and
        // decisions, not with every PDU, and an idle connection then holds no event storage.
        let events = self.events
        self.events = []
        return events
    }

    /// Whether a bind or a call is waiting for the server, or a fragmented call is half received.
    /// A draining gateway closes a connection as soon as this becomes false.
    public var hasCallsInFlight: Bool {
        !self.session.callsInFlight.isEmpty || !self.session.offeredContexts.isEmpty || !self.dcom.pending.isEmpty
            || (self.endpointMapper?.isCollecting ?? false)
    }

    /// Whether both sides are connected (PDUs flow); before that, the client's input waits except
    /// for the first bind.
    public var isSpliced: Bool {
        if case .spliced = self.state { return true }
        return false
    }

    /// Whether the machine takes the client's next PDU now: while waiting for the first bind and
    /// once spliced; not while the runtime resolves or connects.
    public var acceptsClientPDUs: Bool {
        switch self.state {
        case .awaitingFirstBind, .spliced: return true
        case .resolvingFirstBind, .connecting, .checkingAlterContext: return false
        }
    }

    /// No PDU of this connection has been decided yet and none is being routed: nothing is in
    /// flight, so a draining gateway closes it at once.
    public var isAwaitingFirstBind: Bool {
        if case .awaitingFirstBind = self.state { return true }
        return false
    }

    /// The interfaces the server accepted on this connection, in context-id order (duplicates
    /// removed).
    public var acceptedInterfaces: [SyntaxID] {
        var seen: Set<SyntaxID> = []
        return self.session.acceptedContexts.sortedByKey().compactMap { entry in
            seen.insert(entry.value.interface).inserted ? entry.value.interface : nil
        }
    }

    /// The interface a context id was accepted for, if any.
    public func interface(forContext contextID: UInt16) -> SyntaxID? {
        self.session.acceptedContexts[contextID]?.interface
    }

    /// The one place the machine parses a PDU beyond its header.
    mutating func parse(_ raw: RawPDU) throws -> PDU {
        self.pduParses += 1
        return try raw.parse(limits: self.limits)
    }

    // MARK: - Client to server

    public mutating func clientSent(_ raw: RawPDU) -> ClientAction {
        switch self.state {
        case .awaitingFirstBind(let routing):
            return self.routeFirstPDU(raw, routing)
        case .resolvingFirstBind, .connecting, .checkingAlterContext:
            // The runtime stops reading the client in these states; a PDU here is a runtime bug,
            // handled as a protocol error rather than a trap.
            return self.protocolError(
                "pdu_while_routing",
                "\(raw.header.packetType) while the connection is not spliced"
            )
        case .spliced:
            break
        }
        switch raw.header.packetType {
        case .bind, .alterContext:
            return self.clientSentBind(raw)
        case .request:
            let action = self.clientSentRequest(raw)
            if raw.header.flags.contains(.firstFragment), self.session.callsInFlight.count < Self.maximumTrackedCalls {
                switch action {
                case .forward, .forwardHeld, .hold: self.session.callsInFlight.insert(raw.header.callID)
                default: break
                }
            }
            return action
        case .auth3:
            self.noteIdentity(in: raw)
            return .forward
        case .coCancel, .orphaned:
            guard let incoming = self.session.incomingCall, incoming.callID == raw.header.callID else {
                return .forward
            }
            if raw.header.packetType == .orphaned {
                // The client abandons the call (C706 12.6.4.8); the server discards its fragments.
                self.session.incomingCall = nil
                self.endpointMapper?.requestAbandoned()
            }
            return incoming.dropped ? .drop : .forward
        default:
            return self.protocolError(
                "client_sent_\(raw.header.packetType)",
                "a client does not send \(raw.header.packetType)"
            )
        }
    }

    private mutating func clientSentBind(_ raw: RawPDU) -> ClientAction {
        let pdu: PDU
        do {
            pdu = try self.parse(raw)
        } catch {
            return self.protocolError(error)
        }
        switch pdu.body {
        case .bind(let body):
            return self.decideBind(pdu, contexts: body.contexts)
        case .alterContext(let body):
            if let mapper = self.routedBy, self.role == .mapped {
                // A bind-routed connection serves the endpoint its first bind was placed on: an
                // interface the endpoint mapper places elsewhere is refused (see
                // `alterContextChecked`), which needs the runtime's look-up first.
                let interfaces = body.contexts.filter { !$0.isBindTimeFeatureNegotiation }.map(\.abstractSyntax)
                guard let first = interfaces.first else { return self.decideBind(pdu, contexts: body.contexts) }
                self.state = .checkingAlterContext(HeldBind(raw: raw, pdu: pdu, interface: first))
                // Only interfaces the policy may allow are looked up: a denied interface's UUID
                // never reaches the server, not even its endpoint mapper.
                return .checkEndpoints(interfaces, at: mapper, resolvable: interfaces.filter { self.mayLookUp($0) })
            }
            return self.decideBind(pdu, contexts: body.contexts)
        default:
            return self.protocolError("bad_bind", "unexpected bind body")
        }
    }

    /// Decides a bind or alter_context: all interface contexts must be allowed, or the whole PDU is
    /// refused (a partial acceptance would mean editing the client's PDU).
    mutating func decideBind(_ pdu: PDU, contexts: [PresentationContext]) -> ClientAction {
        if let verifier = pdu.authVerifier {
            self.authLevel = verifier.authLevel
            self.authType = verifier.authType
            self.noteIdentity(in: verifier)
        }
        var refused = false
        var protectedLookupRefused = false
        for context in contexts where !context.isBindTimeFeatureNegotiation {
            let decision: PolicyDecision
            switch self.role {
            case .endpointMapper:
                // RPCSS serves DCOM activation and OXID resolution on 135 beside the mapper.
                if Self.isSCMInterface(context.abstractSyntax) {
                    decision = self.scmBindDecision(context.abstractSyntax)
                } else {
                    decision = self.endpointMapperBindDecision(context.abstractSyntax)
                    if !decision.permits, self.refusesProtectedLookup(context.abstractSyntax) {
                        protectedLookupRefused = true
                    }
                }
            case .mapped:
                decision = self.policy.evaluate(
                    PolicyQuery(interface: context.abstractSyntax, client: self.client, authLevel: self.authLevel)
                )
            }
            self.events.append(
                .bindDecision(
                    interface: context.abstractSyntax,
                    decision: decision,
                    authLevel: self.authLevel,
                    authType: self.authType
                )
            )
            if !decision.permits { refused = true }
        }
        if refused {
            guard let rejection = PDU.bindRejection(answering: pdu), let bytes = try? rejection.serialized() else {
                return .close(.protocolError)
            }
            if protectedLookupRefused {
                // Its reply could not be rewritten: say so (once per client, see the event), and
                // close, as the client cannot do anything useful with this connection.
                self.events.append(
                    .authenticatedEndpointMapperRefused(authLevel: self.authLevel, authType: self.authType)
                )
                return .respondAndClose(bytes, .authenticatedEndpointMapper)
            }
            return .respond(bytes)
        }
        self.session.offeredContexts[pdu.header.callID] = contexts
        return .forward
    }

    // MARK: - Policy questions

    /// Whether a client could ever be allowed to bind `interface` (at the best auth level), so its
    /// endpoint may be revealed.
    public func mayLookUp(_ interface: SyntaxID) -> Bool {
        self.lookUpDecision(interface).permits
    }

    /// The decision behind ``mayLookUp(_:)``: the policy's answer for a bind at `privacy` level.
    /// The endpoint mapper itself is always allowed (with no rule).
    public func lookUpDecision(_ interface: SyntaxID) -> PolicyDecision {
        if interface.uuid == SyntaxID.endpointMapper.uuid { return PolicyDecision(action: .allow, origin: nil) }
        return self.policy.evaluate(PolicyQuery(interface: interface, client: self.client, authLevel: .privacy))
    }

    // MARK: - Errors

    mutating func protocolError(_ error: any Error) -> ClientAction {
        let reason = (error as? RPCWireError)?.code.description ?? "malformed"
        return self.protocolError(reason, "\(error)")
    }

    mutating func protocolError(_ reason: String, _ detail: String) -> ClientAction {
        self.events.append(.protocolError(reason: reason, detail: detail))
        return .close(.protocolError)
    }
}

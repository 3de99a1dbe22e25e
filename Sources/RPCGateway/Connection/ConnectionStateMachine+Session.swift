import RPCPolicy
import RPCWire

/// What a connection holds between PDUs: the bind waiting for the runtime's answer, the PDU
/// waiting for the upstream, and the session agreed with the server.
extension ConnectionStateMachine {
    /// A bind or alter_context that was parsed and decided, kept while the runtime answers.
    struct HeldBind: Hashable, Sendable {
        var raw: RawPDU
        var pdu: PDU
        var interface: SyntaxID
    }

    /// The PDU waiting for the upstream connection.
    enum HeldPDU: Hashable, Sendable {
        /// Already decided (an allowed first bind): forwarded as it is.
        case decided(RawPDU)
        /// Not decided yet (not a bind, on a port mapped to a known server): decided once spliced.
        case undecided(RawPDU)
    }

    struct AcceptedContext: Hashable, Sendable {
        var interface: SyntaxID
        var transferSyntax: SyntaxID
    }

    /// A request whose first fragment was seen and whose last was not.
    ///
    /// C706 12.6.3.1 lets a call span fragments, but fragments of different calls never interleave:
    /// Samba keeps "only one request ... in the fragmented list" and faults (`nca_s_proto_error`) on
    /// any FIRST_FRAG while one is open and on a later fragment no open call matches. The gateway
    /// enforces the same sequence itself: a fragment it cannot place is a protocol error, never
    /// forwarded, so nothing reaches the server outside a call whose first fragment was inspected.
    struct IncomingCall: Hashable, Sendable {
        var callID: UInt32
        /// The first fragment was refused (opnum rule): the rest of the call is swallowed.
        var dropped: Bool
        /// A DCOM call on the endpoint-mapper listener (``isSCMInterface(_:)``): its later
        /// fragments are forwarded, not collected as an endpoint-mapper request.
        var isSCMCall = false
    }

    /// What the connection has agreed with the server: contexts, security, calls in flight.
    struct Session: Hashable, Sendable {
        var acceptedContexts = InlineFirstDictionary<UInt16, AcceptedContext>()
        /// Contexts offered in a forwarded bind/alter_context, by call id, until the server answers.
        var offeredContexts: [UInt32: [PresentationContext]] = [:]
        /// The one fragmented request in progress (FIRST_FRAG seen, LAST_FRAG not yet), if any.
        var incomingCall: IncomingCall?
        /// Requests forwarded whose response (or fault) has not completed yet.
        var callsInFlight = InlineFirstSet<UInt32>()
    }
}

import NIOCore
import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

/// The routing states of ``ConnectionStateMachine``: the first bind on a connection whose server
/// is not known, the runtime's answers (resolved, connected), and alter_contexts on a bind-routed
/// connection. No channel: the machine's inputs and actions only.
@Suite("Connection state machine: routing by the first bind")
struct ConnectionRoutingTests {
    static let mapper = TCPEndpoint(address: IPv4Address("10.99.0.2")!, port: 135)
    static let client = IPAddress("10.1.2.3")!
    static let samrOnly = Policy(
        name: "p",
        defaultAction: .deny,
        rules: [
            PolicyRule(action: .allow, interfaces: [InterfaceMatcher(parsing: "samr")!], origin: RuleOrigin(index: 0))
        ]
    )

    func machine(
        _ routing: FirstBindRouting = FirstBindRouting(mapper: Self.mapper),
        policy: Policy = Self.samrOnly
    ) -> ConnectionStateMachine {
        ConnectionStateMachine(routing: routing, policy: policy, client: Self.client, limits: WireLimits())
    }

    @Test("An allowed first bind is resolved, connected, forwarded, and parsed once")
    func allowedBindIsRoutedAndParsedOnce() {
        var machine = self.machine()
        #expect(machine.acceptsClientPDUs)
        let bind = Wire.bind([Wire.samr], callID: 7)
        #expect(machine.clientSent(bind) == .resolve(Wire.samr, at: Self.mapper))
        #expect(!machine.acceptsClientPDUs, "the client waits while the interface is resolved")
        let server = TCPEndpoint(address: Self.mapper.address, port: 49_152)
        #expect(machine.firstBindResolved(.port(49_152)) == .connect(server))
        #expect(machine.server == server)
        #expect(machine.routedBy == Self.mapper)
        #expect(machine.connected() == .forwardHeld([bind]))
        #expect(machine.isSpliced)
        #expect(machine.serverSent(Wire.bindAck(callID: 7, accepting: 1)) == .forward)
        #expect(machine.isBound)
        #expect(machine.pduParses == 2, "the bind once (routing and policy together), the ack once")
        let events = machine.takeEvents()
        #expect(events.count == 2)
        #expect(events.contains(.firstBindRouted(server: server, handedOutFor: nil)))
    }

    @Test("A denied first bind is answered here, never resolved, and the next bind is routed afresh")
    func deniedBindIsRefusedLocally() throws {
        var machine = self.machine()
        guard case .respond(let bytes) = machine.clientSent(Wire.bind([Wire.drsuapi], callID: 3)) else {
            Issue.record("expected a local refusal")
            return
        }
        let answer = try #require(Wire.parse(bytes))
        #expect(answer.header.packetType == .bindAck)
        #expect(machine.isAwaitingFirstBind)
        #expect(machine.clientSent(Wire.bind([Wire.samr], callID: 4)) == .resolve(Wire.samr, at: Self.mapper))
    }

    @Test("A first PDU that is not a bind is refused, or goes to the port's known server")
    func notABind() {
        var machine = self.machine()
        #expect(
            machine.clientSent(Wire.request(callID: 1, opnum: 0)) == .refuse(.noBind("first PDU is request, not bind"))
        )
        let preferred = TCPEndpoint(address: Self.mapper.address, port: 49_200)
        var mapped = self.machine(FirstBindRouting(mapper: Self.mapper, preferred: preferred))
        let request = Wire.request(callID: 1, opnum: 0)
        #expect(mapped.clientSent(request) == .connect(preferred))
        // Decided once spliced: a request on a context never accepted.
        guard case .respondAndClose(_, .unknownContext) = mapped.connected() else {
            Issue.record("expected the spliced machine to fault the request")
            return
        }
    }

    @Test("A bind without an interface, or malformed, is not a bind")
    func bindWithoutInterface() {
        var machine = self.machine()
        let body = BindPDU(
            maxTransmitFragment: 4280,
            maxReceiveFragment: 4280,
            associationGroupID: 0,
            contexts: [
                PresentationContext(
                    contextID: 0,
                    abstractSyntax: Wire.samr,
                    transferSyntaxes: [Wire.featureNegotiation]
                )
            ]
        )
        let onlyNegotiation = Wire.raw(PDU(header: PDUHeader(packetType: .bind, callID: 1), body: .bind(body)))
        guard case .refuse(.noBind) = machine.clientSent(onlyNegotiation) else {
            Issue.record("expected a refusal")
            return
        }
    }

    @Test("Bind-time feature negotiation elements are not interfaces")
    func skipsFeatureNegotiation() {
        var machine = self.machine()
        let bind = Wire.bind([Wire.samr], windowsStyle: true)
        #expect(machine.clientSent(bind) == .resolve(Wire.samr, at: Self.mapper))
    }

    @Test("Not registered at the server: refused as the server would, then the next bind")
    func notRegistered() throws {
        var machine = self.machine()
        _ = machine.clientSent(Wire.bind([Wire.samr], callID: 9))
        guard case .respond(let bytes) = machine.firstBindResolved(.notRegistered) else {
            Issue.record("expected a rejection")
            return
        }
        #expect(try #require(Wire.parse(bytes)).header.callID == 9)
        #expect(machine.isAwaitingFirstBind)
        #expect(!machine.hasCallsInFlight, "the refused bind is no longer in flight")
        #expect(machine.takeEvents().contains(.firstBindNotRegistered(interface: Wire.samr)))
    }

    @Test("An unreachable endpoint mapper refuses the connection")
    func mapperUnreachable() {
        var machine = self.machine()
        _ = machine.clientSent(Wire.bind([Wire.samr]))
        #expect(machine.firstBindResolved(.unreachable("refused")) == .refuse(.mapperUnreachable("refused")))
    }

    @Test("A port handed out for one endpoint is used unless the mapper places the interface elsewhere")
    func preferredEndpoint() {
        let preferred = TCPEndpoint(address: Self.mapper.address, port: 49_200)
        var same = self.machine(FirstBindRouting(mapper: Self.mapper, preferred: preferred))
        _ = same.clientSent(Wire.bind([Wire.samr]))
        #expect(same.firstBindResolved(.port(49_200)) == .connect(preferred))
        #expect(same.takeEvents().allSatisfy { if case .firstBindRouted = $0 { false } else { true } })

        var moved = self.machine(FirstBindRouting(mapper: Self.mapper, preferred: preferred))
        _ = moved.clientSent(Wire.bind([Wire.samr]))
        let elsewhere = TCPEndpoint(address: Self.mapper.address, port: 49_201)
        #expect(moved.firstBindResolved(.port(49_201)) == .connect(elsewhere))
        #expect(moved.takeEvents().contains(.firstBindRouted(server: elsewhere, handedOutFor: preferred)))

        var unknown = self.machine(FirstBindRouting(mapper: Self.mapper, preferred: preferred))
        _ = unknown.clientSent(Wire.bind([Wire.samr]))
        #expect(unknown.firstBindResolved(.unreachable("timeout")) == .connect(preferred))
    }

    @Test("An endpoint-mapper bind on a port that is also the EPM port makes an EPM connection")
    func endpointMapperOnSharedPort() {
        var shared = self.machine(FirstBindRouting(mapper: Self.mapper, servesEndpointMapper: true))
        let bind = Wire.bind([.endpointMapper])
        #expect(shared.clientSent(bind) == .connect(Self.mapper))
        #expect(shared.role == .endpointMapper)
        #expect(shared.connected() == .forwardHeld([bind]))

        var notShared = self.machine(
            FirstBindRouting(mapper: Self.mapper),
            policy: Policy(name: "all", defaultAction: .allow, rules: [])
        )
        #expect(notShared.clientSent(Wire.bind([.endpointMapper])) == .resolve(.endpointMapper, at: Self.mapper))
        #expect(notShared.role == .mapped)
    }

    @Test("The client's PDUs wait while the runtime resolves or connects")
    func pduWhileRoutingIsAProtocolError() {
        var machine = self.machine()
        _ = machine.clientSent(Wire.bind([Wire.samr]))
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 0)) == .close(.protocolError))
        #expect(machine.firstBindResolved(.port(1)) == .connect(TCPEndpoint(address: Self.mapper.address, port: 1)))
        #expect(machine.firstBindResolved(.port(1)) == .close(.protocolError), "an answer nobody asked for")
    }

    /// A machine routed to port 49152 by its first bind (samr), spliced and bound.
    func routedAndBound(
        policy: Policy = Policy(name: "all", defaultAction: .allow, rules: [])
    ) -> ConnectionStateMachine {
        var machine = self.machine(policy: policy)
        _ = machine.clientSent(Wire.bind([Wire.samr], callID: 1))
        _ = machine.firstBindResolved(.port(49_152))
        _ = machine.connected()
        _ = machine.serverSent(Wire.bindAck(callID: 1, accepting: 1))
        _ = machine.takeEvents()
        return machine
    }

    @Test("alter_context on a bind-routed connection: refused only for an interface known to live elsewhere")
    func alterContextOnRoutedConnection() throws {
        var machine = self.routedAndBound()
        let alter = Wire.bind([Wire.lsarpc], callID: 2, alter: true)
        #expect(machine.clientSent(alter) == .checkEndpoints([Wire.lsarpc], at: Self.mapper, resolvable: [Wire.lsarpc]))
        #expect(!machine.acceptsClientPDUs)
        guard case .respond(let bytes) = machine.alterContextChecked({ _ in .some(49_999) }) else {
            Issue.record("expected a rejection")
            return
        }
        #expect(try #require(Wire.parse(bytes)).header.packetType == .alterContextResponse)
        #expect(machine.takeEvents() == [.alterContextServedElsewhere(interfaces: [Wire.lsarpc])])

        let sameEndpoint = Wire.bind([Wire.lsarpc], callID: 3, alter: true)
        #expect(machine.clientSent(sameEndpoint) != .forward)
        #expect(machine.alterContextChecked { _ in .some(49_152) } == .forwardHeld([sameEndpoint]), "same endpoint")
        let notRegistered = Wire.bind([Wire.lsarpc], callID: 4, alter: true)
        #expect(machine.clientSent(notRegistered) != .forward)
        #expect(
            machine.alterContextChecked { _ in .some(nil) } == .forwardHeld([notRegistered]),
            "the server refuses it itself"
        )
        let unknown = Wire.bind([Wire.lsarpc], callID: 5, alter: true)
        #expect(machine.clientSent(unknown) != .forward)
        #expect(machine.alterContextChecked { _ in nil } == .forwardHeld([unknown]), "unknown yet")
    }

    @Test("Denied interfaces of an alter_context are never looked up")
    func deniedInterfacesAreNotResolvable() {
        var machine = self.routedAndBound(policy: Self.samrOnly)
        let alter = Wire.bind([Wire.samr, Wire.drsuapi], callID: 2, alter: true)
        #expect(
            machine.clientSent(alter)
                == .checkEndpoints([Wire.samr, Wire.drsuapi], at: Self.mapper, resolvable: [Wire.samr])
        )
        guard case .respond = machine.alterContextChecked({ _ in nil }) else {
            Issue.record("the policy still refuses drsuapi")
            return
        }
    }

    @Test("A connection to a known server waits for the upstream, then takes PDUs")
    func knownServer() {
        let server = TCPEndpoint(address: Self.mapper.address, port: 49_152)
        var machine = ConnectionStateMachine(
            role: .mapped,
            policy: Self.samrOnly,
            client: Self.client,
            limits: WireLimits(),
            server: server
        )
        #expect(!machine.acceptsClientPDUs)
        #expect(machine.connected() == .hold)
        #expect(machine.acceptsClientPDUs)
        #expect(machine.clientSent(Wire.bind([Wire.samr])) == .forward)
    }
}

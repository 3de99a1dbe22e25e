import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// PDUs as clients and servers send them, built with RPCWire.
enum Wire {
    static let samr = InterfaceCatalog.named("samr")!.syntax
    static let drsuapi = InterfaceCatalog.named("drsuapi")!.syntax
    static let lsarpc = InterfaceCatalog.named("lsarpc")!.syntax
    static let featureNegotiation = SyntaxID(
        uuid: DCEUUID("6cb71c2c-9812-4540-0300-000000000000")!,
        majorVersion: 1,
        minorVersion: 0
    )

    static func raw(_ pdu: PDU) -> RawPDU {
        var bytes = try! pdu.serialized()
        return try! bytes.readRawPDU(limits: WireLimits())!
    }

    static func bind(
        _ interfaces: [SyntaxID],
        callID: UInt32 = 1,
        alter: Bool = false,
        auth: AuthVerifier? = nil,
        windowsStyle: Bool = false
    ) -> RawPDU {
        var contexts: [PresentationContext] = []
        for (index, interface) in interfaces.enumerated() {
            contexts.append(
                PresentationContext(contextID: UInt16(index), abstractSyntax: interface, transferSyntaxes: [.ndr])
            )
        }
        if windowsStyle, let interface = interfaces.first {
            contexts.append(
                PresentationContext(
                    contextID: UInt16(contexts.count),
                    abstractSyntax: interface,
                    transferSyntaxes: [.ndr64]
                )
            )
            contexts.append(
                PresentationContext(
                    contextID: UInt16(contexts.count),
                    abstractSyntax: interface,
                    transferSyntaxes: [featureNegotiation]
                )
            )
        }
        let body = BindPDU(
            maxTransmitFragment: 4280,
            maxReceiveFragment: 4280,
            associationGroupID: 0,
            contexts: contexts
        )
        return raw(
            PDU(
                header: PDUHeader(packetType: alter ? .alterContext : .bind, callID: callID),
                body: alter ? .alterContext(body) : .bind(body),
                authVerifier: auth
            )
        )
    }

    static func bindAck(callID: UInt32 = 1, accepting count: Int, alter: Bool = false) -> RawPDU {
        let results = (0..<count).map { _ in
            PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr)
        }
        let body = BindAckPDU(
            maxTransmitFragment: 4280,
            maxReceiveFragment: 4280,
            associationGroupID: 0x1234,
            secondaryAddress: BindAckPDU.secondaryAddress(port: 49154),
            results: results
        )
        return raw(
            PDU(
                header: PDUHeader(packetType: alter ? .alterContextResponse : .bindAck, callID: callID),
                body: alter ? .alterContextResponse(body) : .bindAck(body)
            )
        )
    }

    static func request(
        callID: UInt32,
        context: UInt16 = 0,
        opnum: UInt16,
        stub: ByteBuffer = ByteBuffer(bytes: [0, 0, 0, 0]),
        flags: PFCFlags = .singleFragment,
        auth: AuthVerifier? = nil
    ) -> RawPDU {
        raw(
            PDU(
                header: PDUHeader(packetType: .request, flags: flags, callID: callID),
                body: .request(
                    RequestPDU(allocationHint: UInt32(stub.readableBytes), contextID: context, opnum: opnum, stub: stub)
                ),
                authVerifier: auth
            )
        )
    }

    static func response(
        callID: UInt32,
        context: UInt16 = 0,
        stub: ByteBuffer,
        flags: PFCFlags = .singleFragment
    ) -> RawPDU {
        raw(
            PDU(
                header: PDUHeader(packetType: .response, flags: flags, callID: callID),
                body: .response(ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: context, stub: stub))
            )
        )
    }

    static func ntlm(_ level: AuthLevel) -> AuthVerifier {
        AuthVerifier(authType: .ntlm, authLevel: level, contextID: 1, value: ByteBuffer(repeating: 0x4E, count: 16))
    }

    static func parse(_ bytes: ByteBuffer) -> PDU? {
        var bytes = bytes
        return try? bytes.readRawPDU(limits: WireLimits())?.parse()
    }
}

@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    static let client = IPAddress("10.1.2.3")!
    static let policy = Policy(
        name: "dc",
        defaultAction: .deny,
        rules: [
            PolicyRule(
                action: .deny,
                interfaces: [InterfaceMatcher(parsing: "drsuapi")!],
                opnums: OpnumSet([3...3]),
                origin: RuleOrigin(index: 0)
            ),
            PolicyRule(
                action: .allow,
                interfaces: [InterfaceMatcher(parsing: "samr")!, InterfaceMatcher(parsing: "drsuapi")!],
                origin: RuleOrigin(index: 1)
            ),
            PolicyRule(
                action: .allow,
                interfaces: [InterfaceMatcher(parsing: "spoolss")!],
                minimumAuthLevel: .privacy,
                origin: RuleOrigin(index: 2)
            ),
        ]
    )

    func machine(_ role: ConnectionStateMachine.Role = .mapped) -> ConnectionStateMachine {
        ConnectionStateMachine.spliced(role: role, policy: Self.policy, client: Self.client, limits: WireLimits())
    }

    @Test func allowedBindIsForwardedAndItsContextsBecomeUsable() {
        var machine = self.machine()
        #expect(machine.clientSent(Wire.bind([Wire.samr], windowsStyle: true)) == .forward)
        // NDR32, NDR64 and the feature negotiation element: only the two interface contexts are decided.
        let decisions = machine.takeEvents().filter { if case .bindDecision = $0 { return true } else { return false } }
        #expect(decisions.count == 2)
        #expect(!machine.isBound)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        #expect(machine.isBound)
        #expect(machine.interface(forContext: 0) == Wire.samr)
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 64)) == .forward)
        #expect(machine.serverSent(Wire.response(callID: 2, stub: ByteBuffer(bytes: [0, 0, 0, 0]))) == .forward)
    }

    @Test func deniedBindIsAnsweredLocallyWithARejection() throws {
        var machine = self.machine()
        guard case .respond(let bytes) = machine.clientSent(Wire.bind([Wire.lsarpc], callID: 7)) else {
            Issue.record("expected a local answer")
            return
        }
        let answer = try #require(Wire.parse(bytes))
        #expect(answer.header.callID == 7)
        guard case .bindAck(let ack) = answer.body else {
            Issue.record("expected a bind_ack")
            return
        }
        #expect(ack.results.count == 1)
        #expect(ack.results[0].result == .providerRejection)
        #expect(ack.results[0].reason == .abstractSyntaxNotSupported)
        #expect(
            machine.takeEvents().contains {
                if case .bindDecision(_, let decision, _, _) = $0 { return !decision.permits } else { return false }
            }
        )
    }

    @Test func alterContextToADeniedInterfaceIsRefusedAndItsContextStaysUnusable() throws {
        var machine = self.machine()
        #expect(machine.clientSent(Wire.bind([Wire.samr])) == .forward)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        // The lsarpc-on-samr-endpoint trick: an alter_context to another interface of the process.
        var alterContexts = Wire.bind([Wire.samr, Wire.lsarpc], callID: 2, alter: true)
        guard case .respond(let bytes) = machine.clientSent(alterContexts) else {
            Issue.record("expected a local alter_context_resp")
            return
        }
        #expect(Wire.parse(bytes)?.packetType == .alterContextResponse)
        // Context 1 was never accepted: a request on it is a fault and the end of the connection.
        guard
            case .respondAndClose(let fault, .unknownContext) = machine.clientSent(
                Wire.request(callID: 3, context: 1, opnum: 0)
            )
        else {
            Issue.record("expected fault and close")
            return
        }
        guard case .fault(let body) = Wire.parse(fault)?.body else {
            Issue.record("expected a fault")
            return
        }
        #expect(body.status == .invalidPresentationContextID)
        alterContexts = Wire.bind([Wire.drsuapi], callID: 4, alter: true)
        #expect(machine.clientSent(alterContexts) == .forward)
    }

    @Test func requestBeforeAnyBindGetsAFaultAndCloses() {
        var machine = self.machine()
        guard case .respondAndClose(let bytes, .unknownContext) = machine.clientSent(Wire.request(callID: 1, opnum: 0))
        else {
            Issue.record("expected fault and close")
            return
        }
        #expect(Wire.parse(bytes)?.header.flags.contains(.didNotExecute) == true)
    }

    static func deniedCalls(_ events: [ConnectionEvent]) -> [(UInt16, AuthLevel)] {
        events.compactMap { event in
            if case .callDenied(_, let opnum, _, let level, _) = event { return (opnum, level) }
            return nil
        }
    }

    @Test func deniedOpnumGetsAFaultAndTheSessionGoesOn() {
        var machine = self.machine()
        _ = machine.clientSent(Wire.bind([Wire.drsuapi]))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 0)) == .forward)
        // DRSGetNCChanges in three fragments: the first gets the fault, the others are dropped.
        guard case .respond(let fault) = machine.clientSent(Wire.request(callID: 3, opnum: 3, flags: .firstFragment))
        else {
            Issue.record("expected a fault")
            return
        }
        guard case .fault(let body) = Wire.parse(fault)?.body else {
            Issue.record("not a fault")
            return
        }
        #expect(body.status == .accessDenied)
        #expect(machine.clientSent(Wire.request(callID: 3, opnum: 3, flags: [])) == .drop)
        #expect(machine.clientSent(Wire.request(callID: 3, opnum: 3, flags: .lastFragment)) == .drop)
        #expect(machine.clientSent(Wire.request(callID: 4, opnum: 16)) == .forward)
        #expect(Self.deniedCalls(machine.takeEvents()).contains { $0 == (3, AuthLevel.none) })
    }

    @Test(arguments: [AuthLevel.integrity, .privacy])
    func deniedOpnumOnAProtectedSessionEndsTheConnectionAfterTheFault(level: AuthLevel) {
        var machine = self.machine()
        _ = machine.clientSent(Wire.bind([Wire.drsuapi], auth: Wire.ntlm(level)))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 0, auth: Wire.ntlm(level))) == .forward)
        guard
            case .respondAndClose(let fault, .callDeniedOnProtectedSession) = machine.clientSent(
                Wire.request(callID: 3, opnum: 3, auth: Wire.ntlm(level))
            )
        else {
            Issue.record("a refused call on a \(level) session must end the connection after the fault")
            return
        }
        #expect(Wire.parse(fault)?.packetType == .fault)
        #expect(Self.deniedCalls(machine.takeEvents()).contains { $0 == (3, level) })
    }

    @Test func minimumAuthLevelIsReadFromTheBindTrailer() {
        let spoolss = InterfaceCatalog.named("spoolss")!.syntax
        var integrity = self.machine()
        guard case .respond = integrity.clientSent(Wire.bind([spoolss], auth: Wire.ntlm(.integrity))) else {
            Issue.record("integrity bind should be refused")
            return
        }
        var privacy = self.machine()
        #expect(privacy.clientSent(Wire.bind([spoolss], auth: Wire.ntlm(.privacy))) == .forward)
        #expect(privacy.authLevel == .privacy)
        #expect(privacy.authType == .ntlm)
    }

    // MARK: - Endpoint mapper listener

    func mapRequestStub(for interface: SyntaxID, maxTowers: UInt32 = 4) -> ByteBuffer {
        let tower = ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: .any, port: 135))
        let request = EPMMapRequest(object: nil, tower: tower, entryHandle: .null, maxTowers: maxTowers)
        var stub = ByteBuffer()
        stub.writeEPMMapRequest(request, syntax: .ndr32)
        return stub
    }

    func boundEndpointMapper() -> ConnectionStateMachine {
        var machine = self.machine(.endpointMapper)
        #expect(machine.clientSent(Wire.bind([SyntaxID.endpointMapper])) == .forward)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        return machine
    }

    @Test func endpointMapperListenerBindsOnlyTheEndpointMapper() {
        var machine = self.machine(.endpointMapper)
        guard case .respond = machine.clientSent(Wire.bind([Wire.samr])) else {
            Issue.record("samr on the EPM listener must be refused")
            return
        }
        guard
            case .respondAndClose(_, .authenticatedEndpointMapper) = machine.clientSent(
                Wire.bind([SyntaxID.endpointMapper], callID: 2, auth: Wire.ntlm(.integrity))
            )
        else {
            Issue.record("an integrity-protected EPM session could not be rewritten, so it is refused")
            return
        }
    }

    @Test func mapForAnAllowedInterfaceIsForwardedAndItsReplyRewritten() {
        var machine = self.boundEndpointMapper()
        #expect(
            machine.clientSent(Wire.request(callID: 2, opnum: 3, stub: self.mapRequestStub(for: Wire.samr))) == .forward
        )
        var reply = ByteBuffer()
        let tower = ProtocolTower.ncacnIPTCP(interface: Wire.samr, endpoint: TCPEndpoint(address: .any, port: 49154))
        reply.writeEPMMapResponse(
            EPMMapResponse(entryHandle: .null, maxTowers: 4, towers: [tower], status: RPCStatus(rawValue: 0)),
            syntax: .ndr32
        )
        guard case .rewriteEndpointMapperReply(let pending) = machine.serverSent(Wire.response(callID: 2, stub: reply))
        else {
            Issue.record("expected the reply to be handed over for rewriting")
            return
        }
        #expect(pending.operation == .map)
        #expect(pending.syntax == .ndr32)
        #expect(pending.fragments.count == 1)
        // A response to a call never asked (or a second answer to one) would reach the client
        // unrewritten: the connection is closed instead.
        #expect(machine.serverSent(Wire.response(callID: 9, stub: reply)) == .close(.protocolError))
        #expect(
            machine.takeEvents().contains {
                if case .protocolError("unsolicited_response", _) = $0 { return true } else { return false }
            }
        )
    }

    @Test func mapForADeniedInterfaceIsAnsweredNotRegistered() throws {
        var machine = self.boundEndpointMapper()
        guard
            case .respond(let bytes) = machine.clientSent(
                Wire.request(callID: 2, opnum: 3, stub: self.mapRequestStub(for: Wire.lsarpc, maxTowers: 1))
            )
        else {
            Issue.record("expected a local not-registered answer")
            return
        }
        let answer = try #require(Wire.parse(bytes))
        guard case .response(var response) = answer.body else {
            Issue.record("expected a response")
            return
        }
        let map = try response.stub.readEPMMapResponse(syntax: .ndr32)
        #expect(map.status == .endpointNotRegistered)
        #expect(map.towers.isEmpty)
        #expect(answer.header.callID == 2)
    }

    @Test(arguments: [UInt16(0), 1, 5, 6, 7, 8, 200])
    func endpointMapperRefusesOperationsOtherThanQueries(opnum: UInt16) {
        var machine = self.boundEndpointMapper()
        guard case .respond(let bytes) = machine.clientSent(Wire.request(callID: 2, opnum: opnum)) else {
            Issue.record("opnum \(opnum) must be answered locally")
            return
        }
        guard case .fault(let fault) = Wire.parse(bytes)?.body else {
            Issue.record("expected a fault")
            return
        }
        #expect(fault.status == .operationRangeError)
        #expect(
            machine.clientSent(Wire.request(callID: 3, opnum: 4, stub: ByteBuffer(repeating: 0, count: 20))) == .forward
        )
    }

    @Test func multiFragmentReplyIsHeldUntilComplete() {
        var machine = self.boundEndpointMapper()
        #expect(
            machine.clientSent(Wire.request(callID: 2, opnum: 2, stub: ByteBuffer(repeating: 0, count: 40))) == .forward
        )
        #expect(
            machine.serverSent(
                Wire.response(callID: 2, stub: ByteBuffer(repeating: 0, count: 8), flags: .firstFragment)
            ) == .hold
        )
        #expect(
            machine.serverSent(Wire.response(callID: 2, stub: ByteBuffer(repeating: 0, count: 8), flags: [])) == .hold
        )
        guard
            case .rewriteEndpointMapperReply(let reply) = machine.serverSent(
                Wire.response(callID: 2, stub: ByteBuffer(repeating: 0, count: 8), flags: .lastFragment)
            )
        else {
            Issue.record("expected the complete reply")
            return
        }
        #expect(reply.fragments.count == 3)
        #expect(reply.operation == .lookup)
    }

    // MARK: - Hostile sequences (regressions from IntegrationTests/test_adversarial.py)

    static func hasProtocolError(_ events: [ConnectionEvent], _ reason: String) -> Bool {
        events.contains { if case .protocolError(reason, _) = $0 { return true } else { return false } }
    }

    /// Bug: a request without FIRST_FRAG skipped every check and was forwarded, even before any bind.
    @Test(arguments: [PFCFlags.lastFragment, []])
    func requestFragmentWithoutFirstFragBeforeABindIsAProtocolError(flags: PFCFlags) {
        var machine = self.machine()
        #expect(machine.clientSent(Wire.request(callID: 1, opnum: 0, flags: flags)) == .close(.protocolError))
        #expect(Self.hasProtocolError(machine.takeEvents(), "fragment_sequence"))
    }

    @Test(arguments: [ConnectionStateMachine.Role.mapped, .endpointMapper])
    func middleFragmentOfACallNeverStartedIsAProtocolError(role: ConnectionStateMachine.Role) {
        var machine = self.machine(role)
        _ = machine.clientSent(Wire.bind([role == .mapped ? Wire.samr : SyntaxID.endpointMapper]))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 1, flags: [])) == .close(.protocolError))
        #expect(Self.hasProtocolError(machine.takeEvents(), "fragment_sequence"))
    }

    /// Bug: fragments of two calls could interleave on a mapped port (Samba rejects it; the
    /// gateway forwarded it).
    @Test(arguments: [PFCFlags.singleFragment, .firstFragment, [], .lastFragment])
    func anotherCallInsideAFragmentedRequestIsAProtocolError(flags: PFCFlags) {
        var machine = self.machine()
        _ = machine.clientSent(Wire.bind([Wire.samr]))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 1, flags: .firstFragment)) == .forward)
        #expect(machine.clientSent(Wire.request(callID: 3, opnum: 1, flags: flags)) == .close(.protocolError))
        #expect(Self.hasProtocolError(machine.takeEvents(), "fragment_sequence"))
    }

    @Test func fragmentsOfOneCallInOrderAreForwardedAndTheNextCallMayStart() {
        var machine = self.machine()
        _ = machine.clientSent(Wire.bind([Wire.samr]))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        _ = machine.takeEvents()
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 1, flags: .firstFragment)) == .forward)
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 1, flags: [])) == .forward)
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 1, flags: .lastFragment)) == .forward)
        #expect(machine.clientSent(Wire.request(callID: 3, opnum: 1)) == .forward)
        // An orphaned PDU ends the open call; the next call may start.
        #expect(machine.clientSent(Wire.request(callID: 4, opnum: 1, flags: .firstFragment)) == .forward)
        let orphaned = Wire.raw(PDU(header: PDUHeader(packetType: .orphaned, callID: 4), body: .orphaned(ByteBuffer())))
        #expect(machine.clientSent(orphaned) == .forward)
        #expect(machine.clientSent(Wire.request(callID: 5, opnum: 1)) == .forward)
        #expect(machine.takeEvents().isEmpty)
    }

    /// Bug: on the endpoint-mapper listener a response whose call id was never asked was forwarded
    /// as is, so its towers reached the client unrewritten.
    @Test func endpointMapperResponseToACallNeverAskedClosesTheConnection() {
        var machine = self.boundEndpointMapper()
        var reply = ByteBuffer()
        let tower = ProtocolTower.ncacnIPTCP(
            interface: Wire.samr,
            endpoint: TCPEndpoint(address: IPv4Address("10.1.2.3")!, port: 49154)
        )
        reply.writeEPMMapResponse(
            EPMMapResponse(entryHandle: .null, maxTowers: 4, towers: [tower], status: RPCStatus(rawValue: 0)),
            syntax: .ndr32
        )
        #expect(machine.serverSent(Wire.response(callID: 77, stub: reply)) == .close(.protocolError))
        #expect(Self.hasProtocolError(machine.takeEvents(), "unsolicited_response"))
    }

    @Test func endpointMapperLookupHandleFreeIsAnsweredWithoutRewriting() {
        var machine = self.boundEndpointMapper()
        #expect(
            machine.clientSent(Wire.request(callID: 2, opnum: 4, stub: ByteBuffer(repeating: 0, count: 20))) == .forward
        )
        #expect(machine.serverSent(Wire.response(callID: 2, stub: ByteBuffer(repeating: 0, count: 24))) == .forward)
        // Answered once: a second answer is unsolicited.
        #expect(
            machine.serverSent(Wire.response(callID: 2, stub: ByteBuffer(repeating: 0, count: 24)))
                == .close(.protocolError)
        )
    }

    /// Hardening: a client fragmenting an endpoint-mapper request could make the connection
    /// buffer up to the reply cap (1 MiB); requests have their own 16 KiB / 16-fragment cap.
    @Test func endpointMapperRequestReassemblyIsCapped() {
        var machine = self.boundEndpointMapper()
        let piece = ByteBuffer(repeating: 0, count: 4000)
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 2, stub: piece, flags: .firstFragment)) == .hold)
        for _ in 0..<3 {
            #expect(machine.clientSent(Wire.request(callID: 2, opnum: 2, stub: piece, flags: [])) == .hold)
        }
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 2, stub: piece, flags: [])) == .close(.protocolError))
        #expect(Self.hasProtocolError(machine.takeEvents(), "reassembly_too_large"))

        var many = self.boundEndpointMapper()
        #expect(many.clientSent(Wire.request(callID: 2, opnum: 2, stub: ByteBuffer(), flags: .firstFragment)) == .hold)
        for _ in 0..<15 {
            #expect(many.clientSent(Wire.request(callID: 2, opnum: 2, stub: ByteBuffer(), flags: [])) == .hold)
        }
        #expect(
            many.clientSent(Wire.request(callID: 2, opnum: 2, stub: ByteBuffer(), flags: [])) == .close(.protocolError)
        )
    }

    @Test func callsInFlightAreTrackedUntilTheirLastFragmentOrFault() {
        var machine = self.machine()
        #expect(!machine.hasCallsInFlight)
        _ = machine.clientSent(Wire.bind([Wire.samr]))
        #expect(machine.hasCallsInFlight, "a bind waits for its ack")
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        #expect(!machine.hasCallsInFlight)
        _ = machine.clientSent(Wire.request(callID: 2, opnum: 1))
        _ = machine.clientSent(Wire.request(callID: 3, opnum: 1))
        #expect(machine.hasCallsInFlight)
        _ = machine.serverSent(Wire.response(callID: 2, stub: ByteBuffer(), flags: .firstFragment))
        _ = machine.serverSent(Wire.response(callID: 2, stub: ByteBuffer(), flags: .lastFragment))
        #expect(machine.hasCallsInFlight, "call 3 is still running")
        _ = machine.serverSent(Wire.raw(PDU.fault(callID: 3, contextID: 0, status: .accessDenied)))
        #expect(!machine.hasCallsInFlight)
    }

    @Test func replacingThePolicyAppliesToTheNextBind() {
        var machine = self.machine()
        guard case .respond = machine.clientSent(Wire.bind([Wire.lsarpc])) else {
            Issue.record("lsarpc is denied by the first policy")
            return
        }
        machine.policy = Policy(name: "open", defaultAction: .allow, rules: [])
        #expect(machine.clientSent(Wire.bind([Wire.lsarpc], callID: 2)) == .forward)
    }

    @Test func serverSendingClientPDUsIsAProtocolError() {
        var machine = self.machine()
        #expect(machine.serverSent(Wire.bind([Wire.samr])) == .close(.protocolError))
        var other = self.machine()
        #expect(other.clientSent(Wire.bindAck(accepting: 1)) == .close(.protocolError))
    }
}

import DCOMTestStubs
import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// DCOM on the endpoint-mapper listener (the SCM on 135) and object calls on mapped ports: binds
/// decided by the policy, activation requests by their CLSID when readable, readable replies
/// announcing the exporter's ports, the IPID of object calls in their events.
@Suite("Connection state machine: DCOM")
struct ConnectionDCOMTests {
    static let client = IPAddress("10.1.2.3")!
    static let activator = DCOMInterface.remoteSCMActivator
    static let exporter = DCOMInterface.objectExporter
    static let wbemServices = InterfaceCatalog.named("iwbemservices")!.syntax
    static let wbemLogin = ClassCatalog.named("wbemlevel1login")!.classID

    /// `block-remote-exec`, then allow the DCOM and WMI interfaces; default deny.
    static let policy = Policy(
        name: "dcom",
        defaultAction: .deny,
        rules: BuiltInProfiles.blockRemoteExec.expand(at: 0) + [
            PolicyRule(
                action: .allow,
                interfaces: [
                    "isystemactivator", "iobjectexporter", "iremunknown2", "iwbemlevel1login", "iwbemservices",
                ]
                .map { InterfaceMatcher(parsing: $0)! },
                origin: RuleOrigin(index: 1)
            )
        ]
    )

    func scm(policy: Policy = Self.policy) -> ConnectionStateMachine {
        ConnectionStateMachine.spliced(role: .endpointMapper, policy: policy, client: Self.client, limits: WireLimits())
    }

    static func activations(_ events: [ConnectionEvent]) -> [(ActivationClass, PolicyAction)] {
        events.compactMap {
            if case .activation(_, _, let activation, let decision, _, _) = $0 { return (activation, decision.action) }
            return nil
        }
    }

    static func announcements(_ events: [ConnectionEvent]) -> [DCOMAnnouncement] {
        events.compactMap {
            if case .dcomEndpointsAnnounced(let announcement) = $0 { return announcement }
            return nil
        }
    }

    @Test func scmInterfacesAreBoundOnTheEndpointMapperListenerOnlyWhenThePolicyAllows() {
        var machine = self.scm()
        #expect(machine.clientSent(Wire.bind([Self.activator])) == .forward)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        // At integrity too: nothing of an activation is rewritten.
        var signed = self.scm()
        #expect(signed.clientSent(Wire.bind([Self.exporter], auth: Wire.ntlm(.integrity))) == .forward)
        // A policy that does not name them refuses them, as before.
        var closed = self.scm(policy: Policy(name: "epm-only", defaultAction: .deny, rules: []))
        guard case .respond = closed.clientSent(Wire.bind([Self.activator])) else {
            Issue.record("expected a local bind rejection")
            return
        }
        // Other interfaces stay refused on the listener whatever the policy says.
        var open = self.scm(policy: Policy(name: "all", defaultAction: .allow, rules: []))
        guard case .respond = open.clientSent(Wire.bind([Wire.samr])) else {
            Issue.record("expected samr refused on the endpoint-mapper listener")
            return
        }
    }

    @Test func readableActivationIsDecidedByItsClassAndItsReplyAnnouncesThePort() throws {
        var machine = self.scm()
        _ = machine.clientSent(Wire.bind([Self.activator]))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        _ = machine.takeEvents()
        let parsesBefore = machine.pduParses
        // WbemLevel1Login: allowed, recorded.
        let request = Wire.request(
            callID: 2,
            opnum: 4,
            stub: DCOMSamples.activationRequest(createInstance: true, clsid: Self.wbemLogin)
        )
        #expect(machine.clientSent(request) == .forward)
        #expect(machine.pduParses == parsesBefore + 1, "the request is parsed once")
        let decided = Self.activations(machine.takeEvents())
        #expect(decided.count == 1)
        #expect(decided.first?.0 == .known(Self.wbemLogin))
        #expect(decided.first?.1 == .allow)
        // Its reply passes unchanged and names the exporter's port.
        #expect(
            machine.serverSent(Wire.response(callID: 2, stub: DCOMSamples.activationReply(port: 49670))) == .forward
        )
        #expect(machine.pduParses == parsesBefore + 2, "the reply is parsed once")
        let announced = try #require(Self.announcements(machine.takeEvents()).first)
        #expect(announced.source == .activation)
        #expect(announced.ports == [49670])
        #expect(announced.oxid == DCOMSamples.oxid)
        #expect(announced.ipids == [DCOMSamples.ipid])
        #expect(announced.classID == Self.wbemLogin)
        #expect(announced.bindings.contains("10.0.0.5[49670]"))
        #expect(!machine.hasCallsInFlight)
    }

    @Test func lateralMovementActivationIsRefusedWithAFault() throws {
        var machine = self.scm()
        _ = machine.clientSent(Wire.bind([Self.activator]))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        let request = Wire.request(callID: 3, opnum: 3, stub: DCOMSamples.activationRequest(createInstance: false))
        guard case .respond(let bytes) = machine.clientSent(request) else {
            Issue.record("expected a fault")
            return
        }
        guard case .fault(let fault) = Wire.parse(bytes)?.body else {
            Issue.record("expected a fault PDU")
            return
        }
        #expect(fault.status == .accessDenied)
        let events = machine.takeEvents()
        let decided = Self.activations(events)
        #expect(decided.count == 1)
        #expect(decided.first?.0 == .known(DCOMSamples.mmc20))
        #expect(decided.first?.1 == .deny)
        // One line for the activation, not a second "call denied".
        #expect(!events.contains { if case .callDenied = $0 { return true } else { return false } })
    }

    @Test func sealedActivationGetsTheRulesSealedChoiceAndAnnouncesNothing() {
        var machine = self.scm()
        _ = machine.clientSent(Wire.bind([Self.activator], auth: Wire.ntlm(.privacy)))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        _ = machine.takeEvents()
        // The bytes are a readable MMC20 activation, but the verifier says privacy: not read.
        let request = Wire.request(
            callID: 4,
            opnum: 4,
            stub: DCOMSamples.activationRequest(createInstance: true),
            auth: Wire.ntlm(.privacy)
        )
        #expect(machine.clientSent(request) == .forward)
        let decided = Self.activations(machine.takeEvents())
        #expect(decided.first?.0 == .sealed)
        #expect(decided.first?.1 == .audit, "block-remote-exec's default for sealed activations")
        // Strict: the same rule with sealed_activation deny refuses it.
        var strictRules = Self.policy.rules
        for index in strictRules.indices where strictRules[index].classIDs != nil {
            strictRules[index].sealedActivation = .deny
        }
        var strict = self.scm(policy: Policy(name: "strict", defaultAction: .deny, rules: strictRules))
        _ = strict.clientSent(Wire.bind([Self.activator], auth: Wire.ntlm(.privacy)))
        _ = strict.serverSent(Wire.bindAck(accepting: 1))
        guard case .respondAndClose(_, .callDeniedOnProtectedSession) = strict.clientSent(request) else {
            Issue.record("expected a fault and close on the sealed session")
            return
        }
    }

    @Test func resolveOxid2ReplyAnnouncesThePortOfTheOXIDAsked() throws {
        var machine = self.scm()
        _ = machine.clientSent(Wire.bind([Self.exporter]))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        var stub = ByteBuffer()
        stub.writeInteger(DCOMSamples.oxid, endianness: .little)
        stub.writeInteger(UInt16(1), endianness: .little)
        stub.writeInteger(UInt16(0), endianness: .little)
        stub.writeInteger(UInt32(1), endianness: .little)
        stub.writeInteger(UInt16(7), endianness: .little)
        #expect(machine.clientSent(Wire.request(callID: 5, opnum: 4, stub: stub)) == .forward)
        #expect(machine.serverSent(Wire.response(callID: 5, stub: DCOMSamples.resolveOxid2Reply())) == .forward)
        let announced = try #require(Self.announcements(machine.takeEvents()).first)
        #expect(announced.source == .oxidResolution)
        #expect(announced.oxid == DCOMSamples.oxid)
        #expect(announced.ports == [65082])
        // ServerAlive2 is allowed and announces nothing (no ports in its bindings).
        #expect(machine.clientSent(Wire.request(callID: 6, opnum: 5, stub: ByteBuffer())) == .forward)
        #expect(machine.serverSent(Wire.response(callID: 6, stub: DCOMSamples.serverAlive2Reply())) == .forward)
        #expect(Self.announcements(machine.takeEvents()).isEmpty)
    }

    @Test func wmiExecMethodIsRefusedOnTheObjectAndItsIPIDRecorded() {
        var machine = ConnectionStateMachine.spliced(
            role: .mapped,
            policy: Self.policy,
            client: Self.client,
            limits: WireLimits()
        )
        _ = machine.clientSent(Wire.bind([Self.wbemServices], auth: Wire.ntlm(.privacy)))
        _ = machine.serverSent(Wire.bindAck(accepting: 1))
        func call(_ callID: UInt32, opnum: UInt16) -> RawPDU {
            Wire.raw(
                PDU(
                    header: PDUHeader(
                        packetType: .request,
                        flags: [.firstFragment, .lastFragment, .objectUUID],
                        callID: callID
                    ),
                    body: .request(
                        RequestPDU(
                            allocationHint: 4,
                            contextID: 0,
                            opnum: opnum,
                            objectUUID: DCOMSamples.ipid,
                            stub: ByteBuffer(bytes: [1, 2, 3, 4])
                        )
                    ),
                    authVerifier: Wire.ntlm(.privacy)
                )
            )
        }
        // GetObject (6) passes; ExecMethod (24) is refused, naming the IPID.
        #expect(machine.clientSent(call(2, opnum: 6)) == .forward)
        guard case .respondAndClose(_, .callDeniedOnProtectedSession) = machine.clientSent(call(3, opnum: 24)) else {
            Issue.record("expected ExecMethod refused")
            return
        }
        let denied = machine.takeEvents().compactMap { event -> (UInt16, DCEUUID?)? in
            if case .callDenied(_, let opnum, let decision, _, _, let ipid) = event,
                decision.origin?.profile == "block-remote-exec"
            {
                return (opnum, ipid)
            }
            return nil
        }
        #expect(denied.count == 1)
        #expect(denied.first?.0 == 24)
        #expect(denied.first?.1 == DCOMSamples.ipid)
    }
}

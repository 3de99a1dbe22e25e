import Logging
import MetricsTestKit
import NIOCore
import NIOEmbedded
import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

/// Signed and sealed endpoint-mapper lookups (issue 18): the pool refuses them with
/// `authenticated_epm`; preserve mapping and transparent `server_ports_listen` pass them byte for
/// byte; a signed lookup for a denied interface is refused with a fault; a sealed one passes.
@Suite("Protected endpoint-mapper lookups")
struct ProtectedEndpointMapperTests {
    static let client = IPAddress("10.1.2.3")!
    static let policy = Policy(
        name: "dc",
        defaultAction: .deny,
        rules: [
            PolicyRule(action: .allow, interfaces: [InterfaceMatcher(parsing: "samr")!], origin: RuleOrigin(index: 0))
        ]
    )
    static let server = IPv4Address("10.99.0.2")!

    func machine(_ handling: ConnectionStateMachine.ProtectedEndpointMapper) -> ConnectionStateMachine {
        var machine = ConnectionStateMachine.spliced(
            role: .endpointMapper,
            policy: Self.policy,
            client: Self.client,
            limits: WireLimits()
        )
        machine.protectedEndpointMapper = handling
        return machine
    }

    static func mapStub(for interface: SyntaxID) -> ByteBuffer {
        let tower = ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: .any, port: 135))
        var stub = ByteBuffer()
        stub.writeEPMMapRequest(
            EPMMapRequest(object: nil, tower: tower, entryHandle: .null, maxTowers: 4),
            syntax: .ndr32
        )
        return stub
    }

    static func mapReplyStub(ports: [UInt16], address: IPv4Address = .any) -> ByteBuffer {
        var stub = ByteBuffer()
        let towers = ports.map {
            ProtocolTower.ncacnIPTCP(interface: Wire.samr, endpoint: TCPEndpoint(address: address, port: $0))
        }
        stub.writeEPMMapResponse(
            EPMMapResponse(entryHandle: .null, maxTowers: 4, towers: towers, status: RPCStatus(rawValue: 0)),
            syntax: .ndr32
        )
        return stub
    }

    static func signedResponse(callID: UInt32, stub: ByteBuffer, level: AuthLevel = .integrity) -> RawPDU {
        Wire.raw(
            PDU(
                header: PDUHeader(packetType: .response, callID: callID),
                body: .response(ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: 0, stub: stub)),
                authVerifier: Wire.ntlm(level)
            )
        )
    }

    /// Bound at `level` with NTLM, as Windows with EnableAuthEpResolution does.
    func bound(
        _ handling: ConnectionStateMachine.ProtectedEndpointMapper,
        level: AuthLevel = .integrity
    )
        -> ConnectionStateMachine
    {
        var machine = self.machine(handling)
        #expect(machine.clientSent(Wire.bind([SyntaxID.endpointMapper], auth: Wire.ntlm(level))) == .forward)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        _ = machine.takeEvents()
        return machine
    }

    // MARK: - State machine, no channel

    @Test(
        "Pool: a signed EPM bind is rejected and closed with authenticated_epm, and says why",
        arguments: [
            AuthLevel.packet, .integrity, .privacy,
        ]
    )
    func poolRefuses(level: AuthLevel) throws {
        var machine = self.machine(.refuse)
        guard
            case .respondAndClose(let bytes, let reason) = machine.clientSent(
                Wire.bind([SyntaxID.endpointMapper], auth: Wire.ntlm(level))
            )
        else {
            Issue.record("expected a rejection and a close")
            return
        }
        #expect(reason == .authenticatedEndpointMapper)
        #expect(reason.rawValue == "authenticated_epm")
        #expect(Wire.parse(bytes)?.packetType == .bindAck)
        #expect(
            machine.takeEvents().contains(.authenticatedEndpointMapperRefused(authLevel: level, authType: .ntlm))
        )
    }

    @Test("Pool: a connect-level EPM bind still passes (its replies carry no verifier)")
    func poolAllowsConnectLevel() {
        var machine = self.machine(.refuse)
        #expect(machine.clientSent(Wire.bind([SyntaxID.endpointMapper], auth: Wire.ntlm(.connect))) == .forward)
    }

    @Test("Pass-through: a signed bind, map and reply go through; the reply is handed over unchanged and marked")
    func passThroughForwardsSignedLookup() {
        var machine = self.bound(.passThrough)
        let request = Wire.request(callID: 2, opnum: 3, stub: Self.mapStub(for: Wire.samr), auth: Wire.ntlm(.integrity))
        #expect(machine.clientSent(request) == .forward)
        let reply = Self.signedResponse(callID: 2, stub: Self.mapReplyStub(ports: [49154]))
        guard case .rewriteEndpointMapperReply(let handed) = machine.serverSent(reply) else {
            Issue.record("expected the reply to be handed over")
            return
        }
        #expect(handed.isProtected)
        #expect(handed.authLevel == .integrity)
        #expect(handed.fragments.map(\.bytes) == [reply.bytes])
    }

    @Test("Pool: a signed reply (should a session get there) closes with authenticated_epm")
    func poolClosesOnSignedReply() {
        var machine = self.machine(.refuse)
        #expect(machine.clientSent(Wire.bind([SyntaxID.endpointMapper])) == .forward)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 3, stub: Self.mapStub(for: Wire.samr))) == .forward)
        let reply = Self.signedResponse(callID: 2, stub: Self.mapReplyStub(ports: [49154]))
        #expect(machine.serverSent(reply) == .close(.authenticatedEndpointMapper))
    }

    @Test("Pass-through: a signed map for a denied interface gets a fault and the connection closes")
    func signedMapForDeniedInterface() throws {
        var machine = self.bound(.passThrough)
        let request = Wire.request(
            callID: 2,
            opnum: 3,
            stub: Self.mapStub(for: Wire.drsuapi),
            auth: Wire.ntlm(.integrity)
        )
        guard case .respondAndClose(let bytes, let reason) = machine.clientSent(request) else {
            Issue.record("expected a fault and a close")
            return
        }
        #expect(reason == .callDeniedOnProtectedSession)
        guard case .fault(let fault) = Wire.parse(bytes)?.body else {
            Issue.record("expected a fault")
            return
        }
        #expect(fault.status == .accessDenied)
        #expect(machine.takeEvents().contains(.protectedEndpointLookupDenied(interface: Wire.drsuapi)))
    }

    @Test("Pass-through: a sealed map is not read (its stub is ciphertext) and is forwarded")
    func sealedMapPasses() {
        var machine = self.bound(.passThrough, level: .privacy)
        // Random bytes stand for the encrypted stub: reading it as an ept_map would fail.
        let request = Wire.request(
            callID: 2,
            opnum: 3,
            stub: ByteBuffer(bytes: (0..<96).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }),
            auth: Wire.ntlm(.privacy)
        )
        #expect(machine.clientSent(request) == .forward)
        let reply = Self.signedResponse(callID: 2, stub: ByteBuffer(repeating: 0xA5, count: 64), level: .privacy)
        guard case .rewriteEndpointMapperReply(let handed) = machine.serverSent(reply) else {
            Issue.record("expected the sealed reply to be handed over")
            return
        }
        #expect(handed.authLevel == .privacy)
    }

    @Test("Unprotected lookups on a pass-through connection are rewritten as before")
    func unprotectedStillRewritten() {
        var machine = self.machine(.passThrough)
        #expect(machine.clientSent(Wire.bind([SyntaxID.endpointMapper])) == .forward)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        #expect(machine.clientSent(Wire.request(callID: 2, opnum: 3, stub: Self.mapStub(for: Wire.samr))) == .forward)
        let reply = Wire.response(callID: 2, stub: Self.mapReplyStub(ports: [49154]))
        guard case .rewriteEndpointMapperReply(let handed) = machine.serverSent(reply) else {
            Issue.record("expected the reply to be handed over")
            return
        }
        #expect(!handed.isProtected)
    }

    @Test("A fixed-server first bind: decided, then connected there without a look-up; a denied one never connects")
    func fixedServerRouting() {
        let server = TCPEndpoint(address: Self.server, port: 49_154)
        let routing = FirstBindRouting(mapper: TCPEndpoint(address: Self.server, port: 135), server: server)
        var allowed = ConnectionStateMachine(
            routing: routing,
            policy: Self.policy,
            client: Self.client,
            limits: WireLimits()
        )
        #expect(allowed.clientSent(Wire.bind([Wire.samr])) == .connect(server))
        #expect(allowed.server == server)
        var denied = ConnectionStateMachine(
            routing: routing,
            policy: Self.policy,
            client: Self.client,
            limits: WireLimits()
        )
        guard case .respond = denied.clientSent(Wire.bind([Wire.drsuapi])) else {
            Issue.record("a denied first bind is answered here")
            return
        }
        #expect(denied.server == nil)
        #expect(denied.isAwaitingFirstBind)
    }

    // MARK: - Accept plan

    static let epm = TCPEndpoint(address: Self.server, port: 135)

    @Test("Preserve: gateway port P goes to the server's port P after the first bind")
    func preservePlan() {
        let plan = AcceptPlan.plan(
            mode: .mapped,
            listener: .mapped,
            listenerPort: 49_154,
            epmPort: 135,
            upstream: Self.server,
            upstreamEPMPort: 135,
            mapping: nil,
            destination: .notAsked,
            admitsServer: { _ in false },
            portMapping: .preserve,
            passesProtectedEndpointMapper: true
        )
        let server = TCPEndpoint(address: Self.server, port: 49_154)
        #expect(plan.action == .routeByBind(FirstBindRouting(mapper: Self.epm, server: server)))
        #expect(plan.gatewayPort == nil && plan.mappedPort == nil)
        let epmPlan = AcceptPlan.plan(
            mode: .mapped,
            listener: .epm,
            listenerPort: 135,
            epmPort: 135,
            upstream: Self.server,
            upstreamEPMPort: 135,
            mapping: nil,
            destination: .notAsked,
            admitsServer: { _ in false },
            portMapping: .preserve,
            passesProtectedEndpointMapper: true
        )
        #expect(
            epmPlan.machine(policy: Self.policy, client: Self.client, limits: WireLimits())?.protectedEndpointMapper
                == .passThrough
        )
    }

    func transparentPlan(
        _ destination: TCPEndpoint,
        pinholeOpen: ((TCPEndpoint) -> Bool)? = nil
    ) -> AcceptPlan {
        AcceptPlan.plan(
            mode: .transparent(servers: [IPNetwork("10.99.0.0/24")!]),
            listener: .mapped,
            listenerPort: 40_000,
            epmPort: 135,
            upstream: .any,
            upstreamEPMPort: 135,
            mapping: nil,
            destination: .original(destination),
            admitsServer: { $0 == Self.server },
            serverPortsListen: 40_000,
            admitsServerPort: { (49_152...49_160).contains($0) },
            pinholeOpen: pinholeOpen,
            passesProtectedEndpointMapper: true
        )
    }

    @Test("Transparent server_ports_listen: the original destination is the server, decided by the first bind")
    func transparentServerPorts() {
        let destination = TCPEndpoint(address: Self.server, port: 49_153)
        #expect(
            self.transparentPlan(destination)
                == AcceptPlan(
                    action: .routeByBind(FirstBindRouting(mapper: Self.epm, server: destination)),
                    upstreamAddress: Self.server,
                    protectedEndpointMapper: .passThrough
                )
        )
        guard
            case .refuse(.destinationNotAllowed, _) = self.transparentPlan(
                TCPEndpoint(address: Self.server, port: 50_000)
            ).action
        else {
            Issue.record("a port outside server_ports is refused")
            return
        }
        guard
            case .refuse(.destinationNotAllowed, _) = self.transparentPlan(
                TCPEndpoint(address: IPv4Address("10.99.0.9")!, port: 49_153)
            ).action
        else {
            Issue.record("a server outside servers is refused")
            return
        }
        guard case .refuse(.noPinhole, _) = self.transparentPlan(destination, pinholeOpen: { _ in false }).action else {
            Issue.record("pinholes: learned refuses an endpoint never named")
            return
        }
        guard case .routeByBind = self.transparentPlan(destination, pinholeOpen: { $0 == destination }).action else {
            Issue.record("pinholes: learned admits a learned endpoint")
            return
        }
    }

    // MARK: - Pinholes

    @Test("Pinholes open per client and endpoint, expire, and stay bounded")
    func pinholes() {
        var set = PinholeSet(lifetime: .seconds(10), capacity: 2)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let other = IPAddress("10.1.2.4")!
        let a = TCPEndpoint(address: Self.server, port: 49_152)
        let b = TCPEndpoint(address: Self.server, port: 49_153)
        let c = TCPEndpoint(address: Self.server, port: 49_154)
        set.open(client: Self.client, server: a, now: start)
        #expect(set.isOpen(client: Self.client, server: a, now: start + .seconds(9)))
        #expect(!set.isOpen(client: other, server: a, now: start))
        #expect(!set.isOpen(client: Self.client, server: a, now: start + .seconds(10)))
        set.open(client: Self.client, server: b, now: start + .seconds(1))
        set.open(client: Self.client, server: c, now: start + .seconds(2))
        #expect(set.count == 2)
        #expect(
            !set.isOpen(client: Self.client, server: a, now: start + .seconds(2)),
            "the oldest is dropped when full"
        )
        #expect(set.isOpen(client: Self.client, server: c, now: start + .seconds(2)))
    }

    @Test("OnceTable: true once per key, bounded")
    func onceTable() {
        let table = OnceTable<Int>(capacity: 2)
        #expect(table.first(1))
        #expect(!table.first(1))
        #expect(table.first(2))
        #expect(table.first(3), "full: starts over")
        #expect(!table.first(3))
    }
}

import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// bind_ack / alter_context_resp secondary addresses on mapped connections name the gateway port
/// the client connected to, never the server's (issue 14); decided by the machine, no channels.
@Suite("Secondary address rewriting")
struct SecondaryAddressTests {
    static let policy = Policy(name: "open", defaultAction: .allow, rules: [])

    func machine(gatewayPort: UInt16?) -> ConnectionStateMachine {
        var machine = ConnectionStateMachine.spliced(
            role: .mapped,
            policy: Self.policy,
            client: .v4(1),
            limits: WireLimits()
        )
        machine.gatewayPort = gatewayPort
        return machine
    }

    static func ack(serverPort: UInt16?, alter: Bool = false, auth: AuthVerifier? = nil, callID: UInt32 = 1) -> RawPDU {
        let results = [PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr)]
        let body = BindAckPDU(
            maxTransmitFragment: 4280,
            maxReceiveFragment: 4280,
            associationGroupID: 0x1234,
            secondaryAddress: serverPort.map { BindAckPDU.secondaryAddress(port: $0) } ?? [],
            results: results
        )
        return Wire.raw(
            PDU(
                header: PDUHeader(packetType: alter ? .alterContextResponse : .bindAck, callID: callID),
                body: alter ? .alterContextResponse(body) : .bindAck(body),
                authVerifier: auth
            )
        )
    }

    @Test(
        "The server's port is replaced by the gateway's; frag_length follows; the context is still accepted",
        arguments: [
            (UInt16(49154), UInt16(50000)), (49154, 135), (135, 50000), (9, 65535), (65535, 7),
        ]
    )
    func rewritten(serverPort: UInt16, gatewayPort: UInt16) throws {
        var machine = self.machine(gatewayPort: gatewayPort)
        #expect(machine.clientSent(Wire.bind([Wire.samr], callID: 3)) == .forward)
        guard case .respond(let bytes) = machine.serverSent(Self.ack(serverPort: serverPort, callID: 3)) else {
            Issue.record("expected the rewritten bind_ack")
            return
        }
        let pdu = try #require(Wire.parse(bytes))
        #expect(Int(pdu.header.fragmentLength) == bytes.readableBytes)
        #expect(pdu.header.callID == 3)
        guard case .bindAck(let ack) = pdu.body else {
            Issue.record("expected a bind_ack")
            return
        }
        #expect(ack.secondaryAddress == Array("\(gatewayPort)".utf8) + [0])
        #expect(ack.associationGroupID == 0x1234)
        #expect(ack.results.map(\.result) == [.acceptance])
        #expect(machine.isBound)
        #expect(machine.interface(forContext: 0) == Wire.samr)
    }

    @Test("alter_context_resp is rewritten too; an empty secondary address is left alone")
    func alterContextResponse() throws {
        var machine = self.machine(gatewayPort: 50_001)
        _ = machine.clientSent(Wire.bind([Wire.samr]))
        _ = machine.serverSent(Self.ack(serverPort: 49154))
        #expect(machine.clientSent(Wire.bind([Wire.samr], callID: 2, alter: true)) == .forward)
        #expect(machine.serverSent(Self.ack(serverPort: nil, alter: true, callID: 2)) == .forward)
        #expect(machine.clientSent(Wire.bind([Wire.samr], callID: 4, alter: true)) == .forward)
        guard case .respond(let bytes) = machine.serverSent(Self.ack(serverPort: 49154, alter: true, callID: 4)) else {
            Issue.record("expected the rewritten alter_context_resp")
            return
        }
        guard case .alterContextResponse(let ack) = try #require(Wire.parse(bytes)).body else {
            Issue.record("expected an alter_context_resp")
            return
        }
        #expect(ack.secondaryAddress == Array("50001".utf8) + [0])
    }

    @Test("A PDU with an auth verifier passes unchanged and is counted")
    func authenticatedIsNeverTouched() {
        var machine = self.machine(gatewayPort: 50_000)
        _ = machine.clientSent(Wire.bind([Wire.samr], auth: Wire.ntlm(.privacy)))
        _ = machine.takeEvents()
        #expect(machine.serverSent(Self.ack(serverPort: 49154, auth: Wire.ntlm(.privacy))) == .forward)
        #expect(machine.takeEvents() == [.secondaryAddressKept(serverPort: "49154")])
        #expect(machine.isBound)
    }

    @Test("No gateway port (endpoint mapper, transparent, core) or the same port: forwarded as sent")
    func unchanged() {
        var machine = self.machine(gatewayPort: nil)
        _ = machine.clientSent(Wire.bind([Wire.samr]))
        #expect(machine.serverSent(Self.ack(serverPort: 49154)) == .forward)
        var same = self.machine(gatewayPort: 49154)
        _ = same.clientSent(Wire.bind([Wire.samr]))
        #expect(same.serverSent(Self.ack(serverPort: 49154)) == .forward)
    }
}

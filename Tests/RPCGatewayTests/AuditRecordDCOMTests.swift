import Foundation
import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// The `rpc.dcom.*` fields of activation, activation-reply, OXID-resolution and object-call lines.
@Suite("Audit records: DCOM")
struct AuditRecordDCOMTests {
    static let activator = DCOMInterface.remoteSCMActivator
    static let mmc20 = ClassCatalog.named("mmc20.application")!.classID
    static let ipid = DCEUUID("00014006-0530-0000-0333-997691ea98ab")!

    static func line(
        _ event: AuditRecord.Event,
        decision: PolicyDecision,
        opnum: UInt16 = 4,
        dcom: AuditRecord.DCOM
    ) throws
        -> [String: Any]
    {
        let record = AuditRecord(
            time: AuditTimestamp(millisecondsSinceEpoch: 1_714_566_896_789),
            route: "dc1",
            event: event,
            client: try SocketAddress(ipAddress: "10.1.2.3", port: 49_152),
            server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 135),
            listener: .epm,
            interface: Self.activator,
            opnum: opnum,
            authType: .ntlm,
            authLevel: .integrity,
            decision: decision,
            policy: "dc",
            dcom: dcom
        )
        let object = try JSONSerialization.jsonObject(with: Data(record.jsonLine.utf8))
        return try #require(object as? [String: Any])
    }

    @Test func readableActivationLine() throws {
        let fields = try Self.line(
            .activation,
            decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 0, profile: "block-remote-exec")),
            dcom: AuditRecord.DCOM(activation: .known(Self.mmc20))
        )
        #expect(fields["event.action"] as? String == "activation")
        #expect(fields["rpc.dcom.clsid"] as? String == "49b2791a-b1ae-4c90-9b8e-e860ba07f889")
        #expect(fields["rpc.dcom.class"] as? String == "mmc20.application")
        #expect(fields["rpc.dcom.sealed"] as? Bool == false)
        #expect(fields["rpc.interface"] as? String == "iremotescmactivator")
        #expect(fields["threat.technique.subtechnique.id"] as? [String] == ["T1021.003"])
        #expect(fields["rpc.dcom.ports"] == nil)
    }

    @Test func sealedActivationLine() throws {
        let fields = try Self.line(
            .activation,
            decision: PolicyDecision(action: .audit, origin: RuleOrigin(index: 0, profile: "block-remote-exec")),
            dcom: AuditRecord.DCOM(activation: .sealed)
        )
        #expect(fields["rpc.dcom.clsid"] as? String == "sealed")
        #expect(fields["rpc.dcom.sealed"] as? Bool == true)
        #expect(fields["rpc.dcom.class"] == nil)
    }

    @Test func activationReplyLine() throws {
        let fields = try Self.line(
            .activationReply,
            decision: PolicyDecision(action: .allow, origin: RuleOrigin(index: 1)),
            dcom: AuditRecord.DCOM(
                classID: ClassCatalog.named("wbemlevel1login")!.classID,
                oxid: 0x0537_7350_7f21_3667,
                ports: [49670],
                bindings: ["dc1[49670]", "10.99.0.2[49670]"],
                ipids: [Self.ipid]
            )
        )
        #expect(fields["event.action"] as? String == "activation_reply")
        #expect(fields["rpc.dcom.oxid"] as? String == "0x053773507f213667")
        #expect(fields["rpc.dcom.ports"] as? [Int] == [49670])
        #expect(fields["rpc.dcom.bindings"] as? [String] == ["dc1[49670]", "10.99.0.2[49670]"])
        #expect(fields["rpc.dcom.ipid"] as? [String] == ["00014006-0530-0000-0333-997691ea98ab"])
        #expect(fields["rpc.dcom.class"] as? String == "wbemlevel1login")
        #expect(fields["threat.framework"] == nil, "a reply is not what a profile refused")
    }

    @Test func objectCallLineCarriesTheIPID() throws {
        let fields = try Self.line(
            .call,
            decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 0, profile: "block-remote-exec")),
            opnum: 24,
            dcom: AuditRecord.DCOM(ipids: [Self.ipid])
        )
        #expect(fields["rpc.dcom.ipid"] as? [String] == ["00014006-0530-0000-0333-997691ea98ab"])
        #expect(fields["rpc.dcom.clsid"] == nil)
        #expect(fields["rpc.dcom.ports"] == nil)
    }
}

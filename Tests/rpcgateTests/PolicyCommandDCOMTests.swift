import Foundation
import NIOCore
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import Testing

@testable import rpcgate

/// `policy suggest` / `policy test` read DCOM lines: an activation is a call that carries its
/// class, replies are skipped, and the endpoint-mapper listener's DCOM lines are the policy's.
@Suite("Policy from evidence: DCOM lines")
struct PolicyCommandDCOMTests {
    static func line(_ event: AuditRecord.Event, dcom: AuditRecord.DCOM, action: PolicyAction = .allow) throws -> Data {
        Data(
            AuditRecord(
                time: AuditTimestamp(millisecondsSinceEpoch: 1_780_000_000_000),
                route: "dc1",
                event: event,
                client: try SocketAddress(ipAddress: "10.2.0.1", port: 50_000),
                server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 135),
                listener: .epm,
                interface: DCOMInterface.remoteSCMActivator,
                opnum: 4,
                authType: .ntlm,
                authLevel: .integrity,
                decision: PolicyDecision(action: action, origin: nil),
                policy: "learn",
                dcom: dcom
            ).jsonLine.utf8
        )
    }

    @Test func activationLinesAreCallsWithTheirClass() throws {
        let mmc20 = ClassCatalog.named("mmc20.application")!.classID
        let readable = try #require(
            AuditEntry(jsonLine: try Self.line(.activation, dcom: .init(activation: .known(mmc20))))
        )
        #expect(readable.event == .call)
        #expect(readable.opnum == 4)
        #expect(readable.activation == .known(mmc20))
        #expect(!readable.isEndpointMapperListener, "the policy decided it, not the listener")
        #expect(!readable.isAnnouncement)
        let sealed = try #require(AuditEntry(jsonLine: try Self.line(.activation, dcom: .init(activation: .sealed))))
        #expect(sealed.activation == .sealed)
        let reply = try #require(
            AuditEntry(jsonLine: try Self.line(.activationReply, dcom: .init(classID: mmc20, oxid: 1, ports: [49670])))
        )
        #expect(reply.isAnnouncement)

        // Replayed against block-remote-exec: the readable MMC20 activation would be denied, the
        // sealed one audited (allowed), the reply not replayed.
        let policy = Policy(
            name: "p",
            defaultAction: .allow,
            rules: BuiltInProfiles.blockRemoteExec.expand(at: 0)
        )
        var replay = PolicyReplay(policies: ["dc1": policy])
        for entry in [readable, sealed, reply] { replay.add(entry) }
        #expect(replay.replayed == 2)
        #expect(replay.denied == 1)
    }
}

/// `rpcgate explain --clsid`.
@Suite("explain: DCOM activations")
struct ExplainDCOMTests {
    @Test func clsidArgumentAndReport() throws {
        #expect(try Explain.activation("MMC20.Application") == .known(ClassCatalog.named("mmc20.application")!.classID))
        #expect(try Explain.activation("sealed") == .sealed)
        #expect(try Explain.activation(nil) == nil)
        #expect(throws: (any Error).self) { try Explain.activation("mmc21") }
        let settings = try ConfigurationLoader.parse(
            yaml: """
                routes:
                  - {name: dc1, listen: 127.0.0.1, epm_port: 10135, upstream: 127.0.0.1, ports: 50000-50009, policy: dc}
                policies:
                  dc:
                    default: deny
                    rules:
                      - profile: block-remote-exec
                      - action: allow
                        interfaces: [isystemactivator]
                """
        )
        let route = settings.routes[0]
        let query = PolicyQuery(
            interface: DCOMInterface.remoteSCMActivator,
            opnum: 4,
            client: IPAddress("10.1.1.1")!,
            activation: try Explain.activation("shellbrowserwindow")
        )
        let report = Explain.report(route.policy.explain(query), for: query, route: route)
        #expect(report.contains("activation of class shellbrowserwindow"))
        #expect(report.contains("decision: deny"))
        #expect(report.contains { $0.contains("the bind and other calls stay allowed") })
    }
}

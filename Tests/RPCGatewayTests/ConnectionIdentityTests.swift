import Foundation
import Logging
import NIOCore
import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

/// The identity of a connection: taken from the auth_value of its bind, alter_context and auth3
/// by the state machine, and written on every later audit line.
@Suite("Connection identity")
struct ConnectionIdentityTests {
    static func le16(_ value: Int) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF)] }
    static func le32(_ value: Int) -> [UInt8] { le16(value & 0xFFFF) + le16(value >> 16) }
    static func utf16(_ text: String) -> [UInt8] { text.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] } }

    /// An NTLM AUTHENTICATE (MS-NLMP 2.2.1.3) with Unicode names and a filler NT response.
    static func authenticate(user: String, domain: String, workstation: String) -> ByteBuffer {
        let payloads: [[UInt8]] = [
            [], [UInt8](repeating: 0x5A, count: 24), utf16(domain), utf16(user), utf16(workstation), [],
        ]
        var header: [UInt8] = Array("NTLMSSP".utf8)
        header += [0]
        header += le32(3)
        var body: [UInt8] = []
        var offset = 64
        for payload in payloads {
            header += le16(payload.count) + le16(payload.count) + le32(offset)
            body += payload
            offset += payload.count
        }
        header += le32(0x0000_0001)
        return ByteBuffer(bytes: header + body)
    }

    static let negotiate = ByteBuffer(
        bytes: Array("NTLMSSP".utf8) + [0] + le32(1) + le32(1) + [UInt8](repeating: 0, count: 16)
    )

    static func auth3(_ token: ByteBuffer) -> RawPDU {
        Wire.raw(
            PDU(
                header: PDUHeader(packetType: .auth3, callID: 2),
                body: .auth3(Auth3PDU()),
                authVerifier: AuthVerifier(authType: .ntlm, authLevel: .integrity, contextID: 0, value: token)
            )
        )
    }

    static let policy = Policy(name: "learn", defaultAction: .audit, rules: [])

    @Test func auth3NamesTheUserForLaterEvents() {
        var machine = ConnectionStateMachine.spliced(
            role: .mapped,
            policy: Self.policy,
            client: IPAddress("10.1.2.3")!,
            limits: WireLimits()
        )
        let negotiateVerifier = AuthVerifier(
            authType: .ntlm,
            authLevel: .integrity,
            contextID: 0,
            value: Self.negotiate
        )
        #expect(machine.clientSent(Wire.bind([Wire.samr], auth: negotiateVerifier)) == .forward)
        #expect(machine.identity == nil)
        #expect(machine.serverSent(Wire.bindAck(accepting: 1)) == .forward)
        #expect(
            machine.clientSent(Self.auth3(Self.authenticate(user: "alice", domain: "EXAMPLE", workstation: "WS1")))
                == .forward
        )
        #expect(machine.identity == .ntlm(NTLMIdentity(user: "alice", domain: "EXAMPLE", workstation: "WS1")))
        // A token that names nobody, or one that does not parse, keeps the identity.
        _ = machine.clientSent(Wire.bind([Wire.lsarpc], callID: 3, alter: true, auth: Wire.ntlm(.integrity)))
        #expect(machine.identity == .ntlm(NTLMIdentity(user: "alice", domain: "EXAMPLE", workstation: "WS1")))
    }

    @Test func malformedTokensAreForwardedAsBefore() {
        var machine = ConnectionStateMachine.spliced(
            role: .mapped,
            policy: Self.policy,
            client: IPAddress("10.1.2.3")!,
            limits: WireLimits()
        )
        var truncated = Self.authenticate(user: "alice", domain: "EXAMPLE", workstation: "WS1")
        truncated.moveWriterIndex(to: truncated.writerIndex - 4)
        #expect(machine.clientSent(Self.auth3(truncated)) == .forward)
        #expect(machine.identity == nil)
    }

    @Test func auditLinesCarryTheIdentity() async throws {
        let sink = GatedAuditSink(open: true)
        let audit = AuditLog(sink: sink, logger: Logger(label: "test"))
        let route = RouteRuntime(
            settings: RouteSettings(
                name: "dc1",
                listenAddress: "127.0.0.1",
                epmPort: 135,
                upstreamHost: "10.99.0.2",
                ports: 50000...50001,
                policy: Self.policy
            ),
            upstreamAddress: IPv4Address("10.99.0.2")!,
            metrics: GatewayMetrics().route("dc1"),
            logger: Logger(label: "test"),
            audit: audit,
            denials: RecentDenials()
        )
        let identity = AuthIdentity.kerberos(
            KerberosServiceIdentity(realm: "EXAMPLE.TEST", serviceName: ["host", "dc1.example.test"])
        )
        route.record(
            .callAudited(
                interface: Wire.samr,
                opnum: 5,
                decision: PolicyDecision(action: .audit, origin: nil),
                authLevel: .privacy,
                authType: .spnego
            ),
            connection: 1,
            client: try SocketAddress(ipAddress: "10.1.2.3", port: 50123),
            server: TCPEndpoint(address: IPv4Address("10.99.0.2")!, port: 49152),
            listener: .mapped,
            identity: identity
        )
        await audit.shutdown()
        let line = try #require(sink.lines.first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["rpc.auth.service_principal"] as? String == "host/dc1.example.test")
        #expect(object["rpc.auth.realm"] as? String == "EXAMPLE.TEST")
        // The status page counted it.
        let top = try #require(route.denials?.traffic.snapshot)
        #expect(top.interfaces.first?.key == Wire.samr && top.interfaces.first?.counts.seen == 1)
        #expect(top.sources.first?.key == "10.1.2.3")
    }
}

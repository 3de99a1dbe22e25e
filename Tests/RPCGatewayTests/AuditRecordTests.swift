import Foundation
import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

@Suite("Audit records (JSON lines)")
struct AuditRecordTests {
    static let samr = SyntaxID(uuid: DCEUUID("12345778-1234-abcd-ef00-0123456789ac")!, majorVersion: 1, minorVersion: 0)

    static func bind(
        route: String = "dc1",
        decision: PolicyDecision,
        client: SocketAddress? = nil
    ) throws -> AuditRecord {
        AuditRecord(
            time: AuditTimestamp(millisecondsSinceEpoch: 1_714_566_896_789),
            route: route,
            event: .bind,
            client: try client ?? SocketAddress(ipAddress: "10.1.2.3", port: 49_152),
            server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49_667),
            listener: .mapped,
            interface: Self.samr,
            authType: .ntlm,
            authLevel: .privacy,
            decision: decision,
            policy: "dc"
        )
    }

    @Test(
        "Timestamps are RFC 3339 UTC with milliseconds",
        arguments: [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_714_566_896_789, "2024-05-01T12:34:56.789Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (951_868_800_000, "2000-03-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] as [(Int64, String)]
    )
    func timestamps(milliseconds: Int64, expected: String) {
        #expect(AuditTimestamp(millisecondsSinceEpoch: milliseconds).rfc3339 == expected)
    }

    @Test("The clock reads the wall clock, not a monotonic one")
    func now() {
        let now = AuditTimestamp.now()
        // 2024-01-01 and 2100-01-01: catches a monotonic clock (seconds since boot) or a unit error.
        #expect(now.millisecondsSinceEpoch > 1_704_067_200_000)
        #expect(now.millisecondsSinceEpoch < 4_102_444_800_000)
    }

    @Test("A bind line has every ECS field, in order, with null for the default rule")
    func bindLine() throws {
        let record = try Self.bind(decision: PolicyDecision(action: .allow, origin: nil))
        #expect(
            record.jsonLine
                == #"{"@timestamp":"2024-05-01T12:34:56.789Z","event.kind":"event","event.category":["network"],"#
                + #""event.type":["allowed"],"event.action":"bind","event.outcome":"success","event.dataset":"rpcgate.audit","#
                + #""source.ip":"10.1.2.3","source.port":49152,"destination.ip":"10.99.0.2","destination.port":49667,"#
                + #""network.transport":"tcp","network.protocol":"dcerpc","#
                + #""rule.id":null,"rule.name":"default","rule.category":null,"rule.ruleset":"dc","#
                + #""rpc.route":"dc1","rpc.listener":"mapped","rpc.interface":"samr","#
                + #""rpc.interface_uuid":"12345778-1234-abcd-ef00-0123456789ac","rpc.interface_version":"1.0","#
                + #""rpc.auth_type":"ntlm","rpc.auth_level":"privacy","rpc.decision":"allow"}"#
        )
    }

    @Test("A call line has the opnum, the rule and the profile")
    func callLine() throws {
        var record = try Self.bind(
            decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 3, profile: "my-profile"))
        )
        record.event = .call
        record.opnum = 7
        record.interface = SyntaxID(
            uuid: DCEUUID("01234567-89ab-cdef-0123-456789abcdef")!,
            majorVersion: 2,
            minorVersion: 5
        )
        record.authType = AuthType(rawValue: 99)
        record.authLevel = .none
        record.listener = .epm
        #expect(
            record.jsonLine
                == #"{"@timestamp":"2024-05-01T12:34:56.789Z","event.kind":"event","event.category":["network"],"#
                + #""event.type":["denied"],"event.action":"call","event.outcome":"failure","event.dataset":"rpcgate.audit","#
                + #""source.ip":"10.1.2.3","source.port":49152,"destination.ip":"10.99.0.2","destination.port":49667,"#
                + #""network.transport":"tcp","network.protocol":"dcerpc","#
                + #""rule.id":3,"rule.name":"rule 3 (profile my-profile)","rule.category":"my-profile","rule.ruleset":"dc","#
                + #""rpc.route":"dc1","rpc.listener":"epm","rpc.interface":"unknown","#
                + #""rpc.interface_uuid":"01234567-89ab-cdef-0123-456789abcdef","rpc.interface_version":"2.5","rpc.opnum":7,"#
                + #""rpc.auth_type":"authn(99)","rpc.auth_level":"none","rpc.decision":"deny"}"#
        )
    }

    @Test("NTLM identities: user, domain, workstation; anonymous sessions have no user")
    func ntlmIdentity() throws {
        var record = try Self.bind(decision: PolicyDecision(action: .allow, origin: nil))
        record.identity = .ntlm(NTLMIdentity(user: "Administrator", domain: "EXAMPLE", workstation: "WS1"))
        #expect(
            record.jsonLine.hasSuffix(
                #""rpc.decision":"allow","rpc.auth.identity":"ntlm","user.name":"Administrator","user.domain":"EXAMPLE","#
                    + #""rpc.auth.workstation":"WS1","rpc.auth.anonymous":false}"#
            )
        )
        record.identity = .ntlm(NTLMIdentity(user: "", domain: "", workstation: "", isAnonymous: true))
        #expect(
            record.jsonLine.hasSuffix(
                #""rpc.auth.identity":"ntlm","user.name":null,"user.domain":null,"rpc.auth.workstation":null,"rpc.auth.anonymous":true}"#
            )
        )
    }

    @Test("Kerberos identities: the ticket's service principal and realm, never a user")
    func kerberosIdentity() throws {
        var record = try Self.bind(decision: PolicyDecision(action: .allow, origin: nil))
        record.identity = .kerberos(
            KerberosServiceIdentity(realm: "EXAMPLE.TEST", serviceName: ["host", "dc1.example.test"])
        )
        #expect(
            record.jsonLine.hasSuffix(
                #""rpc.auth.identity":"kerberos_ticket","rpc.auth.service_principal":"host/dc1.example.test","#
                    + #""rpc.auth.realm":"EXAMPLE.TEST"}"#
            )
        )
        #expect(!record.jsonLine.contains("user.name"))
    }

    @Test(
        "Lines a built-in profile decided carry ATT&CK techniques",
        arguments: [
            ("block-dcsync", "drsuapi", UInt16(3) as UInt16?, ["T1003"], ["T1003.006"]),
            ("block-coercion", "efsrpc", 0, ["T1187"], []),
            ("block-coercion", "spoolss", 65, ["T1187"], []),
            ("block-remote-exec", "svcctl", 12, ["T1569", "T1543"], ["T1569.002", "T1543.003"]),
            ("block-remote-exec", "atsvc", nil, ["T1053"], ["T1053.002"]),
            ("block-remote-exec", "taskscheduler", 1, ["T1053"], ["T1053.005"]),
        ] as [(String, String, UInt16?, [String], [String])]
    )
    func attackTechniques(
        profile: String,
        interface: String,
        opnum: UInt16?,
        ids: [String],
        subtechniques: [String]
    ) throws {
        var record = try Self.bind(
            decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 0, profile: profile))
        )
        record.interface = try #require(InterfaceCatalog.named(interface)).syntax
        record.opnum = opnum
        record.event = opnum == nil ? .bind : .call
        let object = try #require(try JSONSerialization.jsonObject(with: Data(record.jsonLine.utf8)) as? [String: Any])
        #expect(object["threat.framework"] as? String == "MITRE ATT&CK")
        #expect(object["threat.technique.id"] as? [String] == ids)
        #expect(object["threat.technique.subtechnique.id"] as? [String] == subtechniques)
        #expect((object["threat.technique.name"] as? [String])?.count == max(ids.count, subtechniques.count))
    }

    @Test("No ATT&CK fields when a user rule or the default decided")
    func noTechniquesWithoutProfile() throws {
        var record = try Self.bind(decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 2)))
        record.interface = try #require(InterfaceCatalog.named("drsuapi")).syntax
        record.opnum = 3
        #expect(!record.jsonLine.contains("threat."))
        record.decision = PolicyDecision(action: .deny, origin: nil)
        #expect(!record.jsonLine.contains("threat."))
    }

    @Test("An IPv6 client, and a connection without a peer address")
    func clients() throws {
        let v6 = try Self.bind(
            decision: PolicyDecision(action: .audit, origin: nil),
            client: SocketAddress(ipAddress: "2001:db8::1", port: 50_000)
        )
        #expect(v6.jsonLine.contains(#""source.ip":"2001:db8::1","source.port":50000,"#))
        #expect(v6.jsonLine.contains(#""rpc.decision":"audit""#))
        #expect(v6.jsonLine.contains(#""event.outcome":"success""#))
        var none = v6
        none.client = nil
        #expect(none.jsonLine.contains(#""source.ip":null,"source.port":null,"#))
    }

    @Test("Strings are escaped: quotes, backslashes, control characters; UTF-8 passes through")
    func escaping() throws {
        let hostile = "a\"b\\c\nd\re\tf\u{08}g\u{0C}h\u{01}i\u{1F}j\u{7F}k é 🎉 \u{2028}"
        var buffer = ByteBuffer()
        buffer.writeJSONString(hostile)
        #expect(
            String(buffer: buffer)
                == "\"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u001fj\u{7F}k é 🎉 \u{2028}\""
        )

        // The whole line stays one line of valid JSON and round-trips the value.
        var record = try Self.bind(
            route: hostile,
            decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 0, profile: "p\"\n"))
        )
        record.policy = "</script>\u{00}"
        var line = ByteBuffer()
        record.writeJSONLine(into: &line)
        let bytes = Array(line.readableBytesView)
        #expect(bytes.last == UInt8(ascii: "\n"))
        #expect(bytes.dropLast().contains(UInt8(ascii: "\n")) == false)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(object["rpc.route"] as? String == hostile)
        #expect(object["rule.category"] as? String == "p\"\n")
        #expect(object["rule.ruleset"] as? String == "</script>\u{00}")
        #expect(object["rule.id"] as? Int == 0)
        #expect(object["source.port"] as? Int == 49_152)
        #expect(object["rpc.opnum"] == nil)

        // Names from the wire are escaped too.
        record.identity = .ntlm(NTLMIdentity(user: hostile, domain: "\"}", workstation: "\u{0}"))
        let identityLine = record.jsonLine
        #expect(!identityLine.contains("\n"))
        let decoded = try #require(try JSONSerialization.jsonObject(with: Data(identityLine.utf8)) as? [String: Any])
        #expect(decoded["user.name"] as? String == hostile)
        #expect(decoded["user.domain"] as? String == "\"}")
    }
}

extension AuditRecordTests {
    @Test("An unknown server port is null, not 0")
    func unknownServerPort() throws {
        var record = try Self.bind(decision: PolicyDecision(action: .allow, origin: nil))
        record.server = TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 0)
        #expect(record.jsonLine.contains(#""destination.ip":"10.99.0.2","destination.port":null,"#))
    }
}

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

    @Test("A bind line has every field, in order, with null for the default rule")
    func bindLine() throws {
        let record = try Self.bind(decision: PolicyDecision(action: .allow, origin: nil))
        #expect(
            record.jsonLine
                == #"{"time":"2024-05-01T12:34:56.789Z","route":"dc1","event":"bind","client":"10.1.2.3","client_port":49152,"#
                + #""server":"10.99.0.2:49667","listener":"mapped","interface":"samr","#
                + #""uuid":"12345778-1234-abcd-ef00-0123456789ac","version":"1.0","auth_type":"ntlm","auth_level":"privacy","#
                + #""decision":"allow","rule":null,"profile":null,"policy":"dc"}"#
        )
    }

    @Test("A call line has the opnum, the rule index and the profile")
    func callLine() throws {
        var record = try Self.bind(
            decision: PolicyDecision(action: .deny, origin: RuleOrigin(index: 3, profile: "block-dcsync"))
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
                == #"{"time":"2024-05-01T12:34:56.789Z","route":"dc1","event":"call","client":"10.1.2.3","client_port":49152,"#
                + #""server":"10.99.0.2:49667","listener":"epm","interface":"unknown","#
                + #""uuid":"01234567-89ab-cdef-0123-456789abcdef","version":"2.5","opnum":7,"auth_type":"authn(99)","#
                + #""auth_level":"none","decision":"deny","rule":3,"profile":"block-dcsync","policy":"dc"}"#
        )
    }

    @Test("An IPv6 client, and a connection without a peer address")
    func clients() throws {
        let v6 = try Self.bind(
            decision: PolicyDecision(action: .audit, origin: nil),
            client: SocketAddress(ipAddress: "2001:db8::1", port: 50_000)
        )
        #expect(v6.jsonLine.contains(#""client":"2001:db8::1","client_port":50000,"#))
        #expect(v6.jsonLine.contains(#""decision":"audit""#))
        var none = v6
        none.client = nil
        #expect(none.jsonLine.contains(#""client":null,"client_port":null,"#))
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
        #expect(object["route"] as? String == hostile)
        #expect(object["profile"] as? String == "p\"\n")
        #expect(object["policy"] as? String == "</script>\u{00}")
        #expect(object["rule"] as? Int == 0)
        #expect(object["client_port"] as? Int == 49_152)
        #expect(object["opnum"] == nil)
    }
}

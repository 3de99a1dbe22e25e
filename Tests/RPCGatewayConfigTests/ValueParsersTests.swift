import RPCGatewayConfig
import RPCPolicy
import Testing

@Suite("Value parsers")
struct ValueParsersTests {
    @Test(
        "Durations",
        arguments: [
            ("500ms", Duration.milliseconds(500)), ("30s", .seconds(30)), ("10m", .seconds(600)),
            ("1h", .seconds(3600)), ("90", .seconds(90)), ("1m30s", .seconds(90)), (" 15m ", .seconds(900)),
            ("8760h", .seconds(8760 * 3600)),
        ]
    )
    func durations(text: String, expected: Duration) throws {
        #expect(try ValueParsers.duration(text).get() == expected)
    }

    @Test("Bad durations")
    func badDurations() {
        for text in ["", "s", "1.5s", "10 m", "10d", "m10", "-1s", "0x10"] {
            #expect(throws: ValueParsers.DurationFailure.malformed, "\(text)") { try ValueParsers.duration(text).get() }
        }
        #expect(throws: ValueParsers.DurationFailure.notPositive) { try ValueParsers.duration("0").get() }
        #expect(throws: ValueParsers.DurationFailure.notPositive) { try ValueParsers.duration("0ms").get() }
        #expect(throws: ValueParsers.DurationFailure.tooLong) { try ValueParsers.duration("8761h").get() }
        #expect(throws: ValueParsers.DurationFailure.tooLong) { try ValueParsers.duration("999999999999999999h").get() }
        #expect(throws: ValueParsers.DurationFailure.tooLong) { try ValueParsers.duration("999999999999999999").get() }
    }

    @Test("Port ranges")
    func portRanges() {
        #expect(ValueParsers.portRange("50000-50099") == 50000...50099)
        #expect(ValueParsers.portRange("1-65535") == 1...65535)
        #expect(ValueParsers.portRange("5000 - 5001") == 5000...5001)
        #expect(ValueParsers.portRange("7-7") == 7...7)
        for text in ["50100-50000", "0-10", "1-65536", "50000", "a-b", "1-2-3", "-5", "+1-2"] {
            #expect(ValueParsers.portRange(text) == nil, "\(text)")
        }
    }

    @Test("Host and port")
    func hostAndPort() throws {
        #expect(try ValueParsers.hostAndPort("127.0.0.1:9135").get() == ("127.0.0.1", 9135))
        #expect(try ValueParsers.hostAndPort("[::1]:9135").get() == ("::1", 9135))
        #expect(try ValueParsers.hostAndPort("gateway.corp.example:80").get() == ("gateway.corp.example", 80))
        #expect(throws: ValueParsers.HostPortFailure.missingPort) { try ValueParsers.hostAndPort("127.0.0.1").get() }
        #expect(throws: ValueParsers.HostPortFailure.missingPort) { try ValueParsers.hostAndPort("[::1]").get() }
        #expect(throws: ValueParsers.HostPortFailure.unbracketedIPv6) { try ValueParsers.hostAndPort("::1:80").get() }
        #expect(throws: ValueParsers.HostPortFailure.missingHost) { try ValueParsers.hostAndPort(":80").get() }
        #expect(throws: ValueParsers.HostPortFailure.badPort("0")) { try ValueParsers.hostAndPort("h:0").get() }
        #expect(throws: ValueParsers.HostPortFailure.badHost("10.0.0")) {
            try ValueParsers.hostAndPort("10.0.0:80").get()
        }
        #expect(throws: ValueParsers.HostPortFailure.badHost("1.2.3.4")) {
            try ValueParsers.hostAndPort("[1.2.3.4]:80").get()
        }
    }

    @Test("Host names")
    func hostNames() {
        for name in ["dc1", "dc1.corp.example", "dc1.corp.example.", "a-b_c.example"] {
            #expect(ValueParsers.isHostName(name), "\(name)")
        }
        for name in [
            "", "10", "10.0.0", "-dc.example", "dc..example", "dc example", "dc1:135",
            String(repeating: "a", count: 64),
        ] {
            #expect(!ValueParsers.isHostName(name), "\(name)")
        }
    }
}

@Suite("IPv6 text in messages")
struct AddressTextTests {
    @Test("Zero runs are compressed as in RFC 5952")
    func compression() throws {
        let cases = [
            ("fd00::", "fd00::"), ("::1", "::1"), ("::", "::"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"), ("10.1.2.3", "10.1.2.3"),
        ]
        for (input, expected) in cases {
            #expect(ValueParsers.text(of: try #require(IPAddress(input))) == expected)
        }
    }
}

import Foundation
import Logging
import NIOCore
import NIOPosix
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// `/readyz`, the status page and `/status.json`, and bearer-token protection, over real HTTP.
@Suite("Admin listener: readiness, status, token", .timeLimit(.minutes(1)))
struct AdminOperationsTests {
    static func start(
        readiness: ReadinessReport? = nil,
        status: GatewayStatus? = nil,
        token: String? = nil
    ) async throws -> AdminServer {
        var content = AdminContent(metrics: { "rpcgate_up 1\n" })
        if let readiness {
            content.readiness = { readiness }
        }
        if let status {
            content.status = { status }
        }
        return try await AdminServer.start(
            host: "127.0.0.1",
            port: 0,
            group: MultiThreadedEventLoopGroup.singleton,
            content: content,
            token: token.flatMap(BearerToken.init),
            logger: Logger(label: "test.admin")
        )
    }

    static func get(_ server: AdminServer, _ path: String, headers: [String] = []) async throws -> RawResponse {
        let extra = headers.map { $0 + "\r\n" }.joined()
        let responses = try await exchange(
            server.localAddress,
            "GET \(path) HTTP/1.1\r\nHost: a\r\n\(extra)Connection: close\r\n\r\n"
        )
        return try #require(responses.first)
    }

    @Test("/readyz: 200 when every route is ready, 503 naming the failing ones otherwise (text and JSON)")
    func readyz() async throws {
        let ready = try await Self.start(readiness: StatusFixtures.readiness(failing: []))
        let ok = try await Self.get(ready, "/readyz")
        #expect(ok.status == "HTTP/1.1 200 OK")
        #expect(ok.body == "ready\n")
        try await ready.close()

        let failing = try await Self.start(readiness: StatusFixtures.readiness(failing: ["dc2"]))
        let text = try await Self.get(failing, "/readyz")
        #expect(text.status == "HTTP/1.1 503 Service Unavailable")
        #expect(text.body.hasPrefix("not ready\nroute dc2: upstream 10.0.0.3:135 "))
        #expect(!text.body.contains("route dc1"))
        let json = try await Self.get(failing, "/readyz", headers: ["Accept: application/json"])
        #expect(json.status == "HTTP/1.1 503 Service Unavailable")
        #expect(json.headers["content-type"] == "application/json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.body.utf8)) as? [String: Any])
        #expect(object["ready"] as? Bool == false)
        #expect(object["failing_routes"] as? [String] == ["dc2"])
        try await failing.close()

        // Without a readiness source the process being up is enough.
        let plain = try await Self.start()
        #expect(try await Self.get(plain, "/readyz").body == "ready\n")
        #expect(try await Self.get(plain, "/").status == "HTTP/1.1 404 Not Found")
        #expect(try await Self.get(plain, "/status.json").status == "HTTP/1.1 404 Not Found")
        try await plain.close()
    }

    @Test("/ is HTML with a strict CSP and /status.json parses as JSON")
    func statusPaths() async throws {
        let server = try await Self.start(
            readiness: StatusFixtures.readiness(failing: []),
            status: StatusFixtures.status()
        )
        let page = try await Self.get(server, "/")
        #expect(page.status == "HTTP/1.1 200 OK")
        #expect(page.headers["content-type"] == "text/html; charset=utf-8")
        #expect(page.headers["content-security-policy"]?.hasPrefix("default-src 'none'") == true)
        #expect(page.headers["cache-control"] == "no-store")
        #expect(page.body.hasPrefix("<!DOCTYPE html>"))
        #expect(page.body.contains("<td class=\"mono num gateway-port\">50003</td>"))

        let json = try await Self.get(server, "/status.json?pretty=0")
        #expect(json.headers["content-type"] == "application/json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.body.utf8)) as? [String: Any])
        let routes = try #require(object["routes"] as? [[String: Any]])
        #expect(routes.map { $0["name"] as? String } == ["dc1", "dc2"])
        let mappings = try #require(routes.first?["mappings"] as? [[String: Any]])
        #expect(mappings.first?["gateway_port"] as? Int == 50003)
        #expect(mappings.first?["server"] as? String == "10.0.0.2:49667")
        let denials = try #require(object["denials"] as? [[String: Any]])
        #expect(denials.first?["interface"] as? String == "wkssvc")
        #expect(denials.first?["rule"] is NSNull)
        #expect(denials.last?["opnum"] as? Int == 3)
        #expect(denials.last?["profile"] as? String == "block-dcsync")
        #expect(try await Self.get(server, "/status.json").status == "HTTP/1.1 200 OK")
        try await server.close()
    }

    @Test("a token protects every path but /healthz; 401 carries WWW-Authenticate; rotation applies at once")
    func token() async throws {
        let server = try await Self.start(
            readiness: StatusFixtures.readiness(failing: []),
            status: StatusFixtures.status(),
            token: "s3cret-Token_1"
        )
        #expect(try await Self.get(server, "/healthz").status == "HTTP/1.1 200 OK")
        for path in ["/metrics", "/readyz", "/", "/status.json", "/nope"] {
            let denied = try await Self.get(server, path)
            #expect(denied.status == "HTTP/1.1 401 Unauthorized", "\(path)")
            #expect(denied.headers["www-authenticate"] == "Bearer realm=\"rpcgate admin\"", "\(path)")
            #expect(!denied.body.contains("rpcgate_up"))
            let wrong = try await Self.get(server, path, headers: ["Authorization: Bearer s3cret-Token_2"])
            #expect(wrong.status == "HTTP/1.1 401 Unauthorized", "\(path)")
        }
        #expect(
            try await Self.get(server, "/metrics", headers: ["Authorization: Bearer s3cret-Token_1"]).body
                == "rpcgate_up 1\n"
        )
        #expect(
            try await Self.get(server, "/", headers: ["authorization: bearer  s3cret-Token_1 "]).status
                == "HTTP/1.1 200 OK"
        )
        #expect(
            try await Self.get(server, "/nope", headers: ["Authorization: Bearer s3cret-Token_1"]).status
                == "HTTP/1.1 404 Not Found"
        )
        #expect(
            try await Self.get(server, "/metrics", headers: ["Authorization: Basic czNjcmV0"]).status
                == "HTTP/1.1 401 Unauthorized"
        )

        server.setToken(BearerToken("rotated"))
        #expect(
            try await Self.get(server, "/metrics", headers: ["Authorization: Bearer s3cret-Token_1"]).status
                == "HTTP/1.1 401 Unauthorized"
        )
        #expect(
            try await Self.get(server, "/metrics", headers: ["Authorization: Bearer rotated"]).status
                == "HTTP/1.1 200 OK"
        )
        server.setToken(nil)
        #expect(try await Self.get(server, "/metrics").status == "HTTP/1.1 200 OK")
        try await server.close()
    }

    @Test("pipelined requests across an asynchronous status response keep their order")
    func pipelinedStatus() async throws {
        let server = try await Self.start(status: StatusFixtures.status())
        let responses = try await exchange(
            server.localAddress,
            "GET /status.json HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                + "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        #expect(responses.map(\.status) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
        #expect(
            responses.map { $0.headers["content-type"] ?? "" } == [
                "application/json", "text/plain; charset=utf-8", "text/html; charset=utf-8",
            ]
        )
        try await server.close()
    }
}

@Suite("Bearer token")
struct BearerTokenTests {
    @Test("scheme case-insensitive, surrounding blanks allowed, anything else refused")
    func authorizes() throws {
        let token = try #require(BearerToken("abc.DEF-123"))
        #expect(token.authorizes(authorizationHeader: "Bearer abc.DEF-123"))
        #expect(token.authorizes(authorizationHeader: "bearer abc.DEF-123"))
        #expect(token.authorizes(authorizationHeader: "BEARER \tabc.DEF-123 "))
        #expect(!token.authorizes(authorizationHeader: nil))
        #expect(!token.authorizes(authorizationHeader: ""))
        #expect(!token.authorizes(authorizationHeader: "Bearer"))
        #expect(!token.authorizes(authorizationHeader: "Bearer "))
        #expect(!token.authorizes(authorizationHeader: "Bearer abc.def-123"))
        #expect(!token.authorizes(authorizationHeader: "Bearer abc.DEF-1234"))
        #expect(!token.authorizes(authorizationHeader: "Bearer abc.DEF-12"))
        #expect(!token.authorizes(authorizationHeader: "Basic abc.DEF-123"))
        #expect(!token.authorizes(authorizationHeader: "Bearerabc.DEF-123"))
        #expect(BearerToken("") == nil)
    }

    @Test("constant-time comparison is plain equality; the secret never shows in descriptions")
    func comparisonAndRedaction() throws {
        #expect(BearerToken.constantTimeEquals([], []))
        #expect(BearerToken.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!BearerToken.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!BearerToken.constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(!BearerToken.constantTimeEquals([], [0]))
        let token = try #require(BearerToken("top-secret"))
        #expect("\(token)" == "<redacted>")
        #expect(String(reflecting: token) == "BearerToken(<redacted>)")
        let admin = AdminSettings(host: "127.0.0.1", port: 9135, token: token, tokenFile: "/etc/rpcgate/admin.token")
        #expect(!"\(admin)".contains("top-secret"))
    }
}

@Suite("Readiness")
struct ReadinessTests {
    static let now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    static func probe(successAgo: Int64?, error: String? = nil, failures: Int = 0) -> UpstreamProbeState {
        var state = UpstreamProbeState()
        if let ago = successAgo {
            state.succeeded(at: Self.now - .seconds(ago), wallClock: AuditTimestamp(millisecondsSinceEpoch: 0))
        }
        for _ in 0..<failures {
            state.failed(at: Self.now, error: error ?? "Connection refused")
        }
        return state
    }

    @Test("ready while the last success is younger than max_age; never reached is not ready")
    func evaluate() {
        let report = ReadinessReport.evaluate(
            routes: [
                ("fresh", "10.0.0.1:135", Self.probe(successAgo: 5)),
                ("edge", "10.0.0.2:135", Self.probe(successAgo: 29)),
                ("stale", "10.0.0.3:135", Self.probe(successAgo: 30, failures: 2)),
                ("never", "10.0.0.4:135", Self.probe(successAgo: nil, error: "timed out after 2 s", failures: 1)),
            ],
            draining: false,
            now: Self.now,
            maximumAge: .seconds(30)
        )
        #expect(report.routes.map(\.ready) == [true, true, false, false])
        #expect(!report.isReady)
        #expect(report.failingRoutes.map(\.name) == ["stale", "never"])
        #expect(
            report.text
                == "not ready\nroute stale: upstream 10.0.0.3:135 last reached 30 s ago (Connection refused)\n"
                + "route never: upstream 10.0.0.4:135 not reached yet (timed out after 2 s)\n"
        )
        #expect(report.routes[2].consecutiveFailures == 2)
    }

    @Test("a success clears the error; draining is never ready")
    func successAndDraining() {
        var state = Self.probe(successAgo: nil, failures: 3)
        state.succeeded(at: Self.now, wallClock: AuditTimestamp(millisecondsSinceEpoch: 0))
        #expect(state.lastError == nil && state.consecutiveFailures == 0 && !state.inProgress)
        let routes: [(name: String, upstream: String, probe: UpstreamProbeState?)] = [
            (name: "dc1", upstream: "10.0.0.1:135", probe: state),
            (name: "transparent", upstream: "-", probe: nil),
        ]
        let ready = ReadinessReport.evaluate(routes: routes, draining: false, now: Self.now, maximumAge: .seconds(30))
        #expect(ready.isReady && ready.text == "ready\n")
        #expect(ready.routes.map(\.probed) == [true, false], "a transparent route is not probed and counts as ready")
        let draining = ReadinessReport.evaluate(routes: routes, draining: true, now: Self.now, maximumAge: .seconds(30))
        #expect(!draining.isReady)
        #expect(draining.text == "not ready\ndraining: the gateway is shutting down\n")
        #expect(ReadinessReport.evaluate(routes: [], draining: false, now: Self.now, maximumAge: .seconds(30)).isReady)
    }

    @Test("durations read short")
    func durations() {
        #expect(DurationText.short(.milliseconds(850)) == "850 ms")
        #expect(DurationText.short(.seconds(42)) == "42 s")
        #expect(DurationText.short(.seconds(185)) == "3 m 05 s")
        #expect(DurationText.short(.seconds(7620)) == "2 h 07 m")
        #expect(DurationText.short(.seconds(273_600)) == "3 d 04 h")
        #expect(DurationText.short(.seconds(-1)) == "0 s")
    }
}

@Suite("Upstream probe", .timeLimit(.minutes(1)))
struct UpstreamProbeTests {
    @Test("a listening port is reached; a closed one fails with a short reason")
    func probe() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let listener = try await ServerBootstrap(group: group)
            .childChannelInitializer { $0.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        let endpoint = TCPEndpoint(address: IPv4Address("127.0.0.1")!, port: UInt16(port))
        try await UpstreamProbe.connect(to: endpoint, timeout: .seconds(2), on: group.next()).get()
        try await listener.close()

        do {
            try await UpstreamProbe.connect(to: endpoint, timeout: .seconds(2), on: group.next()).get()
            Issue.record("expected the probe of a closed port to fail")
        } catch {
            #expect(UpstreamProbe.describe(error) == "Connection refused")
        }
        #expect(UpstreamProbe.describe(ChannelError.connectTimeout(.seconds(2))) == "timed out after 2 s")
        #expect("\(ProbeTarget(upstream: endpoint))" == "127.0.0.1:\(port)")
        #expect(
            "\(ProbeTarget(host: "10.97.0.2", port: 8443, what: "core gateway dc-core", peer: "dc-core"))"
                == "core dc-core 10.97.0.2:8443"
        )
    }
}

@Suite("Recent denials")
struct RecentDenialsTests {
    @Test("the ring buffer keeps the last N in order and counts everything")
    func ringBuffer() {
        var ring = RingBuffer<Int>(capacity: 3)
        #expect(ring.elements.isEmpty)
        ring.append(1)
        ring.append(2)
        #expect(ring.elements == [1, 2])
        for value in 3...7 { ring.append(value) }
        #expect(ring.elements == [5, 6, 7])
        #expect(ring.count == 3 && ring.totalAppended == 7)
        var one = RingBuffer<Int>(capacity: 0)
        one.append(1)
        one.append(2)
        #expect(one.elements == [2])
    }

    @Test("refusals are listed newest first, bounded")
    func newestFirst() {
        let denials = RecentDenials(capacity: 2)
        for opnum in UInt16(1)...3 {
            denials.record(StatusFixtures.denial(opnum: opnum))
        }
        let snapshot = denials.snapshot
        #expect(snapshot.denials.map(\.opnum) == [3, 2])
        #expect(snapshot.total == 3)
    }
}

@Suite("JSON values")
struct JSONValueTests {
    @Test("compact output, ordered keys, escaped strings, nulls")
    func text() {
        let value = JSONValue.object([
            ("b", .int(-3)),
            ("a", .array([.bool(true), .bool(false), .null, .string("q\"\\\n\u{1}")])),
            ("c", .string(orNull: nil)),
            ("d", .int(orNull: UInt16(7))),
            ("e", .object([])),
        ])
        #expect(value.text == #"{"b":-3,"a":[true,false,null,"q\"\\\n\u0001"],"c":null,"d":7,"e":{}}"#)
        #expect(value == value)
        #expect(JSONValue.object([("a", .null)]) != JSONValue.object([("b", .null)]))
    }
}

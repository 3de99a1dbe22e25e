import Logging
import NIOCore
import NIOPosix
import RPCGateway
import Testing

@Suite("AdminServer", .timeLimit(.minutes(1)))
struct AdminServerTests {
    static let metricsBody =
        "# TYPE rpcgate_connections_total counter\nrpcgate_connections_total{route=\"dc1\",listener=\"epm\"} 3\n"

    static func start(port: Int = 0) async throws -> AdminServer {
        try await AdminServer.start(
            host: "127.0.0.1",
            port: port,
            group: MultiThreadedEventLoopGroup.singleton,
            metrics: { Self.metricsBody },
            logger: Logger(label: "test.admin")
        )
    }

    @Test("GET /metrics and GET /healthz")
    func endpoints() async throws {
        let server = try await Self.start()
        #expect(server.localAddress.port != 0)

        let metrics = try #require(
            try await exchange(server.localAddress, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .first
        )
        #expect(metrics.status == "HTTP/1.1 200 OK")
        #expect(metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(metrics.headers["content-length"] == String(Self.metricsBody.utf8.count))
        #expect(metrics.headers["connection"] == "close")
        #expect(metrics.body == Self.metricsBody)

        let health = try #require(
            try await exchange(server.localAddress, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .first
        )
        #expect(health.status == "HTTP/1.1 200 OK")
        #expect(health.body == "ok\n")

        // A query string does not change the resource.
        let query = try await exchange(server.localAddress, "GET /healthz?verbose=1 HTTP/1.0\r\n\r\n")
        #expect(query.map(\.status) == ["HTTP/1.0 200 OK"])
        try await server.close()
    }

    @Test("unknown paths get 404, other methods 405")
    func errors() async throws {
        let server = try await Self.start()
        let address = server.localAddress

        let notFound = try await exchange(address, "GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        #expect(notFound.map(\.status) == ["HTTP/1.1 404 Not Found"])

        let post = try await exchange(
            address,
            "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        )
        #expect(post.map(\.status) == ["HTTP/1.1 405 Method Not Allowed"])
        #expect(post.first?.headers["allow"] == "GET")

        // A response to HEAD has headers only (NIO's encoder drops the body).
        let head = try await exchangeRaw(address, "HEAD /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        #expect(head.hasSuffix("\r\n\r\n"))

        let postUnknown = try await exchange(address, "DELETE /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        #expect(postUnknown.map(\.status) == ["HTTP/1.1 404 Not Found"])

        // Bounded request size: a declared body over the limit is refused and the connection closed.
        let large = try await exchange(address, "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        #expect(large.map(\.status) == ["HTTP/1.1 413 Payload Too Large"])
        #expect(large.first?.headers["connection"] == "close")

        // Malformed request: NIO's error handler answers 400 and closes.
        let garbage = try await exchange(address, "\u{1}\u{2} nonsense\r\n\r\n")
        #expect(garbage.map(\.status) == ["HTTP/1.1 400 Bad Request"])
        try await server.close()
    }

    @Test("keep-alive: pipelined requests on one connection, closed after `Connection: close`")
    func keepAlive() async throws {
        let server = try await Self.start()
        let responses = try await exchange(
            server.localAddress,
            "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                + "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
                + "GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"
                + "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        #expect(
            responses.map(\.status) == [
                "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK",
            ]
        )
        #expect(responses.map(\.headers["connection"]) == [nil, nil, nil, "close"])
        #expect(responses.map(\.body) == ["ok\n", Self.metricsBody, "not found\n", "ok\n"])

        // HTTP/1.0 stays open only when asked to.
        let http10 = try await exchange(
            server.localAddress,
            "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n"
        )
        #expect(http10.map(\.status) == ["HTTP/1.0 200 OK", "HTTP/1.0 200 OK"])
        #expect(http10.map(\.headers["connection"]) == ["keep-alive", nil])
        try await server.close()
    }

    @Test("close() also closes idle keep-alive connections")
    func closeClosesConnections() async throws {
        let server = try await Self.start()
        let client = try await connect(server.localAddress)
        try await client.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"))
            var received: [UInt8] = []
            var iterator = inbound.makeAsyncIterator()
            while parseResponses(received).isEmpty, let chunk = try await iterator.next() {
                received += chunk.readableBytesView
            }
            #expect(parseResponses(received).map(\.body) == ["ok\n"])

            try await server.close()
            while let chunk = try await iterator.next() {
                received += chunk.readableBytesView
            }
            #expect(parseResponses(received).count == 1)
        }
    }

    @Test("a port in use is reported with its address")
    func portInUse() async throws {
        let first = try await Self.start()
        let port = try #require(first.localAddress.port)
        await #expect {
            _ = try await Self.start(port: port)
        } throws: { error in
            guard let error = error as? AdminServerError else { return false }
            return error.kind == .addressInUse && error.port == port
                && "\(error)" == "admin listener: 127.0.0.1:\(port) is already in use"
        }
        try await first.close()
        // Closing twice is harmless.
        try await first.close()
    }

    @Test("a bad host is reported with its address")
    func badHost() async throws {
        await #expect {
            _ = try await AdminServer.start(
                host: "256.1.1.1",
                port: 9100,
                group: MultiThreadedEventLoopGroup.singleton,
                metrics: { "" },
                logger: Logger(label: "test.admin")
            )
        } throws: { error in
            guard let error = error as? AdminServerError else { return false }
            return error.kind == .bindFailed && "\(error)".hasPrefix("admin listener: cannot bind 256.1.1.1:9100: ")
        }
    }
}

// MARK: - A raw HTTP/1 client

func connect(_ address: SocketAddress) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(to: address) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
}

/// Sends `request` verbatim, reads until the server closes, and parses the responses.
func exchange(_ address: SocketAddress, _ request: String) async throws -> [RawResponse] {
    parseResponses(Array(try await exchangeRaw(address, request).utf8))
}

/// Sends `request` verbatim and returns everything the server sent until it closed.
func exchangeRaw(_ address: SocketAddress, _ request: String) async throws -> String {
    let channel = try await connect(address)
    let bytes = try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: request))
        var received: [UInt8] = []
        for try await chunk in inbound {
            received += chunk.readableBytesView
        }
        return received
    }
    return String(decoding: bytes, as: UTF8.self)
}

struct RawResponse {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    var status: String
    /// Header names lowercased.
    var headers: [String: String]
    var body: String
}

/// Splits complete responses (framed by `content-length`) off `bytes`; ignores a trailing partial one.
func parseResponses(_ bytes: [UInt8]) -> [RawResponse] {
    var responses: [RawResponse] = []
    var rest = bytes[...]
    let separator: [UInt8] = Array("\r\n\r\n".utf8)
    while let headEnd = rest.indices.first(where: { rest[$0...].starts(with: separator) }) {
        let lines = String(decoding: rest[..<headEnd], as: UTF8.self).split(separator: "\r\n")
        guard let status = lines.first else { break }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let value = line[line.index(after: colon)...].drop { $0 == " " }
            headers[line[..<colon].lowercased()] = String(value)
        }
        let bodyStart = headEnd + separator.count
        let length = headers["content-length"].flatMap { Int($0) } ?? 0
        guard rest.endIndex - bodyStart >= length else { break }
        let body = String(decoding: rest[bodyStart..<bodyStart + length], as: UTF8.self)
        responses.append(RawResponse(status: String(status), headers: headers, body: body))
        rest = rest[(bodyStart + length)...]
    }
    return responses
}

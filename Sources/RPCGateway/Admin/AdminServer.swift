package import Logging
import NIOConcurrencyHelpers
package import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The admin HTTP listener: `GET /metrics` (Prometheus text format) and `GET /healthz`.
///
/// Plain HTTP/1.1 on NIOHTTP1, separate from the data ports. Keep-alive and pipelining are handled
/// by NIO's `HTTPServerPipelineHandler`; requests are bounded by NIO's header limits (80 KiB) and by
/// ``maximumBodySize``; idle connections are closed after ``idleTimeout``.
package final class AdminServer: Sendable {
    /// Requests to the admin endpoints carry no body; anything larger than this gets 413 and a close.
    package static let maximumBodySize = 4096
    /// A connection on which nothing arrives for this long is closed.
    package static let idleTimeout = TimeAmount.seconds(60)
    /// The Prometheus text exposition format, version 0.0.4.
    package static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The address the listener is bound to (with the real port when started on port 0).
    package let localAddress: SocketAddress

    private let serverChannel: any Channel
    private let connections: ConnectionSet
    private let logger: Logger

    private init(serverChannel: any Channel, localAddress: SocketAddress, connections: ConnectionSet, logger: Logger) {
        self.serverChannel = serverChannel
        self.localAddress = localAddress
        self.connections = connections
        self.logger = logger
    }

    /// Binds `host:port` on `group` and starts serving.
    ///
    /// - Parameter metrics: produces the `/metrics` body; called on an event loop for every scrape.
    /// - Throws: ``AdminServerError`` naming the address, `.addressInUse` if the port is taken.
    package static func start(
        host: String,
        port: Int,
        group: any EventLoopGroup,
        metrics: @escaping @Sendable () -> String,
        logger: Logger
    ) async throws -> AdminServer {
        let connections = ConnectionSet()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard connections.insert(channel) else {
                        channel.close(promise: nil)
                        return
                    }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(readTimeout: Self.idleTimeout))
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(AdminHTTPHandler(metrics: metrics, logger: logger))
                }
            }

        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw AdminServerError(binding: host, port: port, error: error)
        }
        guard let localAddress = channel.localAddress else {
            try? await channel.close()
            throw AdminServerError(.bindFailed, host: host, port: port, detail: "no local address after bind")
        }
        logger.info("admin listener started", metadata: ["address": "\(localAddress)"])
        return AdminServer(serverChannel: channel, localAddress: localAddress, connections: connections, logger: logger)
    }

    /// Stops accepting, closes every open admin connection and waits until they are closed.
    package func close() async throws {
        do {
            try await self.serverChannel.close()
        } catch ChannelError.alreadyClosed {
            // Closed before: closing again is fine.
        }
        for channel in self.connections.closeAll() {
            channel.close(promise: nil)
            try? await channel.closeFuture.get()
        }
        self.logger.info("admin listener closed", metadata: ["address": "\(self.localAddress)"])
    }
}

/// Why ``AdminServer/start(host:port:group:metrics:logger:)`` failed. The description names the
/// address, e.g. `admin listener: 127.0.0.1:9100 is already in use`.
package struct AdminServerError: Error, Hashable, Sendable, CustomStringConvertible {
    package enum Kind: Hashable, Sendable {
        /// Another socket is already listening on the address (`EADDRINUSE`).
        case addressInUse
        /// Any other failure: unresolvable host, permission denied, ….
        case bindFailed
    }

    package var kind: Kind
    package var host: String
    package var port: Int
    package var detail: String

    package init(_ kind: Kind, host: String, port: Int, detail: String) {
        self.kind = kind
        self.host = host
        self.port = port
        self.detail = detail
    }

    @inline(never)
    init(binding host: String, port: Int, error: any Error) {
        if let ioError = error as? IOError, ioError.errnoCode == EADDRINUSE {
            self.init(.addressInUse, host: host, port: port, detail: "\(ioError)")
        } else {
            self.init(.bindFailed, host: host, port: port, detail: "\(error)")
        }
    }

    /// `host:port`, with brackets around an IPv6 literal.
    package var address: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }

    package var description: String {
        switch self.kind {
        case .addressInUse: "admin listener: \(self.address) is already in use"
        case .bindFailed: "admin listener: cannot bind \(self.address): \(self.detail)"
        }
    }
}

// MARK: - Connections

/// The open admin connections, so that ``AdminServer/close()`` can close them.
private final class ConnectionSet: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var closed = false
    }

    private let state = NIOLockedValueBox(State())

    /// Tracks `channel` until it closes; `false` once ``closeAll()`` has run.
    func insert(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let inserted = self.state.withLockedValue { state in
            guard !state.closed else { return false }
            state.channels[id] = channel
            return true
        }
        if inserted {
            channel.closeFuture.whenComplete { _ in
                self.state.withLockedValue { _ = $0.channels.removeValue(forKey: id) }
            }
        }
        return inserted
    }

    /// Refuses further connections and returns the open ones.
    func closeAll() -> [any Channel] {
        self.state.withLockedValue { state in
            state.closed = true
            return Array(state.channels.values)
        }
    }
}

// MARK: - Handler

/// Answers one request at a time (`HTTPServerPipelineHandler` queues pipelined ones).
private final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// A request head arrived; counting body bytes until `.end`.
        case receiving(HTTPRequestHead, bodyBytes: Int)
        /// The request was refused early (413) and the connection is closing.
        case refused
    }

    private struct Response {
        var status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var body: String
        var allow: String? = nil
    }

    private let metrics: @Sendable () -> String
    private let logger: Logger
    private var state = State.idle

    init(metrics: @escaping @Sendable () -> String, logger: Logger) {
        self.metrics = metrics
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), self.state) {
        case (.head(let head), .idle):
            if let length = head.headers.first(name: "content-length").flatMap(Int.init),
                length > AdminServer.maximumBodySize
            {
                self.refuseTooLarge(context: context, request: head)
            } else {
                self.state = .receiving(head, bodyBytes: 0)
            }
        case (.body(let chunk), .receiving(let head, let bodyBytes)):
            let total = bodyBytes + chunk.readableBytes
            if total > AdminServer.maximumBodySize {
                self.refuseTooLarge(context: context, request: head)
            } else {
                self.state = .receiving(head, bodyBytes: total)
            }
        case (.end, .receiving(let head, _)):
            self.state = .idle
            self.respond(context: context, request: head, response: self.route(head), keepAlive: head.isKeepAlive)
        case (_, .refused):
            break
        case (.head, .receiving), (.body, .idle), (.end, .idle):
            // NIO's decoder never produces these; don't guess, close.
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("admin connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func route(_ head: HTTPRequestHead) -> Response {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let isKnown = path == "/metrics" || path == "/healthz"
        guard isKnown else {
            return Response(status: .notFound, body: "not found\n")
        }
        guard head.method == .GET else {
            return Response(status: .methodNotAllowed, body: "method not allowed\n", allow: "GET")
        }
        if path == "/healthz" {
            return Response(status: .ok, body: "ok\n")
        }
        return Response(status: .ok, contentType: AdminServer.metricsContentType, body: self.metrics())
    }

    private func refuseTooLarge(context: ChannelHandlerContext, request: HTTPRequestHead) {
        self.state = .refused
        let response = Response(status: .payloadTooLarge, body: "request too large\n")
        self.respond(context: context, request: request, response: response, keepAlive: false)
    }

    private func respond(context: ChannelHandlerContext, request: HTTPRequestHead, response: Response, keepAlive: Bool)
    {
        let body = context.channel.allocator.buffer(string: response.body)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(body.readableBytes))
        if let allow = response.allow {
            headers.add(name: "allow", value: allow)
        }
        // HTTP/1.1 is persistent unless told otherwise; HTTP/1.0 only when asked for.
        if request.version == .http1_0 {
            if keepAlive { headers.add(name: "connection", value: "keep-alive") }
        } else if !keepAlive {
            headers.add(name: "connection", value: "close")
        }

        let head = HTTPResponseHead(version: request.version, status: response.status, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if keepAlive {
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
                channel.close(promise: nil)
            }
        }
    }
}

@available(*, unavailable)
extension AdminHTTPHandler: Sendable {}

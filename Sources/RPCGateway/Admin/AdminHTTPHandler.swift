import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

// MARK: - Handler

/// Answers one request at a time (`HTTPServerPipelineHandler` queues pipelined ones).
final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// A request head arrived; counting body bytes until `.end`.
        case receiving(HTTPRequestHead, bodyBytes: Int)
        /// A response is being computed off the event loop.
        case responding
        /// The request was refused early (413) and the connection is closing.
        case refused
    }

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var body: String
        var headers: [(String, String)] = []

        static func text(_ status: HTTPResponseStatus, _ body: String) -> Response {
            Response(status: status, body: body)
        }

        static func json(_ status: HTTPResponseStatus, _ value: JSONValue) -> Response {
            Response(status: status, contentType: "application/json", body: value.text + "\n")
        }
    }

    /// A response now, or one computed by a task (the status snapshot visits the event loops).
    enum Reply {
        case now(Response)
        case later(@Sendable () async -> Response)
    }

    private static let knownPaths: Set<Substring> = ["/healthz", "/readyz", "/metrics", "/", "/status.json"]

    private let content: AdminContent
    private let token: NIOLockedValueBox<BearerToken?>
    private let logger: Logger
    private var state = State.idle

    init(content: AdminContent, token: NIOLockedValueBox<BearerToken?>, logger: Logger) {
        self.content = content
        self.token = token
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
            switch self.route(head) {
            case .now(let response):
                self.state = .idle
                self.respond(context: context, request: head, response: response, keepAlive: head.isKeepAlive)
            case .later(let makeResponse):
                self.state = .responding
                context.eventLoop.makeFutureWithTask(makeResponse).assumeIsolated().whenSuccess { response in
                    guard case .responding = self.state else { return }
                    self.state = .idle
                    self.respond(context: context, request: head, response: response, keepAlive: head.isKeepAlive)
                }
            }
        case (_, .refused):
            break
        case (.head, .receiving), (.body, .idle), (.end, .idle), (_, .responding):
            // NIO's pipelining handler never produces these; don't guess, close.
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

    private func route(_ head: HTTPRequestHead) -> Reply {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        if path != "/healthz", let token = self.token.withLockedValue({ $0 }),
            !token.authorizes(authorizationHeader: head.headers.first(name: "authorization"))
        {
            var response = Response.text(.unauthorized, "unauthorized: this path needs Authorization: Bearer <token>\n")
            response.headers.append(("www-authenticate", "Bearer realm=\"rpcgate admin\""))
            return .now(response)
        }
        guard Self.knownPaths.contains(path), path != "/" && path != "/status.json" || self.content.status != nil else {
            return .now(.text(.notFound, "not found\n"))
        }
        guard head.method == .GET else {
            var response = Response.text(.methodNotAllowed, "method not allowed\n")
            response.headers.append(("allow", "GET"))
            return .now(response)
        }
        switch path {
        case "/healthz":
            return .now(.text(.ok, "ok\n"))
        case "/metrics":
            let body = self.content.metrics()
            return .now(Response(status: .ok, contentType: AdminServer.metricsContentType, body: body))
        case "/readyz":
            guard let readiness = self.content.readiness?() else { return .now(.text(.ok, "ready\n")) }
            let status: HTTPResponseStatus = readiness.isReady ? .ok : .serviceUnavailable
            let wantsJSON = head.headers["accept"].contains { $0.lowercased().contains("application/json") }
            return .now(wantsJSON ? .json(status, readiness.json) : .text(status, readiness.text))
        default:
            guard let status = self.content.status else { return .now(.text(.notFound, "not found\n")) }
            let html = path == "/"
            return .later {
                let snapshot = await status()
                guard html else { return .json(.ok, snapshot.json) }
                let page = StatusPage.render(snapshot)
                var response = Response(status: .ok, contentType: "text/html; charset=utf-8", body: page)
                response.headers.append(("content-security-policy", StatusPage.contentSecurityPolicy))
                response.headers.append(("x-frame-options", "DENY"))
                return response
            }
        }
    }

    private func refuseTooLarge(context: ChannelHandlerContext, request: HTTPRequestHead) {
        self.state = .refused
        let response = Response.text(.payloadTooLarge, "request too large\n")
        self.respond(context: context, request: request, response: response, keepAlive: false)
    }

    private func respond(context: ChannelHandlerContext, request: HTTPRequestHead, response: Response, keepAlive: Bool)
    {
        let body = context.channel.allocator.buffer(string: response.body)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(body.readableBytes))
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "x-content-type-options", value: "nosniff")
        for (name, value) in response.headers {
            headers.add(name: name, value: value)
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

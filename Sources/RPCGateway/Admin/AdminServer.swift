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

/// What the admin listener serves, as functions called per request.
package struct AdminContent: Sendable {
    /// The `/metrics` body (Prometheus text format); called on an event loop for every scrape.
    package var metrics: @Sendable () -> String
    /// The `/readyz` answer; `nil`: always ready (the process is up).
    package var readiness: (@Sendable () -> ReadinessReport)?
    /// The snapshot behind `/` and `/status.json`; `nil`: those paths are not served. Called
    /// from a task, never on an event loop.
    package var status: (@Sendable () async -> GatewayStatus)?

    package init(
        metrics: @escaping @Sendable () -> String,
        readiness: (@Sendable () -> ReadinessReport)? = nil,
        status: (@Sendable () async -> GatewayStatus)? = nil
    ) {
        self.metrics = metrics
        self.readiness = readiness
        self.status = status
    }
}

/// The admin HTTP listener:
///
/// | Path | Answer |
/// |---|---|
/// | `GET /healthz` | `ok`: the process is alive. Never needs the token. |
/// | `GET /readyz` | 200 `ready`, or 503 naming the routes whose upstream was not reached recently |
/// | `GET /metrics` | Prometheus text format |
/// | `GET /` | the status page (HTML, no script, refreshes itself) |
/// | `GET /status.json` | the same snapshot as JSON |
///
/// `/readyz` answers JSON to `Accept: application/json`. With a ``BearerToken``, every path but
/// `/healthz` answers 401 unless the request carries `Authorization: Bearer <token>`.
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
    private let token: NIOLockedValueBox<BearerToken?>

    private init(
        serverChannel: any Channel,
        localAddress: SocketAddress,
        connections: ConnectionSet,
        token: NIOLockedValueBox<BearerToken?>,
        logger: Logger
    ) {
        self.serverChannel = serverChannel
        self.localAddress = localAddress
        self.connections = connections
        self.token = token
        self.logger = logger
    }

    /// Binds `host:port` on `group` and serves `/metrics` and `/healthz` (and `/readyz`, always
    /// ready).
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
        try await Self.start(
            host: host,
            port: port,
            group: group,
            content: AdminContent(metrics: metrics),
            logger: logger
        )
    }

    /// Binds `host:port` on `group` and starts serving `content`.
    ///
    /// - Parameter token: when set, required on every path but `/healthz`; see ``setToken(_:)``.
    /// - Throws: ``AdminServerError`` naming the address, `.addressInUse` if the port is taken.
    package static func start(
        host: String,
        port: Int,
        group: any EventLoopGroup,
        content: AdminContent,
        token: BearerToken? = nil,
        logger: Logger
    ) async throws -> AdminServer {
        let connections = ConnectionSet()
        let tokenBox = NIOLockedValueBox(token)
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
                    try sync.addHandler(AdminHTTPHandler(content: content, token: tokenBox, logger: logger))
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
        logger.info(
            "admin listener started",
            metadata: ["address": "\(HostPort.text(localAddress))", "token": "\(token == nil ? "none" : "required")"]
        )
        return AdminServer(
            serverChannel: channel,
            localAddress: localAddress,
            connections: connections,
            token: tokenBox,
            logger: logger
        )
    }

    /// Replaces the bearer token (a reload); `nil` turns the check off. Applies to the next request.
    package func setToken(_ token: BearerToken?) {
        self.token.withLockedValue { $0 = token }
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
        self.logger.info("admin listener closed", metadata: ["address": "\(HostPort.text(self.localAddress))"])
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

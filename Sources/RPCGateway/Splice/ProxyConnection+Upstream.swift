import Logging
import NIOCore
import RPCWire

/// The runtime's side of routing: resolving the first bind's interface at the server's endpoint
/// mapper, connecting upstream, refusing what cannot be routed. Each answer goes back to the
/// machine, whose next action the connection executes.
extension ProxyConnection {
    func resolve(_ interface: SyntaxID, at mapper: TCPEndpoint) {
        let resolver = self.route.resolver
        if let cached = resolver.cached(interface, at: mapper) {
            // Known from a recent reply or look-up: no task, no wait.
            self.execute(self.machine.firstBindResolved(cached.map { .port($0) } ?? .notRegistered))
            self.clientHandler?.resumeInput()
            return
        }
        let loop = self.eventLoop
        loop.makeFutureWithTask {
            try await resolver.resolve(interface, at: mapper, group: loop)
        }.assumeIsolated().whenComplete { [self] result in
            guard !self.isClosing else { return }
            let resolution: ConnectionStateMachine.Resolution
            switch result {
            case .success(let port?): resolution = .port(port)
            case .success(nil): resolution = .notRegistered
            case .failure(let error):
                self.route.logger.warning(
                    "endpoint mapper unreachable for bind routing",
                    metadata: ["conn": "\(self.id)", "mapper": "\(mapper)", "error": "\(error)"]
                )
                resolution = .unreachable("\(error)")
            }
            self.execute(self.machine.firstBindResolved(resolution))
            self.clientHandler?.resumeInput()
        }
    }

    /// Connects upstream; once connected the machine's held PDU goes first and the client is read.
    func connect(to server: TCPEndpoint) -> EventLoopFuture<Void> {
        let tunnelled = self.route.settings.via != nil
        self.route.logger.debug(
            "connection opened",
            metadata: [
                "conn": "\(self.id)", "listener": "\(self.listener.rawValue)", "client": "\(self.clientDescription)",
                "gateway": "\(HostPort.text(self.localAddress))", "server": "\(server)",
                "via": "\(self.route.settings.via ?? "-")",
            ]
        )
        return self.connector(server, self.machine.role, self.eventLoop)
            .assumeIsolated()
            .flatMapThrowing { [self] upstream in
                guard !self.isClosing else {
                    upstream.close(promise: nil)
                    return
                }
                do {
                    try self.attachServer(upstream)
                } catch {
                    upstream.close(promise: nil)
                    self.close(.protocolError)
                    throw error
                }
                self.execute(self.machine.connected())
                self.onSpliced?()
                self.onSpliced = nil
                self.clientHandler?.resumeInput()
                if self.draining, !self.machine.hasCallsInFlight { self.close(.shutdown) }
            }
            .flatMapError { [self] error in
                self.route.metrics.connectionRefused(reason: tunnelled ? .peerUnreachable : .upstreamUnreachable)
                self.route.logger.warning(
                    tunnelled ? "core gateway unreachable" : "upstream unreachable",
                    metadata: [
                        "conn": "\(self.id)", "server": "\(server)", "client": "\(self.clientDescription)",
                        "via": "\(self.route.settings.via ?? "-")", "error": "\(UpstreamProbe.describe(error))",
                    ]
                )
                if self.machine.routedBy != nil {
                    // A restarted server may have moved its endpoints: ask again next time.
                    self.route.resolver.invalidate(address: server.address, port: server.port)
                }
                self.close(.upstreamUnreachable)
                return self.eventLoop.makeFailedFuture(error)
            }
            .nonisolated()
    }

    func refuse(_ refusal: ConnectionStateMachine.RoutingRefusal) {
        switch refusal {
        case .noBind(let message):
            self.route.metrics.connectionRefused(reason: .noBind)
            self.route.logger.notice(
                "connection refused: \(message)",
                metadata: [
                    "conn": "\(self.id)", "client": "\(self.clientDescription)",
                    "reason": "\(GatewayMetrics.RefusalReason.noBind)",
                ]
            )
        case .mapperUnreachable:
            self.route.metrics.connectionRefused(reason: .upstreamUnreachable)
        }
        self.refused = true
        self.close(.protocolError)
    }
}

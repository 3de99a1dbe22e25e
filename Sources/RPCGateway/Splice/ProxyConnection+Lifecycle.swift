import Logging
import NIOCore
import RPCWire

/// Timers, the status-page snapshot and closing: every connection ends through ``close(_:)``,
/// which logs and counts it once (or, refused before it was spliced, only as a refusal) and
/// releases what it held.
extension ProxyConnection: NIOScheduledCallbackHandler {
    /// The bind, idle and half-close timeouts on one scheduled callback per connection, without
    /// a timer per read or a promise per write (what NIO's `IdleStateHandler` costs) and without
    /// a promise per timer (what `scheduleTask` costs): every read burst stamps ``lastActivity``;
    /// the callback fires at the earliest deadline and either closes the connection or sleeps
    /// until the next one. The gateway only writes what it read from the other side, so reads on
    /// both sides are all the activity there is. Uses the event loop's clock, so an
    /// `EmbeddedEventLoop` advanced in tests and in the fuzz harness drives it.
    func armTimer() {
        guard !self.finished else { return }
        let deadline = self.nextDeadline
        if let current = self.timerDeadline, current <= deadline {
            return  // fires sooner and re-arms for the later deadline then
        }
        self.timer?.cancel()
        self.timer = try? self.eventLoop.assumeIsolated().scheduleCallback(at: deadline, handler: self)
        self.timerDeadline = deadline
    }

    /// The earliest of the deadlines that still apply.
    private var nextDeadline: NIODeadline {
        var next = self.lastActivity + self.idleTimeout
        if let bind = self.bindDeadline, bind < next { next = bind }
        if let halfClose = self.halfCloseDeadline, halfClose < next { next = halfClose }
        return next
    }

    func handleScheduledCallback(eventLoop: some EventLoop) {
        self.timer = nil
        self.timerDeadline = nil
        guard !self.finished else { return }
        let now = self.eventLoop.now
        if let bind = self.bindDeadline {
            if self.machine.isBound {
                self.bindDeadline = nil
            } else if now >= bind {
                self.close(.bindTimeout)
                return
            }
        }
        if let halfClose = self.halfCloseDeadline, now >= halfClose {
            self.close(.halfCloseTimeout)
            return
        }
        if now - self.lastActivity >= self.idleTimeout {
            self.close(.idleTimeout)
            return
        }
        self.armTimer()
    }

    var clientDescription: String { HostPort.text(self.clientAddress) }

    /// What the status page shows about this connection.
    func snapshot(now: NIODeadline = .now()) -> ConnectionStatus {
        ConnectionStatus(
            id: self.id,
            route: self.route.name,
            listener: self.listener,
            client: self.clientDescription,
            gatewayPort: self.localAddress?.port.map { UInt16(truncatingIfNeeded: $0) },
            server: self.serverEndpoint,
            age: .nanoseconds((now - self.started).nanoseconds),
            idle: .nanoseconds(max(0, (now - self.lastActivity).nanoseconds)),
            bytesFromClient: self.bytesFromClient,
            bytesFromServer: self.bytesFromServer,
            interfaces: self.machine.acceptedInterfaces,
            authLevel: self.machine.authLevel,
            callInFlight: self.machine.hasCallsInFlight
        )
    }

    func close(_ reason: CloseReason) {
        if self.closeReason == nil { self.closeReason = reason }
        self.clientHandler?.close()
        self.serverHandler?.close()
        self.finish()
    }

    func finish() {
        guard !self.finished else { return }
        self.finished = true
        self.timer?.cancel()
        self.timer = nil
        self.timerDeadline = nil
        if !self.refused {
            let duration = NIODeadline.now() - self.started
            let interfaces = self.machine.acceptedInterfaces.map { self.route.interfaceLabel($0) }
            self.route.logger.info(
                "connection closed",
                metadata: [
                    "conn": "\(self.id)",
                    "listener": "\(self.listener.rawValue)",
                    "client": "\(self.clientDescription)",
                    "gateway": "\(HostPort.text(self.localAddress))",
                    "server": "\(self.serverEndpoint)",
                    "started": "\(self.startedWallClock.rfc3339)",
                    "bytes_from_client": "\(self.bytesFromClient)",
                    "bytes_from_server": "\(self.bytesFromServer)",
                    "requests": "\(self.requests)",
                    "interfaces": "\(interfaces.isEmpty ? "-" : interfaces.joined(separator: ","))",
                    "duration_ms": "\(duration.nanoseconds / 1_000_000)",
                    "reason": "\(self.closeReason?.rawValue ?? "closed")",
                ]
            )
            self.route.metrics.connectionClosed(reason: self.closeReason?.rawValue ?? "closed")
        }
        self.onClose()
        // Break the handler <-> connection cycle once both channels are closing.
        self.eventLoop.assumeIsolated().execute { [self] in
            self.clientHandler = nil
            self.serverHandler = nil
        }
    }
}

import Logging
import NIOCore
import RPCWire

/// Timers, the status-page snapshot and closing: every connection ends through ``close(_:)``,
/// which logs and counts it once (or, refused before it was spliced, only as a refusal) and
/// releases what it held.
extension ProxyConnection {
    /// The idle timeout, without a timer per read or a promise per write (what NIO's
    /// `IdleStateHandler` costs): every read burst stamps ``lastActivity`` and one scheduled check
    /// per connection either closes it or sleeps until the stamp plus the timeout. The gateway only
    /// writes what it read from the other side, so reads on both sides are all the activity there
    /// is. Uses the event loop's clock, so an `EmbeddedEventLoop` advanced in tests and in the
    /// fuzz harness drives it.
    func scheduleIdleCheck(in delay: TimeAmount) {
        guard !self.finished else { return }
        self.idleCheck = self.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            let limit = TimeAmount(self.timeouts.idleDuration)
            let idleFor = self.eventLoop.now - self.lastActivity
            if idleFor >= limit {
                self.close(.idleTimeout)
            } else {
                self.scheduleIdleCheck(in: limit - idleFor)
            }
        }
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
        for timer in self.timers { timer.cancel() }
        self.timers.removeAll()
        self.idleCheck?.cancel()
        self.idleCheck = nil
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

package import NIOCore
package import RPCWire

/// An ``RPCClientConnection`` driven from async code: each step is submitted to the connection's
/// event loop and awaited. One step at a time (a bind or a call), as the connection requires.
///
/// Every step is bounded by `timeout`: when no answer arrives in time the connection is closed,
/// which fails the step.
package struct PeerSession: Sendable {
    private let connection: NIOLoopBound<RPCClientConnection>
    private let loop: any EventLoop
    private let timeout: TimeAmount

    private init(connection: NIOLoopBound<RPCClientConnection>, loop: any EventLoop, timeout: TimeAmount) {
        self.connection = connection
        self.loop = loop
        self.timeout = timeout
    }

    /// Connects to `target` on one loop of `group`.
    package static func connect(
        to target: PeerAddress,
        group: any EventLoopGroup,
        timeout: TimeAmount = .seconds(10)
    ) async throws -> PeerSession {
        let loop = group.next()
        return try await loop.flatSubmit { () -> EventLoopFuture<PeerSession> in
            let promise = loop.makePromise(of: PeerSession.self)
            RPCClient.connect(to: target, on: loop) { result in
                promise.completeWith(
                    result.map {
                        PeerSession(connection: NIOLoopBound($0, eventLoop: loop), loop: loop, timeout: timeout)
                    }
                )
            }
            return promise.futureResult
        }.get()
    }

    /// Binds context 0 to `interface`. Throws ``BindRefused`` when the answer rejects it.
    package func bind(_ interface: SyntaxID, fragment: Int = 5840) async throws {
        let connection = self.connection
        let loop = self.loop
        let timeout = self.timeout
        try await loop.flatSubmit { () -> EventLoopFuture<Void> in
            let promise = loop.makePromise(of: Void.self)
            let timer = loop.scheduleTask(in: timeout) { connection.value.close() }
            connection.value.bind(interface, fragment: fragment) { result in
                timer.cancel()
                promise.completeWith(result)
            }
            return promise.futureResult
        }.get()
    }

    /// Calls `opnum` on context 0 with `stub`; the response stub, or ``CallFaulted``.
    package func call(opnum: UInt16, stub: ByteBuffer = ByteBuffer()) async throws -> RPCClientConnection.CallResult {
        let connection = self.connection
        let loop = self.loop
        let timeout = self.timeout
        return try await loop.flatSubmit { () -> EventLoopFuture<RPCClientConnection.CallResult> in
            let promise = loop.makePromise(of: RPCClientConnection.CallResult.self)
            let timer = loop.scheduleTask(in: timeout) { connection.value.close() }
            connection.value.call(opnum: opnum, stub: stub, verifier: false, collect: true) { result in
                timer.cancel()
                promise.completeWith(result)
            }
            return promise.futureResult
        }.get()
    }

    /// Closes the connection and waits until it is closed.
    package func close() async {
        let connection = self.connection
        let loop = self.loop
        try? await loop.flatSubmit { () -> EventLoopFuture<Void> in
            guard let channel = connection.value.channel else { return loop.makeSucceededVoidFuture() }
            return channel.close().recover { _ in }
        }.get()
    }
}

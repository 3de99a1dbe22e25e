import Benchmark
import NIOCore
import NIOEmbedded
@_spi(Benchmarking) import RPCGateway
import RPCPolicy
import RPCWire

// The set-up path and forwarding through the real glue handlers, ProxyConnection and state
// machine, in two EmbeddedChannels (no sockets: what NIO's socket channels and bootstraps cost is
// in the callgrind churn profile, docs/PERFORMANCE.md). mallocs are exact; the EmbeddedChannel
// pair's own share is measured separately ("baseline") so the gateway's can be read off.

func setUpBenchmarks() {
    let sequence = SetUpInputs()

    Benchmark("Set-up baseline: two EmbeddedChannels opened, the sequence's bytes passed by hand, closed (no gateway)")
    {
        benchmark in
        let loop = EmbeddedEventLoop()
        for _ in benchmark.scaledIterations {
            blackHole(sequence.runWithoutGateway(on: loop))
        }
    }

    Benchmark(
        "Set-up: churn sequence through the gateway (endpoint-mapper connection: bind, ept_map rewritten, close; mapped connection: bind, one 100-byte call, close)"
    ) { benchmark in
        let loop = EmbeddedEventLoop()
        for _ in benchmark.scaledIterations {
            blackHole(try sequence.runThroughGateway(on: loop))
        }
    }

    Benchmark(
        "Forward through GlueHandler + ProxyConnection: 100-byte request and response on a bound mapped connection (EmbeddedChannels)"
    ) { benchmark in
        let loop = EmbeddedEventLoop()
        let pair = try sequence.boundMappedPair(on: loop)
        let call = Inputs.call(stubSize: 100, authTrailer: false)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try pair.client.writeInbound(call.request.bytes)
            pair.client.pipeline.fireChannelReadComplete()
            blackHole(try pair.server.readOutbound(as: ByteBuffer.self))
            try pair.server.writeInbound(call.response.bytes)
            pair.server.pipeline.fireChannelReadComplete()
            blackHole(try pair.client.readOutbound(as: ByteBuffer.self))
        }
        benchmark.stopMeasurement()
        _ = try? pair.client.finish(acceptAlreadyClosed: true)
        _ = try? pair.server.finish(acceptAlreadyClosed: true)
    }
}

/// The PDUs of one churn sequence as the bench client and server exchange them.
struct SetUpInputs {
    let upstream = IPv4Address(10, 0, 0, 2)
    let client = IPAddress("127.0.0.1") ?? .v4(0x7f00_0001)
    let route: RouteSettings
    let epmBind: ByteBuffer
    let epmBindAck: ByteBuffer
    let mapRequest: ByteBuffer
    let mapReply: ByteBuffer
    let bind: ByteBuffer
    let bindAck: ByteBuffer
    let request: ByteBuffer
    let response: ByteBuffer

    init() {
        self.route = RouteSettings(
            name: "bench",
            listenAddress: "127.0.0.1",
            epmPort: 135,
            upstreamHost: "10.0.0.2",
            ports: 50000...50009,
            policy: Inputs.policy(inspectingOperations: true)
        )
        self.epmBind = Self.bind(SyntaxID.endpointMapper, callID: 1)
        self.epmBindAck = Self.bindAck(callID: 1, port: 135)
        var stub = ByteBuffer()
        stub.writeEPMMapRequest(
            EPMMapRequest(
                object: nil,
                tower: ProtocolTower.ncacnIPTCP(
                    interface: Inputs.bench,
                    endpoint: TCPEndpoint(address: IPv4Address(0, 0, 0, 0), port: 0)
                ),
                maxTowers: 4
            ),
            syntax: .ndr32
        )
        self.mapRequest = Inputs.serialize(
            PDU(
                header: PDUHeader(packetType: .request, flags: [.firstFragment, .lastFragment], callID: 2),
                body: .request(
                    RequestPDU(allocationHint: UInt32(stub.readableBytes), contextID: 0, opnum: 3, stub: stub)
                )
            )
        )
        self.mapReply = Inputs.mapReply()[0].bytes
        self.bind = Self.bind(Inputs.bench, callID: 1)
        self.bindAck = Self.bindAck(callID: 1, port: 49667)
        let call = Inputs.call(stubSize: 100, authTrailer: false)
        self.request = call.request.bytes
        self.response = call.response.bytes
    }

    static func bind(_ interface: SyntaxID, callID: UInt32) -> ByteBuffer {
        Inputs.serialize(
            PDU(
                header: PDUHeader(packetType: .bind, callID: callID),
                body: .bind(
                    BindPDU(
                        maxTransmitFragment: 5840,
                        maxReceiveFragment: 5840,
                        associationGroupID: 0,
                        contexts: [
                            PresentationContext(contextID: 0, abstractSyntax: interface, transferSyntaxes: [.ndr])
                        ]
                    )
                )
            )
        )
    }

    static func bindAck(callID: UInt32, port: UInt16) -> ByteBuffer {
        Inputs.serialize(
            PDU(
                header: PDUHeader(packetType: .bindAck, callID: callID),
                body: .bindAck(
                    BindAckPDU(
                        maxTransmitFragment: 5840,
                        maxReceiveFragment: 5840,
                        associationGroupID: 0x1234,
                        secondaryAddress: BindAckPDU.secondaryAddress(port: port),
                        results: [PresentationResult(result: .acceptance, reason: .notSpecified, transferSyntax: .ndr)]
                    )
                )
            )
        )
    }

    /// One connection's exchange: each PDU in through one side, out of the other.
    func exchange(
        _ client: EmbeddedChannel,
        _ server: EmbeddedChannel,
        _ pdus: [(fromClient: Bool, bytes: ByteBuffer)]
    )
        throws -> Int
    {
        var delivered = 0
        for (fromClient, bytes) in pdus {
            let (from, to) = fromClient ? (client, server) : (server, client)
            try from.writeInbound(bytes)
            from.pipeline.fireChannelReadComplete()
            while let out = try to.readOutbound(as: ByteBuffer.self) { delivered += out.readableBytes }
        }
        return delivered
    }

    func connectedPair(on loop: EmbeddedEventLoop) -> (client: EmbeddedChannel, server: EmbeddedChannel) {
        (EmbeddedChannel(loop: loop), EmbeddedChannel(loop: loop))
    }

    func connect(_ channels: EmbeddedChannel...) throws {
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        for channel in channels { try channel.connect(to: address).wait() }
    }

    func close(_ client: EmbeddedChannel, _ server: EmbeddedChannel, _ loop: EmbeddedEventLoop) {
        client.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        client.close(promise: nil)
        server.close(promise: nil)
        loop.run()
        _ = try? client.finish(acceptAlreadyClosed: true)
        _ = try? server.finish(acceptAlreadyClosed: true)
    }

    func runThroughGateway(on loop: EmbeddedEventLoop) throws -> Int {
        var delivered = 0
        do {
            let (client, server) = self.connectedPair(on: loop)
            try BenchmarkSplice.install(
                client: client,
                server: server,
                route: self.route,
                upstreamAddress: self.upstream,
                endpointMapper: true,
                clientAddress: self.client,
                serverEndpoint: TCPEndpoint(address: self.upstream, port: 135)
            )
            try self.connect(client, server)
            delivered += try self.exchange(
                client,
                server,
                [(true, self.epmBind), (false, self.epmBindAck), (true, self.mapRequest), (false, self.mapReply)]
            )
            self.close(client, server, loop)
        }
        do {
            let (client, server) = self.connectedPair(on: loop)
            try BenchmarkSplice.install(
                client: client,
                server: server,
                route: self.route,
                upstreamAddress: self.upstream,
                endpointMapper: false,
                clientAddress: self.client,
                serverEndpoint: TCPEndpoint(address: self.upstream, port: 49667)
            )
            try self.connect(client, server)
            delivered += try self.exchange(
                client,
                server,
                [(true, self.bind), (false, self.bindAck), (true, self.request), (false, self.response)]
            )
            self.close(client, server, loop)
        }
        return delivered
    }

    /// The same channels and bytes, passed from one channel's inbound to the other's outbound by
    /// hand: what the EmbeddedChannels cost without the gateway.
    func runWithoutGateway(on loop: EmbeddedEventLoop) -> Int {
        var delivered = 0
        for pdus in [
            [self.epmBind, self.epmBindAck, self.mapRequest, self.mapReply],
            [self.bind, self.bindAck, self.request, self.response],
        ] {
            let (client, server) = self.connectedPair(on: loop)
            try? self.connect(client, server)
            for (index, bytes) in pdus.enumerated() {
                let (from, to) = index % 2 == 0 ? (client, server) : (server, client)
                _ = try? from.writeInbound(bytes)
                if let read = try? from.readInbound(as: ByteBuffer.self) {
                    to.writeAndFlush(read, promise: nil)
                }
                while let out = try? to.readOutbound(as: ByteBuffer.self) { delivered += out.readableBytes }
            }
            self.close(client, server, loop)
        }
        return delivered
    }

    /// A mapped connection through the gateway, bound to the bench interface.
    func boundMappedPair(on loop: EmbeddedEventLoop) throws -> (client: EmbeddedChannel, server: EmbeddedChannel) {
        let (client, server) = self.connectedPair(on: loop)
        try BenchmarkSplice.install(
            client: client,
            server: server,
            route: self.route,
            upstreamAddress: self.upstream,
            endpointMapper: false,
            clientAddress: self.client,
            serverEndpoint: TCPEndpoint(address: self.upstream, port: 49667)
        )
        try self.connect(client, server)
        _ = try self.exchange(client, server, [(true, self.bind), (false, self.bindAck)])
        return (client, server)
    }
}

import Logging
import MetricsTestKit
import NIOCore
import NIOEmbedded
import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

/// The endpoint-mapper connection of a preserve route and of a pool route, through the real
/// framer, glue handlers, machine and tower rewriting on `EmbeddedChannel`s: a signed reply
/// reaches the client byte for byte (preserve), or the signed bind is refused (pool).
@Suite("Protected endpoint-mapper lookups (EmbeddedChannel)")
struct ProtectedEndpointMapperSpliceTests {
    typealias Lookups = ProtectedEndpointMapperTests

    final class Harness {
        let loop = EmbeddedEventLoop()
        let client: EmbeddedChannel
        let server: EmbeddedChannel
        let route: RouteRuntime
        let metrics = TestMetrics()
        let connection: ProxyConnection

        /// - Parameter transparent: a transparent route with `server_ports` 49152-49160 and
        ///   `server_ports_listen` 40135 instead of a mapped one.
        init(portMapping: PortMappingMode, transparent: Bool = false) throws {
            var settings = RouteSettings(
                name: "dc1",
                listenAddress: "127.0.0.1",
                epmPort: 135,
                advertiseAddress: transparent ? nil : IPv4Address("192.0.2.10"),
                upstreamHost: "10.99.0.2",
                ports: transparent ? 40_135...40_135 : 49_152...49_160,
                policy: Lookups.policy
            )
            settings.portMapping = portMapping
            if transparent {
                settings.mode = .transparent(servers: [IPNetwork("10.99.0.0/24")!])
                settings.allowedServerPorts = [49_152...49_160]
                settings.serverPortsListen = 40_135
                settings.pinholes = .learned
            }
            self.route = RouteRuntime(
                settings: settings,
                upstreamAddress: Lookups.server,
                metrics: GatewayMetrics(factory: self.metrics).route("dc1"),
                logger: Logger(label: "test")
            )
            self.client = EmbeddedChannel(loop: self.loop)
            self.server = EmbeddedChannel(loop: self.loop)
            var machine = ConnectionStateMachine(
                role: .endpointMapper,
                policy: Lookups.policy,
                client: Lookups.client,
                limits: WireLimits(),
                server: TCPEndpoint(address: Lookups.server, port: 135)
            )
            machine.protectedEndpointMapper = settings.passesProtectedEndpointMapper ? .passThrough : .refuse
            let server = self.server
            self.connection = ProxyConnection(
                id: 1,
                route: self.route,
                listener: .epm,
                machine: machine,
                clientAddress: try SocketAddress(ipAddress: "10.1.2.3", port: 50_123),
                localAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 135),
                clientFacingAddress: IPv4Address("127.0.0.1"),
                upstreamAddress: Lookups.server,
                eventLoop: self.loop,
                timeouts: Timeouts(),
                connector: { _, _, loop in loop.makeSucceededFuture(server) },
                onClose: {}
            )
            let (handler, spliced) = self.connection.start()
            try self.client.pipeline.syncOperations.addHandler(handler)
            try spliced.wait()
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
            try self.client.connect(to: address).wait()
            try self.server.connect(to: address).wait()
        }

        func clientWrites(_ pdu: RawPDU) throws {
            try self.client.writeInbound(pdu.bytes)
            self.client.pipeline.fireChannelReadComplete()
        }

        func serverWrites(_ bytes: ByteBuffer) throws {
            try self.server.writeInbound(bytes)
            self.server.pipeline.fireChannelReadComplete()
        }

        func drain(_ channel: EmbeddedChannel) throws -> ByteBuffer {
            var all = ByteBuffer()
            while var piece = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&piece) }
            return all
        }

        func counter(_ name: String, _ dimensions: [(String, String)] = [("route", "dc1")]) -> Int64 {
            (try? self.metrics.expectCounter(name, dimensions).totalValue) ?? 0
        }
    }

    /// A signed reply split over two fragments (the second starts inside the tower list), as the
    /// server sends it.
    static func signedReplyFragments(callID: UInt32, stub: ByteBuffer) -> [RawPDU] {
        var first = stub
        let head = first.readSlice(length: stub.readableBytes / 2)!
        let tail = first
        return [(head, PFCFlags.firstFragment), (tail, PFCFlags.lastFragment)].map { piece, flags in
            Wire.raw(
                PDU(
                    header: PDUHeader(packetType: .response, flags: flags, callID: callID),
                    body: .response(
                        ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: 0, stub: piece)
                    ),
                    authVerifier: Wire.ntlm(.integrity)
                )
            )
        }
    }

    @Test("Preserve: the signed lookup's reply reaches the client byte for byte, in two fragments")
    func preservePassesSignedReplyUnchanged() throws {
        let harness = try Harness(portMapping: .preserve)
        try harness.clientWrites(Wire.bind([SyntaxID.endpointMapper], auth: Wire.ntlm(.integrity)))
        #expect(try harness.drain(harness.server).readableBytes > 0)
        try harness.serverWrites(Wire.bindAck(accepting: 1).bytes)
        _ = try harness.drain(harness.client)
        let request = Wire.request(
            callID: 2,
            opnum: 3,
            stub: Lookups.mapStub(for: Wire.samr),
            auth: Wire.ntlm(.integrity)
        )
        try harness.clientWrites(request)
        #expect(try harness.drain(harness.server) == request.bytes)
        // One tower in the range, one outside it: neither may be touched.
        let fragments = Self.signedReplyFragments(
            callID: 2,
            stub: Lookups.mapReplyStub(ports: [49_154, 50_001], address: Lookups.server)
        )
        var sent = ByteBuffer()
        for fragment in fragments { sent.writeImmutableBuffer(fragment.bytes) }
        try harness.serverWrites(sent)
        #expect(try harness.drain(harness.client) == sent)
        #expect(harness.counter("rpcgate_epm_protected_replies_total") == 1)
        #expect(harness.counter("rpcgate_epm_towers_outside_range_total") == 1)
        #expect(harness.client.isActive)
    }

    @Test("Preserve: an unprotected reply keeps the server's port, gets the gateway's address; outside ports redacted")
    func preserveRewritesUnprotectedReply() throws {
        let harness = try Harness(portMapping: .preserve)
        try harness.clientWrites(Wire.bind([SyntaxID.endpointMapper]))
        try harness.serverWrites(Wire.bindAck(accepting: 1).bytes)
        _ = try harness.drain(harness.client)
        try harness.clientWrites(Wire.request(callID: 2, opnum: 2, stub: ByteBuffer(repeating: 0, count: 40)))
        var stub = ByteBuffer()
        stub.writeEPMLookupResponse(
            EPMLookupResponse(
                entryHandle: .null,
                maxEntries: 2,
                entries: [49_154, 50_001].map { port in
                    EPMEntry(
                        object: .zero,
                        tower: .ncacnIPTCP(interface: Wire.samr, endpoint: TCPEndpoint(address: .any, port: port)),
                        annotation: [0]
                    )
                },
                status: RPCStatus(rawValue: 0)
            ),
            syntax: .ndr32
        )
        try harness.serverWrites(Wire.response(callID: 2, stub: stub).bytes)
        let answer = try #require(Wire.parse(try harness.drain(harness.client)))
        guard case .response(var response) = answer.body else {
            Issue.record("expected a response")
            return
        }
        let lookup = try response.stub.readEPMLookupResponse(syntax: .ndr32)
        #expect(lookup.entries.map { $0.tower?.tcpPort } == [49_154, 0])
        #expect(lookup.entries.first?.tower?.ipv4Address == IPv4Address("192.0.2.10"))
        #expect(harness.counter("rpcgate_epm_towers_outside_range_total") == 1)
        #expect(harness.route.pool.mappings.isEmpty, "preserve never uses the pool")
    }

    @Test("Transparent server_ports_listen: towers keep the server's address and port and open pinholes")
    func transparentKeepsServerEndpointsAndLearnsPinholes() throws {
        let harness = try Harness(portMapping: .pool, transparent: true)
        try harness.clientWrites(Wire.bind([SyntaxID.endpointMapper]))
        try harness.serverWrites(Wire.bindAck(accepting: 1).bytes)
        _ = try harness.drain(harness.client)
        try harness.clientWrites(Wire.request(callID: 2, opnum: 3, stub: Lookups.mapStub(for: Wire.samr)))
        try harness.serverWrites(Wire.response(callID: 2, stub: Lookups.mapReplyStub(ports: [49_154])).bytes)
        let answer = try #require(Wire.parse(try harness.drain(harness.client)))
        guard case .response(var response) = answer.body else {
            Issue.record("expected a response")
            return
        }
        let map = try response.stub.readEPMMapResponse(syntax: .ndr32)
        #expect(map.towers.first??.tcpPort == 49_154)
        #expect(map.towers.first??.ipv4Address == Lookups.server)
        let pinholes = harness.route.pinholes
        #expect(pinholes.isOpen(client: Lookups.client, server: TCPEndpoint(address: Lookups.server, port: 49_154)))
        #expect(!pinholes.isOpen(client: Lookups.client, server: TCPEndpoint(address: Lookups.server, port: 49_153)))
        #expect(
            !pinholes.isOpen(client: IPAddress("10.1.2.4")!, server: TCPEndpoint(address: Lookups.server, port: 49_154))
        )
        #expect(harness.route.pool.mappings.isEmpty, "no pool port is handed out")
    }

    @Test("Transparent server_ports_listen: a signed reply passes unchanged and its towers still open pinholes")
    func transparentSignedReplyOpensPinholes() throws {
        let harness = try Harness(portMapping: .pool, transparent: true)
        try harness.clientWrites(Wire.bind([SyntaxID.endpointMapper], auth: Wire.ntlm(.integrity)))
        try harness.serverWrites(Wire.bindAck(accepting: 1).bytes)
        _ = try harness.drain(harness.client)
        try harness.clientWrites(
            Wire.request(callID: 2, opnum: 3, stub: Lookups.mapStub(for: Wire.samr), auth: Wire.ntlm(.integrity))
        )
        let reply = Lookups.signedResponse(
            callID: 2,
            stub: Lookups.mapReplyStub(ports: [49_153], address: Lookups.server)
        )
        try harness.serverWrites(reply.bytes)
        #expect(try harness.drain(harness.client) == reply.bytes)
        #expect(
            harness.route.pinholes.isOpen(
                client: Lookups.client,
                server: TCPEndpoint(address: Lookups.server, port: 49_153)
            )
        )
    }

    @Test("Pool: the signed bind is rejected and the connection closed with authenticated_epm")
    func poolRefusesSignedBind() throws {
        let harness = try Harness(portMapping: .pool)
        try harness.clientWrites(Wire.bind([SyntaxID.endpointMapper], auth: Wire.ntlm(.integrity)))
        #expect(try harness.drain(harness.server).readableBytes == 0, "nothing reaches the server")
        #expect(Wire.parse(try harness.drain(harness.client))?.packetType == .bindAck)
        #expect(!harness.client.isActive)
        #expect(
            harness.counter("rpcgate_connections_closed_total", [("route", "dc1"), ("reason", "authenticated_epm")])
                == 1
        )
    }
}

import Foundation
import Logging
import MetricsTestKit
import NIOCore
import NIOEmbedded
import RPCPolicy
import RPCWire
import Testing

@testable import RPCGateway

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The splice of one connection, with both channels on one `EmbeddedEventLoop`: what the client
/// writes and what reaches the server (and back), through the real framer, glue handlers,
/// state machine, port pool and metrics.
@Suite("Proxied connection (EmbeddedChannel)")
struct ProxyConnectionTests {
    struct Harness {
        let loop = EmbeddedEventLoop()
        let client: EmbeddedChannel
        let server: EmbeddedChannel
        let route: RouteRuntime
        let metrics: TestMetrics
        let closed: NIOLockedBoxCount
        let denials = RecentDenials(capacity: 10)
        let connection: ProxyConnection

        init(
            listener: GatewayMetrics.Listener,
            policy: Policy,
            advertise: IPv4Address? = IPv4Address("192.0.2.10"),
            audit: AuditLog? = nil,
            clientAddress: SocketAddress? = nil
        ) throws {
            self.metrics = TestMetrics()
            let settings = RouteSettings(
                name: "dc1",
                listenAddress: "127.0.0.1",
                epmPort: 135,
                advertiseAddress: advertise,
                upstreamHost: "10.99.0.2",
                ports: 50000...50001,
                policy: policy
            )
            self.route = RouteRuntime(
                settings: settings,
                upstreamAddress: IPv4Address("10.99.0.2")!,
                metrics: GatewayMetrics(factory: self.metrics).route("dc1"),
                logger: Logger(label: "test"),
                audit: audit,
                denials: self.denials
            )
            self.client = EmbeddedChannel(loop: self.loop)
            self.server = EmbeddedChannel(loop: self.loop)
            let counter = NIOLockedBoxCount()
            self.closed = counter
            let server = self.server
            let connection = ProxyConnection(
                id: 1,
                route: self.route,
                listener: listener,
                machine: ConnectionStateMachine(
                    role: listener == .epm ? .endpointMapper : .mapped,
                    policy: policy,
                    client: IPAddress("10.1.2.3")!,
                    limits: WireLimits(),
                    server: TCPEndpoint(address: IPv4Address("10.99.0.2")!, port: 135)
                ),
                clientAddress: clientAddress,
                localAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 50000),
                clientFacingAddress: IPv4Address("127.0.0.1"),
                eventLoop: self.loop,
                timeouts: Timeouts(),
                connector: { _, _, loop in loop.makeSucceededFuture(server) },
                onClose: { counter.increment() }
            )
            self.connection = connection
            let (handler, spliced) = connection.start()
            try self.client.pipeline.syncOperations.addHandler(handler)
            try spliced.wait()
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
            try self.client.connect(to: address).wait()
            try self.server.connect(to: address).wait()
        }

        /// Writes bytes as the client, in `chunks`-byte pieces (drip-feeding exercises the framer).
        func clientWrites(_ pdu: RawPDU, chunk: Int = 7) throws {
            var bytes = pdu.bytes
            while let piece = bytes.readSlice(length: min(chunk, bytes.readableBytes)), piece.readableBytes > 0 {
                try self.client.writeInbound(piece)
            }
            self.client.pipeline.fireChannelReadComplete()
        }

        func serverWrites(_ pdu: RawPDU) throws {
            try self.server.writeInbound(pdu.bytes)
            self.server.pipeline.fireChannelReadComplete()
        }

        func drain(_ channel: EmbeddedChannel) throws -> ByteBuffer {
            var all = ByteBuffer()
            while var piece = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&piece) }
            return all
        }
    }

    static let samrOnly = Policy(
        name: "p",
        defaultAction: .deny,
        rules: [
            PolicyRule(action: .allow, interfaces: [InterfaceMatcher(parsing: "samr")!], origin: RuleOrigin(index: 0))
        ]
    )

    @Test func allowedBindReachesTheServerUnchangedAndTheAckComesBack() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        let bind = Wire.bind([Wire.samr], auth: Wire.ntlm(.integrity))
        try harness.clientWrites(bind)
        #expect(try harness.drain(harness.server) == bind.bytes)
        #expect(try harness.drain(harness.client).readableBytes == 0)
        let ack = Wire.bindAck(accepting: 1)
        try harness.serverWrites(ack)
        #expect(try harness.drain(harness.client) == ack.bytes)
        let request = Wire.request(callID: 2, opnum: 0, auth: Wire.ntlm(.integrity))
        try harness.clientWrites(request, chunk: 1)
        #expect(try harness.drain(harness.server) == request.bytes)
        let binds = try harness.metrics.expectCounter(
            "rpcgate_binds_total",
            [("route", "dc1"), ("interface", "samr"), ("decision", "allow")]
        )
        #expect(binds.lastValue == 1)
    }

    @Test func deniedBindNeverReachesTheServer() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        try harness.clientWrites(Wire.bind([Wire.drsuapi], callID: 5))
        #expect(try harness.drain(harness.server).readableBytes == 0, "the server must not see a denied bind")
        let answer = try #require(Wire.parse(try harness.drain(harness.client)))
        #expect(answer.packetType == .bindAck)
        #expect(answer.header.callID == 5)
        let denied = try harness.metrics.expectCounter(
            "rpcgate_binds_total",
            [("route", "dc1"), ("interface", "drsuapi"), ("decision", "deny")]
        )
        #expect(denied.lastValue == 1)
        #expect(harness.client.isActive, "a refused bind leaves the connection open for another bind")
    }

    @Test func refusalsAndTheConnectionAreShownOnTheStatusPage() throws {
        let policy = Policy(
            name: "dc",
            defaultAction: .deny,
            rules: [
                PolicyRule(
                    action: .deny,
                    interfaces: [InterfaceMatcher(parsing: "samr")!],
                    opnums: OpnumSet([5...5]),
                    origin: RuleOrigin(index: 0, profile: "no-samr-5")
                ),
                PolicyRule(
                    action: .allow,
                    interfaces: [InterfaceMatcher(parsing: "samr")!],
                    origin: RuleOrigin(index: 1)
                ),
            ]
        )
        let client = try SocketAddress(ipAddress: "10.1.2.3", port: 50123)
        let harness = try Harness(listener: .mapped, policy: policy, clientAddress: client)
        let fresh = harness.connection.snapshot()
        #expect(fresh.interfaces.isEmpty && !fresh.callInFlight && fresh.bytesFromClient == 0)
        #expect(fresh.gatewayPort == 50000 && fresh.client == "10.1.2.3:50123" && fresh.route == "dc1")

        // Unauthenticated, so the refused call leaves the connection open (a signed session
        // would be closed after the fault).
        try harness.clientWrites(Wire.bind([Wire.drsuapi], callID: 1))
        try harness.clientWrites(Wire.bind([Wire.samr], callID: 2))
        try harness.serverWrites(Wire.bindAck(callID: 2, accepting: 1))
        try harness.clientWrites(Wire.request(callID: 3, opnum: 5))
        try harness.clientWrites(Wire.request(callID: 4, opnum: 0))

        // Newest first: the refused call, then the refused bind. The allowed ones are not kept.
        let (denials, total) = harness.denials.snapshot
        #expect(total == 2)
        #expect(denials.map(\.event) == [.call, .bind])
        #expect(denials.map(\.interfaceName) == ["samr", "drsuapi"])
        #expect(denials.map(\.opnum) == [5, nil])
        #expect(denials.map(\.ruleDescription) == ["rule 0 (profile no-samr-5)", "default"])
        #expect(denials.map(\.clientText) == ["10.1.2.3:50123", "10.1.2.3:50123"])
        #expect(denials.allSatisfy { $0.route == "dc1" && $0.policy == "dc" && $0.decision.action == .deny })
        #expect(denials.first?.authLevel == AuthLevel.none)

        // The call with opnum 0 went to the server and has no answer yet.
        let busy = harness.connection.snapshot()
        #expect(busy.interfaces == [InterfaceCatalog.named("samr")!.syntax])
        #expect(busy.callInFlight)
        #expect(busy.authLevel == AuthLevel.none)
        #expect(busy.bytesFromClient > 0 && busy.bytesFromServer > 0)
    }

    @Test func decisionsAreAudited() async throws {
        let sink = GatedAuditSink(open: true)
        let audit = AuditLog(sink: sink, logger: Logger(label: "test"))
        let policy = Policy(
            name: "dc",
            defaultAction: .deny,
            rules: [
                PolicyRule(
                    action: .deny,
                    interfaces: [InterfaceMatcher(parsing: "samr")!],
                    opnums: OpnumSet([5...5]),
                    origin: RuleOrigin(index: 0, profile: "no-samr-5")
                ),
                PolicyRule(
                    action: .audit,
                    interfaces: [InterfaceMatcher(parsing: "samr")!],
                    opnums: OpnumSet([6...6]),
                    origin: RuleOrigin(index: 1)
                ),
                PolicyRule(
                    action: .allow,
                    interfaces: [InterfaceMatcher(parsing: "samr")!],
                    origin: RuleOrigin(index: 2)
                ),
            ]
        )
        let client = try SocketAddress(ipAddress: "10.1.2.3", port: 50123)
        let harness = try Harness(listener: .mapped, policy: policy, audit: audit, clientAddress: client)
        try harness.clientWrites(Wire.bind([Wire.drsuapi], callID: 1))
        try harness.clientWrites(Wire.bind([Wire.samr], callID: 2, auth: Wire.ntlm(.integrity)))
        try harness.serverWrites(Wire.bindAck(callID: 2, accepting: 1))
        try harness.clientWrites(Wire.request(callID: 3, opnum: 0, auth: Wire.ntlm(.integrity)))
        // The audited call first: a call refused on a signed or sealed session ends the connection.
        try harness.clientWrites(Wire.request(callID: 4, opnum: 6))
        try harness.clientWrites(Wire.request(callID: 5, opnum: 5, auth: Wire.ntlm(.privacy)))
        await audit.shutdown()

        let lines = try sink.lines.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
        // drsuapi bind (deny by default); samr bind (an audit rule with opnums also matches the
        // bind: rule 1); opnum 6 (audit, rule 1); opnum 5 (deny, rule 0). The allowed call (opnum 0)
        // is not audited.
        try #require(lines.count == 4)
        #expect(lines.map { $0["event.action"] as? String } == ["bind", "bind", "call", "call"])
        #expect(lines.map { $0["rpc.interface"] as? String } == ["drsuapi", "samr", "samr", "samr"])
        #expect(lines.map { $0["rpc.decision"] as? String } == ["deny", "audit", "audit", "deny"])
        #expect(lines.map { $0["event.outcome"] as? String } == ["failure", "success", "success", "failure"])
        #expect(lines.map { $0["rule.id"] as? Int } == [nil, 1, 1, 0])
        #expect(lines[0]["rule.id"] is NSNull)
        #expect(lines.map { $0["rpc.opnum"] as? Int } == [nil, nil, 6, 5])
        #expect(lines.map { $0["rpc.auth_level"] as? String } == ["none", "integrity", "integrity", "privacy"])
        #expect(lines.map { $0["rpc.auth_type"] as? String } == ["none", "ntlm", "ntlm", "ntlm"])
        #expect(lines[3]["rule.category"] as? String == "no-samr-5")
        for line in lines {
            #expect(line["rpc.route"] as? String == "dc1")
            #expect(line["rule.ruleset"] as? String == "dc")
            #expect(line["source.ip"] as? String == "10.1.2.3")
            #expect(line["source.port"] as? Int == 50123)
            #expect(line["destination.ip"] as? String == "10.99.0.2")
            #expect(line["destination.port"] as? Int == 135)
            #expect(line["rpc.listener"] as? String == "mapped")
            #expect((line["@timestamp"] as? String)?.hasSuffix("Z") == true)
        }
        #expect(lines[1]["rpc.interface_uuid"] as? String == "12345778-1234-abcd-ef00-0123456789ac")
        #expect(lines[1]["rpc.interface_version"] as? String == "1.0")
    }

    @Test func requestOnUnknownContextIsFaultedAndBothSidesClose() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        try harness.clientWrites(Wire.request(callID: 1, opnum: 0))
        let answer = try #require(Wire.parse(try harness.drain(harness.client)))
        #expect(answer.packetType == .fault)
        harness.loop.run()
        #expect(!harness.client.isActive)
        #expect(!harness.server.isActive)
        #expect(try harness.drain(harness.server).readableBytes == 0)
        #expect(harness.closed.value == 1)
    }

    @Test func malformedPDUClosesTheConnectionAndIsCounted() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        // frag_length 15 can never be a PDU.
        #expect(harness.server.isActive)
        _ = try? harness.client.writeInbound(ByteBuffer(bytes: [5, 0, 11, 3, 0x10, 0, 0, 0, 15, 0, 0, 0, 1, 0, 0, 0]))
        harness.loop.run()
        #expect(!harness.client.isActive)
        #expect(!harness.server.isActive)
        let errors = try harness.metrics.expectCounter(
            "rpcgate_pdu_errors_total",
            [("route", "dc1"), ("reason", "fragment_too_short")]
        )
        #expect(errors.lastValue == 1)
    }

    @Test func bindTimeoutClosesBothSidesAndIsCountedByReason() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        // Half a bind, then nothing (the half-open client of the adversarial suite).
        let bind = Wire.bind([Wire.samr])
        try harness.client.writeInbound(bind.bytes.getSlice(at: bind.bytes.readerIndex, length: 30)!)
        harness.loop.advanceTime(by: .seconds(11))
        #expect(!harness.client.isActive)
        #expect(!harness.server.isActive)
        #expect(try harness.drain(harness.server).readableBytes == 0)
        let closed = try harness.metrics.expectCounter(
            "rpcgate_connections_closed_total",
            [("route", "dc1"), ("reason", "bind_timeout")]
        )
        #expect(closed.lastValue == 1)
    }

    @Test("The idle timeout counts from the last read on either side, on the event loop's clock")
    func idleTimeoutFollowsActivity() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        let idle = TimeAmount(Timeouts().idleDuration)
        try harness.clientWrites(Wire.bind([Wire.samr]))
        try harness.serverWrites(Wire.bindAck(accepting: 1))
        try harness.clientWrites(Wire.request(callID: 2, opnum: 0))
        // Activity from the server just before the deadline postpones it by a whole timeout...
        harness.loop.advanceTime(by: idle - .seconds(10))
        try harness.serverWrites(Wire.response(callID: 2, stub: ByteBuffer(bytes: [0, 0, 0, 0])))
        harness.loop.advanceTime(by: .seconds(20))
        #expect(harness.client.isActive, "a read 20 s ago: not idle")
        // ... and from the client too.
        harness.loop.advanceTime(by: idle - .seconds(30))
        try harness.clientWrites(Wire.request(callID: 3, opnum: 0))
        harness.loop.advanceTime(by: idle - .seconds(1))
        #expect(harness.client.isActive)
        #expect(harness.closed.value == 0)
        harness.loop.advanceTime(by: .seconds(2))
        #expect(!harness.client.isActive)
        #expect(!harness.server.isActive)
        #expect(harness.closed.value == 1)
        let closed = try harness.metrics.expectCounter(
            "rpcgate_connections_closed_total",
            [("route", "dc1"), ("reason", "idle_timeout")]
        )
        #expect(closed.lastValue == 1)
    }

    @Test func upstreamResetClosesTheClientAndIsCountedAsAServerError() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        try harness.clientWrites(Wire.bind([Wire.samr]))
        try harness.serverWrites(Wire.bindAck(accepting: 1))
        harness.server.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        harness.loop.run()
        #expect(!harness.client.isActive)
        #expect(harness.closed.value == 1)
        let closed = try harness.metrics.expectCounter(
            "rpcgate_connections_closed_total",
            [("route", "dc1"), ("reason", "server_error")]
        )
        #expect(closed.lastValue == 1)
    }

    /// A fragment of call 3 inside the fragmented call 2 never reaches the server.
    @Test func interleavedRequestFragmentIsNotForwarded() throws {
        let harness = try Harness(listener: .mapped, policy: Self.samrOnly)
        try harness.clientWrites(Wire.bind([Wire.samr]))
        try harness.serverWrites(Wire.bindAck(accepting: 1))
        _ = try harness.drain(harness.server)
        let first = Wire.request(callID: 2, opnum: 1, flags: .firstFragment)
        try harness.clientWrites(first)
        #expect(try harness.drain(harness.server) == first.bytes)
        try harness.clientWrites(Wire.request(callID: 3, opnum: 1, flags: .lastFragment))
        harness.loop.run()
        #expect(try harness.drain(harness.server).readableBytes == 0)
        #expect(!harness.client.isActive)
        let errors = try harness.metrics.expectCounter(
            "rpcgate_pdu_errors_total",
            [("route", "dc1"), ("reason", "fragment_sequence")]
        )
        #expect(errors.lastValue == 1)
    }

    @Test func endpointMapperReplyIsRewrittenIntoTheRange() throws {
        let harness = try Harness(listener: .epm, policy: Self.samrOnly)
        try harness.clientWrites(Wire.bind([SyntaxID.endpointMapper]))
        _ = try harness.drain(harness.server)
        try harness.serverWrites(Wire.bindAck(accepting: 1))
        _ = try harness.drain(harness.client)

        let ask = ProtocolTower.ncacnIPTCP(interface: Wire.samr, endpoint: TCPEndpoint(address: .any, port: 135))
        var stub = ByteBuffer()
        stub.writeEPMMapRequest(
            EPMMapRequest(object: nil, tower: ask, entryHandle: .null, maxTowers: 1),
            syntax: .ndr32
        )
        try harness.clientWrites(Wire.request(callID: 2, opnum: 3, stub: stub))
        #expect(try harness.drain(harness.server).readableBytes > 0)

        let real = ProtocolTower.ncacnIPTCP(interface: Wire.samr, endpoint: TCPEndpoint(address: .any, port: 49154))
        var reply = ByteBuffer()
        reply.writeEPMMapResponse(
            EPMMapResponse(entryHandle: .null, maxTowers: 1, towers: [real], status: RPCStatus(rawValue: 0)),
            syntax: .ndr32
        )
        try harness.serverWrites(Wire.response(callID: 2, stub: reply))
        let rewritten = try #require(Wire.parse(try harness.drain(harness.client)))
        guard case .response(var response) = rewritten.body else {
            Issue.record("expected a response")
            return
        }
        let map = try response.stub.readEPMMapResponse(syntax: .ndr32)
        let tower = try #require(map.towers.first ?? nil)
        #expect(tower.tcpPort == 50000)
        #expect(tower.ipv4Address == IPv4Address("192.0.2.10"))
        #expect(
            harness.route.pool.server(forPort: 50000) == TCPEndpoint(address: IPv4Address("10.99.0.2")!, port: 49154)
        )
        let rewrittenCount = try harness.metrics.expectCounter("rpcgate_epm_towers_rewritten_total", [("route", "dc1")])
        #expect(rewrittenCount.lastValue == 1)
    }

    @Test func endpointMapperAnswersNotRegisteredWhenThePoolIsFull() throws {
        let harness = try Harness(listener: .epm, policy: Policy(name: "all", defaultAction: .allow, rules: []))
        // Fill both ports of the range with other endpoints.
        _ = harness.route.pool.allocate(for: TCPEndpoint(address: IPv4Address("10.99.0.2")!, port: 1))
        _ = harness.route.pool.allocate(for: TCPEndpoint(address: IPv4Address("10.99.0.2")!, port: 2))
        _ = harness.route.pool.connectionOpened(port: 50000)
        _ = harness.route.pool.connectionOpened(port: 50001)
        try harness.clientWrites(Wire.bind([SyntaxID.endpointMapper]))
        try harness.serverWrites(Wire.bindAck(accepting: 1))
        _ = try harness.drain(harness.client)
        let ask = ProtocolTower.ncacnIPTCP(interface: Wire.samr, endpoint: TCPEndpoint(address: .any, port: 135))
        var stub = ByteBuffer()
        stub.writeEPMMapRequest(
            EPMMapRequest(object: nil, tower: ask, entryHandle: .null, maxTowers: 1),
            syntax: .ndr32
        )
        try harness.clientWrites(Wire.request(callID: 2, opnum: 3, stub: stub))
        var reply = ByteBuffer()
        let real = ProtocolTower.ncacnIPTCP(interface: Wire.samr, endpoint: TCPEndpoint(address: .any, port: 49154))
        reply.writeEPMMapResponse(
            EPMMapResponse(entryHandle: .null, maxTowers: 1, towers: [real], status: RPCStatus(rawValue: 0)),
            syntax: .ndr32
        )
        try harness.serverWrites(Wire.response(callID: 2, stub: reply))
        let answer = try #require(Wire.parse(try harness.drain(harness.client)))
        guard case .response(var response) = answer.body else {
            Issue.record("expected a response")
            return
        }
        #expect(try response.stub.readEPMMapResponse(syntax: .ndr32).status == .endpointNotRegistered)
        let exhausted = try harness.metrics.expectCounter("rpcgate_port_pool_exhausted_total", [("route", "dc1")])
        #expect((exhausted.lastValue ?? 0) >= 1)
    }
}

/// A counter the connection's close callback (which must be `@Sendable`) can bump.
final class NIOLockedBoxCount: @unchecked Sendable {
    private var count = 0
    func increment() { self.count += 1 }
    var value: Int { self.count }
}

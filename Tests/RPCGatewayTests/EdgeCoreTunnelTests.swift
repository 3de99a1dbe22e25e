import Foundation
import Logging
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

struct PKIError: Error {}

/// An edge and a core gateway in one process on loopback, with certificates from
/// `deploy/tls/make-test-ca.sh` and a fake endpoint mapper as the server.
@Suite("Edge and core over mutual TLS", .serialized)
struct EdgeCoreTunnelTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The test PKI, made once per run off the cooperative pool (openssl via the shipped script):
    /// blocking a cooperative thread would delay other suites' timers on a 2-core machine.
    static let sharedPKI = Task {
        try await NIOThreadPool.singleton.runIfActive { try EdgeCoreTunnelTests.makePKIBlocking() }
    }

    static func makePKI() async throws -> String {
        try await Self.sharedPKI.value
    }

    static func makePKIBlocking() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "rpcgate-pki-\(UUID().uuidString)"
        ).path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.repository.appendingPathComponent("deploy/tls/make-test-ca.sh").path, directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw PKIError() }
        return directory
    }

    static let policy = Policy(
        name: "dc",
        defaultAction: .deny,
        rules: [
            PolicyRule(
                action: .allow,
                interfaces: ["epmapper", "samr", "lsarpc"].map { InterfaceMatcher(parsing: $0)! },
                sources: [IPNetwork("127.0.0.0/8")!],
                origin: RuleOrigin(index: 0)
            )
        ]
    )

    struct Pair {
        let core: GatewayServer
        let edge: GatewayServer
        let server: FakeEndpointMapper
        let metrics: TestMetrics
        let edgeEPMPort: Int
        let edgePorts: ClosedRange<UInt16>

        func stop() async {
            await self.edge.stop()
            await self.core.stop()
            await self.server.close()
        }
    }

    static func start(pki: String, edgeCertificate: String = "edge", ports: ClosedRange<UInt16>) async throws -> Pair {
        let metrics = TestMetrics()
        let server = try await FakeEndpointMapper(.pages([EndpointMapperClientTests.page2]))
        let logger = Logger(label: "test.tunnel")
        let core = GatewayServer(
            settings: GatewaySettings(
                routes: [],
                core: CoreSettings(
                    listenHost: "127.0.0.1",
                    listenPort: 0,
                    tls: TLSFiles(
                        certificate: "\(pki)/core.pem",
                        privateKey: "\(pki)/core.key",
                        certificateAuthority: "\(pki)/ca.pem"
                    ),
                    allowedPeers: ["edge1.example.test", "spiffe://example.test/edge1"],
                    upstreams: [IPv4Address(127, 0, 0, 1)],
                    policy: Self.policy,
                    upstreamEPMPort: UInt16(server.port),
                    headerTimeout: .seconds(2)
                )
            ),
            group: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            metrics: GatewayMetrics(factory: metrics)
        )
        try await core.start()
        let corePort = try #require(core.coreAddress?.port)
        var route = RouteSettings(
            name: "dc1",
            listenAddress: "127.0.0.1",
            epmPort: 0,
            upstreamHost: "127.0.0.1",
            upstreamEPMPort: UInt16(server.port),
            ports: ports,
            policy: Self.policy
        )
        route.via = "core1"
        let edge = GatewayServer(
            settings: GatewaySettings(
                routes: [route],
                peers: [
                    "core1": PeerSettings(
                        name: "core1",
                        host: "127.0.0.1",
                        port: corePort,
                        tls: TLSFiles(
                            certificate: "\(pki)/\(edgeCertificate).pem",
                            privateKey: "\(pki)/\(edgeCertificate).key",
                            certificateAuthority: "\(pki)/ca.pem"
                        ),
                        serverName: "core1.example.test"
                    )
                ]
            ),
            group: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            metrics: GatewayMetrics(factory: metrics)
        )
        try await edge.start()
        let epm = try #require(edge.endpointMapperAddresses["dc1"]?.port)
        return Pair(core: core, edge: edge, server: server, metrics: metrics, edgeEPMPort: epm, edgePorts: ports)
    }

    static func handshakes(_ metrics: TestMetrics, peer: String, result: String) -> Int64 {
        (try? metrics.expectCounter("rpcgate_tls_handshakes_total", [("peer", peer), ("result", result)]).totalValue)
            ?? 0
    }

    static func lookUp(_ port: Int) async throws -> EndpointMapperClient.Listing {
        try await EndpointMapperClient(
            configuration: EndpointMapperClient.Configuration(timeout: .seconds(5), maximumPages: 3)
        )
        .lookUpAll(host: "127.0.0.1", port: port, group: MultiThreadedEventLoopGroup.singleton)
    }

    @Test("ept_lookup through edge and core: the edge rewrites the server's ports to its own")
    func lookupThroughTheTunnel() async throws {
        let pki = try await Self.makePKI()
        let pair = try await Self.start(pki: pki, ports: 28_410...28_413)
        defer { Task { await pair.stop() } }

        let listing = try await Self.lookUp(pair.edgeEPMPort)
        #expect(listing.entries.count == 2)
        let ports = listing.entries.compactMap { $0.tower?.tcpPort }
        #expect(ports.count == 2)
        // epmapper (server port 135, not the route's EPM port here) and samr 49999: both mapped.
        #expect(ports.allSatisfy { pair.edgePorts.contains($0) })
        #expect(Self.handshakes(pair.metrics, peer: "core1", result: "success") >= 1)
        #expect(Self.handshakes(pair.metrics, peer: "edge1.example.test", result: "success") >= 1)
        #expect(pair.server.requests.withLockedValue { $0.count } >= 1)
    }

    @Test(
        "A core refuses an edge certificate from another CA, or with a SAN not allowed",
        arguments: [
            ("rogue", "bad_certificate"), ("stranger", "peer_not_allowed"),
        ]
    )
    func refusedEdges(certificate: String, result: String) async throws {
        let pki = try await Self.makePKI()
        let pair = try await Self.start(
            pki: pki,
            edgeCertificate: certificate,
            ports: certificate == "rogue" ? 28_420...28_423 : 28_425...28_428
        )
        defer { Task { await pair.stop() } }

        await #expect(throws: (any Error).self) { _ = try await Self.lookUp(pair.edgeEPMPort) }
        // The core counts after its side of the handshake: wait (bounded) for it.
        for _ in 0..<40 where Self.handshakes(pair.metrics, peer: "unknown", result: result) == 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(Self.handshakes(pair.metrics, peer: "unknown", result: result) == 1)
        #expect(pair.server.requests.withLockedValue { $0.isEmpty })
    }

    @Test("Plain TCP to the core's TLS port is refused and counted")
    func plainTCP() async throws {
        let pki = try await Self.makePKI()
        let pair = try await Self.start(pki: pki, ports: 28_430...28_433)
        defer { Task { await pair.stop() } }
        let corePort = try #require(pair.core.coreAddress?.port)

        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: corePort).get()
        // The start of a DCE/RPC bind (version 5.0, type 11, little endian, frag_length 72).
        let bind = ByteBuffer(
            bytes: [0x05, 0x00, 0x0B, 0x03, 0x10, 0, 0, 0, 0x48, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 56)
        )
        try await channel.writeAndFlush(bind)
        // The core closes the connection: wait (bounded) for it.
        for _ in 0..<40 where channel.isActive {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(!channel.isActive)
        try? await channel.close()
        #expect(Self.handshakes(pair.metrics, peer: "unknown", result: "not_tls") == 1)
        #expect(pair.server.requests.withLockedValue { $0.isEmpty })
    }

    /// A TLS connection to the core with the edge's certificate that sends `bytes`; returns once
    /// the core has closed it (bounded).
    static func sendOverTLS(_ bytes: ByteBuffer, pki: String, port: Int) async throws -> Bool {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file("\(pki)/ca.pem")
        configuration.certificateChain = try NIOSSLCertificate.fromPEMFile("\(pki)/edge.pem").map { .certificate($0) }
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: "\(pki)/edge.key", format: .pem))
        let context = try NIOSSLContext(configuration: configuration)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: context, serverHostname: "core1.example.test")
                    )
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(bytes)
        for _ in 0..<60 where channel.isActive {
            try await Task.sleep(for: .milliseconds(50))
        }
        let closed = !channel.isActive
        try? await channel.close()
        return closed
    }

    static func refused(_ metrics: TestMetrics, _ reason: String) -> Int64 {
        (try? metrics.expectCounter("rpcgate_connections_refused_total", [("route", "core"), ("reason", reason)])
            .totalValue)
            ?? 0
    }

    @Test("The core refuses a PROXY header naming a server outside core.upstreams, and a missing header")
    func neverAnOpenRelay() async throws {
        let pki = try await Self.makePKI()
        let pair = try await Self.start(pki: pki, ports: 28_440...28_443)
        defer { Task { await pair.stop() } }
        let corePort = try #require(pair.core.coreAddress?.port)

        var header = ByteBuffer()
        header.writeProxyHeader(
            ProxyHeader(
                addresses: .tcp4(
                    source: IPv4Address(127, 0, 0, 1),
                    sourcePort: 40_000,
                    destination: IPv4Address(127, 0, 0, 1),
                    destinationPort: 135
                ),
                tlvs: [
                    RPCGateTarget(kind: .mapped, server: TCPEndpoint(address: IPv4Address(192, 0, 2, 99), port: 445))
                        .tlv
                ]
            )
        )
        #expect(try await Self.sendOverTLS(header, pki: pki, port: corePort))
        #expect(Self.refused(pair.metrics, "target_not_allowed") == 1)

        // A DCE/RPC bind where the header should be.
        let bind = ByteBuffer(bytes: [0x05, 0x00, 0x0B, 0x03, 0x10, 0, 0, 0, 0x48, 0, 0, 0, 1, 0, 0, 0])
        #expect(try await Self.sendOverTLS(bind, pki: pki, port: corePort))
        #expect(Self.refused(pair.metrics, "proxy_header") == 1)
        #expect(pair.server.requests.withLockedValue { $0.isEmpty })
    }

    /// Counts the bytes a channel receives.
    final class ByteCounter: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = NIOLockedValueBox(0)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Self.unwrapInboundIn(data).readableBytes
            self.received.withLockedValue { $0 += bytes }
        }
    }

    @Test("Reload swaps the core's TLS context for new connections; established tunnels stay up")
    func reloadKeepsEstablishedConnections() async throws {
        let pki = try await Self.makePKI()
        let pair = try await Self.start(pki: pki, ports: 28_450...28_453)
        defer { Task { await pair.stop() } }
        let corePort = try #require(pair.core.coreAddress?.port)

        // An established tunnel: TLS with the edge certificate, PROXY header, bind, bind_ack.
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file("\(pki)/ca.pem")
        configuration.certificateChain = try NIOSSLCertificate.fromPEMFile("\(pki)/edge.pem").map { .certificate($0) }
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: "\(pki)/edge.key", format: .pem))
        let context = try NIOSSLContext(configuration: configuration)
        let counter = ByteCounter()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        NIOSSLClientHandler(context: context, serverHostname: "core1.example.test"),
                        counter
                    )
                }
            }
            .connect(host: "127.0.0.1", port: corePort).get()
        var bytes = ByteBuffer()
        bytes.writeProxyHeader(
            ProxyHeader(
                addresses: .tcp4(
                    source: IPv4Address(127, 0, 0, 1),
                    sourcePort: 40_001,
                    destination: IPv4Address(127, 0, 0, 1),
                    destinationPort: 135
                ),
                tlvs: [
                    RPCGateTarget(
                        kind: .endpointMapper,
                        server: TCPEndpoint(address: IPv4Address(127, 0, 0, 1), port: UInt16(pair.server.port))
                    ).tlv
                ]
            )
        )
        var bind = Wire.bind([SyntaxID.endpointMapper]).bytes
        bytes.writeBuffer(&bind)
        try await channel.writeAndFlush(bytes)
        for _ in 0..<60 where counter.received.withLockedValue({ $0 }) == 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(counter.received.withLockedValue { $0 } > 0)

        // Reload with a CA that does not sign the edge: new tunnels fail, the established one stays.
        var settings = pair.core.settings
        settings.core?.tls.certificateAuthority = "\(pki)/rogue-ca.pem"
        try await pair.core.apply(settings)
        await #expect(throws: (any Error).self) { _ = try await Self.lookUp(pair.edgeEPMPort) }
        for _ in 0..<40 where Self.handshakes(pair.metrics, peer: "unknown", result: "bad_certificate") == 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(Self.handshakes(pair.metrics, peer: "unknown", result: "bad_certificate") == 1)
        #expect(channel.isActive)
        try? await channel.close()

        // A reload whose files cannot be loaded changes nothing.
        var broken = settings
        broken.core?.tls.certificate = "\(pki)/missing.pem"
        await #expect(throws: (any Error).self) { try await pair.core.apply(broken) }
        #expect(pair.core.coreAddress != nil)
    }
}

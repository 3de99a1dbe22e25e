import Logging
import NIOCore
import NIOEmbedded
import RPCGateway
import RPCPolicy
import RPCWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The whole per-connection pipeline (framers, glue handlers, ``RPCConnectionStateMachine``,
/// endpoint-mapper rewriting, port pool, timers) in two `EmbeddedChannel`s on one
/// `EmbeddedEventLoop`, fed fuzz bytes from both sides.
///
/// Input format:
/// - byte 0 selects the set-up: bit 0 the listener (0 mapped port, 1 endpoint mapper), bit 1 the
///   policy (0 with an opnum rule, so requests are inspected; 1 interface rules only), bit 2
///   `advertise`, bit 3 small wire limits (so limit paths are reached with short inputs), bit 4
///   `port_mapping: preserve` (signed and sealed endpoint-mapper lookups pass unchanged), bit 5
///   first-bind routing from the connection's first byte instead (``RoutingHarness``, its own
///   input format; bit 6 there: the gateway port names a preferred server);
/// - then chunks `[op: u8][n: u16 little-endian][data]`, at most ``maximumSteps``. `op % 8`:
///   0-2 `n` bytes (or what is left) from the client, 3-5 from the server, 6 advances the clock
///   by `n` seconds (no data), 7 an event chosen by `n % 8`: input closed on the client /
///   server, the client / server channel closes, a connection reset on the client / server, the
///   clock jumps by the idle timeout.
///
/// Invariants checked by trapping, beyond "no trap anywhere":
/// - both directions carry whole PDUs only: what the gateway writes to each side frames exactly
///   (under the wire limits, nothing left over);
/// - every bind / alter_context the server receives names only interfaces the policy allows (on
///   the endpoint-mapper listener: only the endpoint mapper, below packet level unless preserve);
/// - requests reach the server in a valid fragment sequence (one fragmented call at a time); on
///   the endpoint-mapper listener only ept_lookup, ept_map and ept_lookup_handle_free;
/// - once both channels are closed the connection has ended exactly once.
enum GatewayHarness {
    static let maximumSteps = 512

    static let client = IPAddress("10.1.2.3") ?? .v4(0)
    static let upstream = IPv4Address(10, 99, 0, 2)

    static func matcher(_ name: String) -> [InterfaceMatcher] {
        InterfaceMatcher(parsing: name).map { [$0] } ?? []
    }

    /// Opnum-inspecting: DCSync denied, samr, lsarpc and drsuapi allowed.
    static let inspecting = Policy(
        name: "inspecting",
        defaultAction: .deny,
        rules: [
            PolicyRule(
                action: .deny,
                interfaces: matcher("drsuapi"),
                opnums: OpnumSet([3...3]),
                origin: RuleOrigin(index: 0)
            ),
            PolicyRule(
                action: .allow,
                interfaces: matcher("samr") + matcher("lsarpc") + matcher("drsuapi"),
                origin: RuleOrigin(index: 1)
            ),
        ]
    )

    /// Interface rules only: samr allowed.
    static let plain = Policy(
        name: "plain",
        defaultAction: .deny,
        rules: [PolicyRule(action: .allow, interfaces: matcher("samr"), origin: RuleOrigin(index: 0))]
    )

    static let smallLimits = WireLimits(
        maximumFragmentLength: 1024,
        maximumPresentationContexts: 4,
        maximumTransferSyntaxes: 2,
        maximumReassembledStubLength: 4096,
        maximumTowers: 8,
        maximumFloors: 6,
        maximumTowerLength: 128,
        maximumAnnotationLength: 64,
        maximumFragmentsPerCall: 8
    )

    static let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

    final class CloseCount: @unchecked Sendable {
        var value = 0
    }

    static func run(_ input: ByteBuffer) {
        var input = input
        guard let selector = input.readInteger(as: UInt8.self) else { return }
        if selector & 32 != 0 {
            RoutingHarness.run(selector: selector, input)
            return
        }
        let listener: GatewayMetrics.Listener = selector & 1 == 0 ? .mapped : .epm
        let policy = selector & 2 == 0 ? Self.inspecting : Self.plain
        let limits = selector & 8 == 0 ? WireLimits() : Self.smallLimits
        let preserve = selector & 16 != 0
        var route = RouteSettings(
            name: "fuzz",
            listenAddress: "127.0.0.1",
            epmPort: 135,
            advertiseAddress: selector & 4 == 0 ? nil : IPv4Address(192, 0, 2, 10),
            upstreamHost: "10.99.0.2",
            ports: preserve ? 49152...49155 : 50000...50003,
            policy: policy
        )
        if preserve { route.portMapping = .preserve }
        let loop = EmbeddedEventLoop()
        let client = EmbeddedChannel(loop: loop)
        let server = EmbeddedChannel(loop: loop)
        let closes = CloseCount()
        do {
            try ProxySplice.install(
                client: client,
                server: server,
                route: route,
                upstreamAddress: Self.upstream,
                listener: listener,
                clientAddress: Self.client,
                clientFacingAddress: IPv4Address(127, 0, 0, 1),
                serverEndpoint: TCPEndpoint(address: Self.upstream, port: listener == .epm ? 135 : 49154),
                wireLimits: limits,
                logger: Self.logger,
                onClose: { closes.value += 1 }
            )
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
            try client.connect(to: address).wait()
            try server.connect(to: address).wait()
        } catch {
            fatalError("cannot set up the splice: \(error)")
        }

        var toClient = ByteBuffer()
        var toServer = ByteBuffer()
        var steps = 0
        while steps < Self.maximumSteps, let op = input.readInteger(as: UInt8.self) {
            steps += 1
            let count = Int(input.readInteger(endianness: .little, as: UInt16.self) ?? 0)
            switch op % 8 {
            case 0, 1, 2:
                Self.deliver(input.readSlice(length: min(count, input.readableBytes)) ?? ByteBuffer(), to: client)
            case 3, 4, 5:
                Self.deliver(input.readSlice(length: min(count, input.readableBytes)) ?? ByteBuffer(), to: server)
            case 6:
                loop.advanceTime(by: .seconds(Int64(count)))
            default:
                let channel = count % 2 == 0 ? client : server
                switch count % 8 {
                case 0, 1:
                    channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
                case 2, 3:
                    channel.close(promise: nil)
                case 4, 5:
                    channel.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "fuzz"))
                default:
                    loop.advanceTime(by: TimeAmount(Timeouts().idleDuration))
                }
            }
            loop.run()
            Self.drain(client, into: &toClient)
            Self.drain(server, into: &toServer)
        }

        client.close(promise: nil)
        server.close(promise: nil)
        loop.run()
        Self.drain(client, into: &toClient)
        Self.drain(server, into: &toServer)
        _ = try? client.finish(acceptAlreadyClosed: true)
        _ = try? server.finish(acceptAlreadyClosed: true)
        try? loop.syncShutdownGracefully()

        guard closes.value == 1 else {
            fatalError("the connection ended \(closes.value) times")
        }
        let clientPDUs = Self.frames(toClient, limits: limits, side: "client")
        let serverPDUs = Self.frames(toServer, limits: limits, side: "server")
        _ = clientPDUs
        Self.checkWhatTheServerSaw(
            serverPDUs,
            listener: listener,
            policy: policy,
            limits: limits,
            passesProtectedLookups: preserve
        )
    }

    static func deliver(_ bytes: ByteBuffer, to channel: EmbeddedChannel) {
        // A closed channel refuses the write; that is fine.
        _ = try? channel.writeInbound(bytes)
        channel.pipeline.fireChannelReadComplete()
    }

    static func drain(_ channel: EmbeddedChannel, into all: inout ByteBuffer) {
        while case .some(.some(var piece)) = try? channel.readOutbound(as: ByteBuffer.self) {
            all.writeBuffer(&piece)
        }
    }

    /// The PDUs in what the gateway wrote to one side; traps unless it frames exactly.
    static func frames(_ bytes: ByteBuffer, limits: WireLimits, side: String) -> [RawPDU] {
        var bytes = bytes
        var pdus: [RawPDU] = []
        while bytes.readableBytes > 0 {
            let next: RawPDU?
            do {
                next = try bytes.readRawPDU(limits: limits)
            } catch {
                fatalError("the gateway wrote a malformed PDU to the \(side): \(error)")
            }
            guard let pdu = next else {
                fatalError("the gateway wrote a partial PDU (\(bytes.readableBytes) bytes) to the \(side)")
            }
            pdus.append(pdu)
        }
        return pdus
    }

    static func checkWhatTheServerSaw(
        _ pdus: [RawPDU],
        listener: GatewayMetrics.Listener,
        policy: Policy,
        limits: WireLimits,
        passesProtectedLookups: Bool
    ) {
        var openCall: UInt32?
        for raw in pdus {
            let header = raw.header
            switch header.packetType {
            case .bind, .alterContext:
                guard let pdu = try? raw.parse(limits: limits) else {
                    fatalError("a bind the gateway could not parse reached the server")
                }
                let contexts: [PresentationContext]
                switch pdu.body {
                case .bind(let body), .alterContext(let body): contexts = body.contexts
                default: contexts = []
                }
                for context in contexts where !context.isBindTimeFeatureNegotiation {
                    let interface = context.abstractSyntax
                    switch listener {
                    case .epm:
                        guard interface.uuid == SyntaxID.endpointMapper.uuid else {
                            fatalError("the endpoint-mapper listener forwarded a bind for \(interface)")
                        }
                        if !passesProtectedLookups, let level = pdu.authVerifier?.authLevel, level >= .packet {
                            fatalError("the endpoint-mapper listener forwarded a bind at \(level)")
                        }
                    case .mapped:
                        let query = PolicyQuery(interface: interface, client: Self.client, authLevel: .none)
                        guard policy.evaluate(query).permits else {
                            fatalError("a bind for \(interface), which \(policy.name) denies, reached the server")
                        }
                    }
                }
            case .request:
                let first = header.flags.contains(.firstFragment)
                if let open = openCall {
                    guard !first, header.callID == open else {
                        fatalError("call \(header.callID) reached the server inside fragmented call \(open)")
                    }
                } else {
                    guard first else {
                        fatalError("a fragment of call \(header.callID) without FIRST_FRAG reached the server")
                    }
                    if listener == .epm {
                        let opnum = raw.requestHeader?.opnum
                        guard let opnum, [2, 3, 4].contains(opnum) else {
                            fatalError("endpoint-mapper opnum \(opnum.map { "\($0)" } ?? "?") reached the server")
                        }
                    }
                }
                openCall = header.flags.contains(.lastFragment) ? nil : header.callID
            case .orphaned:
                if header.callID == openCall { openCall = nil }
            default:
                break
            }
        }
    }
}

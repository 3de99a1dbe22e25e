import NIOCore
import RPCGateway
import RPCPolicy
import RPCWire

/// First-bind routing (a single-port route, or a mapped port this instance did not hand out):
/// ``ConnectionStateMachine`` from its first client byte, with the runtime's answers (where the
/// endpoint mapper places the interface, the upstream connect, the endpoints known for an
/// alter_context) chosen by the input. ``GatewayHarness`` starts every connection already spliced,
/// so this is the part of the machine it cannot reach (docs/SECURITY.md, "Fuzzing").
///
/// Input after the selector byte: chunks `[op: u8][n: u16 little-endian][data]`, at most
/// ``GatewayHarness/maximumSteps``. `op % 8`: 0-2 `n` bytes (or what is left) from the client,
/// 3-4 from the server, 5 the resolution the machine asked for (`n % 4`: a port `n`, not
/// registered, unreachable, a port of another endpoint), 6 the upstream connected, 7 the endpoints
/// known for an alter_context (`n % 3`: this connection's port, another one, not known).
///
/// Invariants checked by trapping:
/// - nothing is forwarded to the server before the upstream connected, and every bind that is
///   forwarded names only interfaces the policy allows (``GatewayHarness/checkWhatTheServerSaw``);
/// - the machine connects only to the route's server host: a hostile endpoint-mapper answer
///   chooses a port, never an address;
/// - it asks the runtime only one thing at a time.
enum RoutingHarness {
    static let mapper = TCPEndpoint(address: GatewayHarness.upstream, port: 135)

    static func run(selector: UInt8, _ input: ByteBuffer) {
        var input = input
        let policy = selector & 2 == 0 ? GatewayHarness.inspecting : GatewayHarness.plain
        let limits = selector & 8 == 0 ? WireLimits() : GatewayHarness.smallLimits
        // A route whose gateway port names its server (a port handed out by another replica).
        let routing = FirstBindRouting(
            mapper: Self.mapper,
            preferred: selector & 64 != 0 ? TCPEndpoint(address: GatewayHarness.upstream, port: 49_154) : nil
        )
        var machine = ConnectionStateMachine(
            routing: routing,
            policy: policy,
            client: GatewayHarness.client,
            limits: limits
        )

        enum Waiting { case nothing, resolution, connect, endpoints }
        var waiting = Waiting.nothing
        var connected = false
        var closed = false
        var toServer: [RawPDU] = []
        var fromClient = PDUStream(limits: limits)
        var fromServer = PDUStream(limits: limits)
        var heldByTheClient: [RawPDU] = []

        func execute(_ action: ConnectionStateMachine.ClientAction, for raw: RawPDU?) {
            switch action {
            case .forward:
                guard connected, let raw else { fatalError("a client PDU was forwarded before the upstream connected") }
                toServer.append(raw)
            case .forwardHeld(let pdus):
                guard connected else { fatalError("held PDUs were forwarded before the upstream connected") }
                toServer.append(contentsOf: pdus)
            case .hold, .drop, .respond:
                break
            case .respondAndClose, .close, .refuse:
                closed = true
            case .resolve(_, let at):
                guard waiting == .nothing, at == Self.mapper else {
                    fatalError("resolve at \(at) while waiting for \(waiting)")
                }
                waiting = .resolution
            case .connect(let server):
                guard waiting == .nothing || waiting == .resolution, !connected else {
                    fatalError("connect while waiting for \(waiting), connected \(connected)")
                }
                guard server.address == GatewayHarness.upstream else {
                    fatalError("routing chose a server on another host: \(server)")
                }
                waiting = .connect
            case .checkEndpoints:
                guard connected else { fatalError("endpoints checked before the upstream connected") }
                waiting = .endpoints
            }
        }

        var steps = 0
        while steps < GatewayHarness.maximumSteps, !closed, let op = input.readInteger(as: UInt8.self) {
            steps += 1
            let count = Int(input.readInteger(endianness: .little, as: UInt16.self) ?? 0)
            switch op % 8 {
            case 0, 1, 2:
                let bytes = input.readSlice(length: min(count, input.readableBytes)) ?? ByteBuffer()
                do {
                    fromClient.append(bytes)
                    while let raw = try fromClient.nextPDU() { heldByTheClient.append(raw) }
                } catch {
                    closed = true
                }
            case 3, 4:
                guard connected, machine.isSpliced else { continue }
                let bytes = input.readSlice(length: min(count, input.readableBytes)) ?? ByteBuffer()
                do {
                    fromServer.append(bytes)
                    while !closed, let raw = try fromServer.nextPDU() {
                        switch machine.serverSent(raw) {
                        case .close: closed = true
                        default: break
                        }
                    }
                } catch {
                    closed = true
                }
            case 5:
                guard waiting == .resolution else { continue }
                waiting = .nothing
                let resolution: ConnectionStateMachine.Resolution
                switch count % 4 {
                case 0: resolution = .port(UInt16(truncatingIfNeeded: count))
                case 1: resolution = .notRegistered
                case 2: resolution = .unreachable("fuzz")
                default: resolution = .port(49_154)
                }
                execute(machine.firstBindResolved(resolution), for: nil)
            case 6:
                guard waiting == .connect else { continue }
                waiting = .nothing
                connected = true
                execute(machine.connected(), for: nil)
            default:
                guard waiting == .endpoints else { continue }
                waiting = .nothing
                let port = machine.server?.port
                execute(
                    machine.alterContextChecked { _ in
                        switch count % 3 {
                        case 0: return .some(port)
                        case 1: return .some(.some(1))
                        default: return nil
                        }
                    },
                    for: nil
                )
            }
            // The runtime reads from the client only while the machine accepts PDUs.
            while !closed, waiting == .nothing, machine.acceptsClientPDUs, !heldByTheClient.isEmpty {
                let raw = heldByTheClient.removeFirst()
                execute(machine.clientSent(raw), for: raw)
            }
            _ = machine.takeEvents()
        }
        GatewayHarness.checkWhatTheServerSaw(
            toServer,
            listener: .mapped,
            policy: policy,
            limits: limits,
            passesProtectedLookups: false
        )
    }
}

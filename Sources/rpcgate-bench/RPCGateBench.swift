import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RPCPeer
import RPCWire

/// Load generator and test server for measuring RPCGate against a direct path and a plain TCP
/// proxy (see Benchmarks/compare.sh and docs/PERFORMANCE.md).
@main
struct RPCGateBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpcgate-bench",
        abstract: "DCE/RPC benchmark server and client for RPCGate.",
        subcommands: [Server.self, Client.self, Splice.self]
    )
}

func stderrLine(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

extension PeerAddress: ExpressibleByArgument {
    init?(argument: String) { self.init(argument) }
}

extension ClientConfiguration.Mode: ExpressibleByArgument {}

struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A DCE/RPC test server: an endpoint mapper and one echo/sink interface."
    )

    @Option(help: "Address both listeners bind to.")
    var listen: String = "127.0.0.1"

    @Option(help: "Endpoint-mapper port.")
    var epmPort: Int

    @Option(help: "Data port of the bench interface.")
    var dataPort: Int

    @Option(help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

    @Option(help: "Largest fragment the server sends or accepts (the bind negotiates down).")
    var maxFragment: Int = Int(UInt16.max)

    @Option(help: "IPv4 address written into the tower (default: the listen address, or 0.0.0.0).")
    var advertise: String?

    func validate() throws {
        guard (1...65535).contains(self.epmPort), (1...65535).contains(self.dataPort) else {
            throw ValidationError("ports must be 1-65535")
        }
        guard (WireLimits.minimumNegotiatedFragmentSize...Int(UInt16.max)).contains(self.maxFragment) else {
            throw ValidationError("--max-fragment must be 1432-65535")
        }
    }

    func run() async throws {
        let advertise = IPv4Address(self.advertise ?? self.listen) ?? .any
        try await RPCPeerServer.run(
            RPCPeerServer.Configuration(
                listen: self.listen,
                epmPort: self.epmPort,
                dataPort: self.dataPort,
                threads: self.threads,
                maxFragment: self.maxFragment,
                advertise: advertise
            ),
            announce: stderrLine
        )
    }
}

struct Client: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resolve the bench interface through the endpoint mapper, bind, call; print one JSON line."
    )

    @Option(help: "Endpoint mapper HOST:PORT. Calls go to HOST and the port of the returned tower.")
    var epm: PeerAddress?

    @Option(help: "Skip the endpoint mapper and call HOST:PORT directly.")
    var direct: PeerAddress?

    @Option(help: "Connections (bulk, idle) or concurrent workers (churn). Latency uses one.")
    var connections: Int = 1

    @Option(help: "Calls per connection: bulk reconnects after that many, latency stops; 0 = until the duration ends.")
    var callsPerConnection: Int = 0

    @Option(help: "Stub bytes per call (each way for echo).")
    var stubSize: Int = 65536

    @Option(help: "max_xmit_frag/max_recv_frag offered in the bind.")
    var fragSize: Int = 5840

    @Option(help: "Seconds to run (bulk, latency, churn) or to hold the connections (idle).")
    var duration: Double = 5

    @Option(help: "bulk | latency | churn | idle")
    var mode: ClientConfiguration.Mode = .bulk

    @Flag(help: "Add a 16-byte NTLM-shaped verifier (auth level connect) to every call fragment.")
    var authTrailer = false

    @Option(help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

    @Option(help: "Latency mode: calls discarded before recording.")
    var warmup: Int = 200

    @Option(help: "Idle mode: connection attempts in flight per event loop.")
    var connectConcurrency: Int = 64

    @Option(help: "Idle mode: create this file once every connection is established (for RSS sampling).")
    var readyFile: String?

    func validate() throws {
        guard self.epm != nil || self.direct != nil else { throw ValidationError("give --epm or --direct") }
        guard self.connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard self.stubSize >= 0, self.stubSize <= 64 * 1024 * 1024 else {
            throw ValidationError("--stub-size 0-64MiB")
        }
        guard (WireLimits.minimumNegotiatedFragmentSize...Int(UInt16.max)).contains(self.fragSize) else {
            throw ValidationError("--frag-size must be 1432-65535")
        }
        guard self.duration > 0, self.duration <= 3600 else { throw ValidationError("--duration must be 0-3600 s") }
    }

    func run() async throws {
        let configuration = ClientConfiguration(
            epm: self.epm,
            direct: self.direct,
            connections: self.mode == .latency ? 1 : self.connections,
            callsPerConnection: self.callsPerConnection,
            stubSize: self.stubSize,
            fragment: self.fragSize,
            duration: .nanoseconds(Int64(self.duration * 1e9)),
            mode: self.mode,
            authTrailer: self.authTrailer,
            warmupCalls: self.warmup,
            connectConcurrency: max(1, self.connectConcurrency)
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, self.threads))
        let report: Report
        do {
            switch self.mode {
            case .bulk, .latency:
                report = try await ClientRunner.callLoop(configuration, group: group)
            case .churn:
                report = try await ClientRunner.churn(configuration, group: group)
            case .idle:
                report = try await ClientRunner.idle(configuration, group: group, readyFile: self.readyFile)
            }
        } catch {
            try? await group.shutdownGracefully()
            stderrLine("rpcgate-bench client: \(error)")
            print(Report(mode: self.mode, configuration: configuration, failure: "\(error)").json)
            throw ExitCode(1)
        }
        try? await group.shutdownGracefully()
        stderrLine(report.humanText)
        print(report.json)
        if report.failed { throw ExitCode(1) }
    }
}

import ArgumentParser
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import RPCGateway
import RPCGatewayConfig
import RPCPeer
import RPCPolicy
import RPCWire
import UnixSignals

/// `rpcgate demo`: the gateway working end to end on this machine, with nothing to install or
/// configure. A bundled DCE/RPC server stands in for a domain controller, the gateway runs in
/// front of it, and a client resolves, binds and calls through the gateway, all on 127.0.0.1.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Watch the gateway work: a bundled RPC server, the gateway in front of it and a client, all on 127.0.0.1.",
        discussion: """
            Starts a small DCE/RPC server that registers samr, lsarpc, netlogon, drsuapi and spoolss \
            with its endpoint mapper, the gateway in front of it (the block-dcsync profile, then \
            epmapper, samr, lsarpc, netlogon and drsuapi allowed, everything else denied) with its \
            status page, and a client that looks up the endpoints, binds and calls through the \
            gateway. The first round is explained step by step; later rounds (every --interval \
            seconds) keep the status page and /metrics live. Ctrl-C (or SIGTERM) stops everything. \
            No root, no domain controller and no configuration file are needed.
            """
    )

    @Option(help: "Stop after this many client rounds (0: no limit).")
    var rounds: Int = 0

    @Option(help: "Stop after this many seconds (0: no limit).")
    var duration: Double = 0

    @Option(help: "Seconds between client rounds.")
    var interval: Double = 5

    @Option(help: "The gateway's endpoint-mapper port (default: 10135, or the next free one).")
    var epmPort: Int?

    @Option(
        help: "First port of the gateway's range of \(DemoSetup.rangeSize) (default: the first free block from 50000)."
    )
    var firstPort: Int?

    @Option(help: "The status page's port (default: 9135, or any free one).")
    var adminPort: Int?

    @Option(help: "Level of the gateway's own log on standard error (default warning).")
    var logLevel: String = "warning"

    @Flag(help: "Print the gateway configuration the demo would run, and exit.")
    var printConfig = false

    func validate() throws {
        guard self.rounds >= 0 else { throw ValidationError("--rounds must be 0 or more") }
        guard self.duration >= 0, self.duration <= 86400 else { throw ValidationError("--duration must be 0-86400 s") }
        guard self.interval >= 0.1, self.interval <= 3600 else {
            throw ValidationError("--interval must be 0.1-3600 s")
        }
        for (name, port) in [("--epm-port", self.epmPort), ("--admin-port", self.adminPort)] {
            if let port, !(1...65535).contains(port) { throw ValidationError("\(name) must be 1-65535") }
        }
        if let first = self.firstPort, !(1...(65536 - DemoSetup.rangeSize)).contains(first) {
            throw ValidationError("--first-port must be 1-\(65536 - DemoSetup.rangeSize)")
        }
        guard Logger.Level(rawValue: self.logLevel.lowercased()) != nil else {
            throw ValidationError("--log-level: trace, debug, info, notice, warning, error or critical")
        }
    }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let calls = NIOLockedValueBox<[DemoCall: Int]>([:])
        let server: RPCPeerServer.Running
        do {
            server = try await DemoSetup.startServer(group: group) { interface, opnum in
                calls.withLockedValue { $0[DemoCall(interface: interface, opnum: opnum), default: 0] += 1 }
            }
        } catch {
            printError("rpcgate demo: cannot start the demo server on 127.0.0.1: \(error)")
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        let setup: DemoSetup
        do {
            setup = try DemoSetup.choose(
                server: server,
                epmPort: self.epmPort,
                firstPort: self.firstPort,
                adminPort: self.adminPort
            )
        } catch {
            printError("rpcgate demo: \(error)")
            await server.close()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        if self.printConfig {
            demoPrint(setup.yaml, terminator: "")
            await server.close()
            try? await group.shutdownGracefully()
            return
        }
        let settings: GatewaySettings
        do {
            settings = try ConfigurationLoader.parse(yaml: setup.yaml, fileName: "demo")
        } catch let error as ConfigurationError {
            for problem in error.problems { printError("rpcgate demo: \(problem)") }
            await server.close()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }

        let level = Logger.Level(rawValue: self.logLevel.lowercased()) ?? .warning
        LoggingSystem.bootstrap(LogSetup.factory(format: .text, level: level), metadataProvider: nil)
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "rpcgate")

        let gateway = GatewayServer(settings: settings, group: group, logger: logger)
        let admin: AdminServer
        do {
            try await gateway.start()
            admin = try await AdminServer.start(
                host: "127.0.0.1",
                port: setup.adminPort,
                group: group,
                content: AdminContent.gateway(gateway, registry: registry),
                logger: logger
            )
        } catch {
            printError("rpcgate demo: \(error)")
            await gateway.stop()
            await server.close()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        let statusURL = "http://127.0.0.1:\(admin.localAddress.port ?? setup.adminPort)/"
        DemoNarration.banner(setup: setup, statusURL: statusURL)

        let client = DemoClient(setup: setup, settings: settings, group: group, serverCalls: calls)
        let rounds = self.rounds
        let interval = self.interval
        let deadline: ContinuousClock.Instant? =
            self.duration > 0 ? .now + .milliseconds(Int64(self.duration * 1000)) : nil
        let stoppedBy = await withTaskGroup(of: String?.self) { tasks in
            tasks.addTask {
                for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                    return "\(signal)".uppercased()
                }
                return nil
            }
            tasks.addTask {
                await client.loop(rounds: rounds, interval: interval, deadline: deadline)
                return nil
            }
            let first = await tasks.next() ?? nil
            tasks.cancelAll()
            return first
        }

        demoPrint("")
        if let stoppedBy { demoPrint("\(stoppedBy): stopping.") }
        let status = await gateway.status(version: RPCGateVersion.full)
        let totals = client.totals
        demoPrint(
            "Summary: \(totals.rounds) round\(totals.rounds == 1 ? "" : "s"); binds \(totals.bindsAllowed) allowed, "
                + "\(totals.bindsRefused) refused; calls \(totals.callsAnswered) answered, \(totals.callsRefused) refused; "
                + "\(totals.failures) failed step\(totals.failures == 1 ? "" : "s"); "
                + "the status page recorded \(status.denialsTotal) refusals."
        )
        try? await admin.close()
        await gateway.drain(deadline: .seconds(2))
        await server.close()
        try? await group.shutdownGracefully()
        demoPrint("Stopped: client, gateway and demo server closed; nothing is left running.")
        if totals.failures > 0 || totals.rounds == 0 { throw ExitCode(1) }
    }
}

/// Writes one line to standard output at once (no buffering), so a pipe (a test, `| tee`) sees
/// each step as it happens.
func demoPrint(_ text: String = "", terminator: String = "\n") {
    FileHandle.standardOutput.write(Data((text + terminator).utf8))
}

/// A call the demo server received.
struct DemoCall: Hashable {
    var interface: SyntaxID
    var opnum: UInt16
}

// MARK: - Set-up

/// The demo's addresses and the gateway configuration over them.
struct DemoSetup {
    static let host = "127.0.0.1"
    static let rangeSize = 20
    /// What the demo server registers, all on its one data port (as Samba and Windows do).
    static let served: [(name: String, annotation: String)] = [
        ("samr", "demo SAM server"), ("lsarpc", "demo LSA server"), ("netlogon", "demo Netlogon server"),
        ("drsuapi", "demo directory replication"), ("spoolss", "demo print spooler"),
    ]
    static let allowed = ["epmapper", "samr", "lsarpc", "netlogon", "drsuapi"]

    var serverEPMPort: Int
    var serverDataPort: Int
    var epmPort: Int
    var ports: ClosedRange<Int>
    var adminPort: Int

    /// Starts the demo server: its data port in Windows' dynamic range (49152 up) when one is
    /// free, so rewritten ports look as they do in front of a real server; any free port otherwise.
    static func startServer(
        group: any EventLoopGroup,
        onCall: @escaping @Sendable (SyntaxID, UInt16) -> Void
    ) async throws -> RPCPeerServer.Running {
        let interfaces = Self.served.compactMap { served in
            InterfaceCatalog.named(served.name).map {
                RegisteredInterface(syntax: $0.syntax, annotation: served.annotation)
            }
        }
        var configuration = RPCPeerServer.Configuration(
            listen: Self.host,
            epmPort: 0,
            dataPort: 0,
            advertise: IPv4Address(127, 0, 0, 1),
            interfaces: interfaces,
            onCall: onCall
        )
        for candidate in 49152..<49252 where FreePorts.isFree(candidate) {
            configuration.dataPort = candidate
            if let running = try? await RPCPeerServer.start(configuration, group: group) { return running }
        }
        configuration.dataPort = 0
        return try await RPCPeerServer.start(configuration, group: group)
    }

    /// Picks the gateway's ports: the ones asked for, else the example configuration's when free.
    static func choose(
        server: RPCPeerServer.Running,
        epmPort: Int?,
        firstPort: Int?,
        adminPort: Int?
    ) throws -> DemoSetup {
        let ports: ClosedRange<Int>
        if let firstPort {
            ports = firstPort...(firstPort + Self.rangeSize - 1)
        } else {
            guard let block = FreePorts.block(of: Self.rangeSize, from: 50000, below: 60000) else {
                throw DemoError(
                    "no \(Self.rangeSize) free consecutive ports between 50000 and 59999 on 127.0.0.1; give --first-port"
                )
            }
            ports = block
        }
        let epm: Int
        if let epmPort {
            epm = epmPort
        } else {
            guard let free = FreePorts.first(in: 10135...10234, excluding: ports) else {
                throw DemoError(
                    "no free port between 10135 and 10234 on 127.0.0.1 for the endpoint mapper; give --epm-port"
                )
            }
            epm = free
        }
        guard !ports.contains(epm) else { throw DemoError("--epm-port \(epm) is inside the range \(ports)") }
        return DemoSetup(
            serverEPMPort: server.epmPort,
            serverDataPort: server.dataPort,
            epmPort: epm,
            ports: ports,
            adminPort: adminPort ?? (FreePorts.isFree(9135) ? 9135 : 0)
        )
    }

    /// The gateway configuration (the admin listener is started separately, possibly on port 0).
    var yaml: String {
        """
        # The configuration `rpcgate demo` runs (see `rpcgate demo --help`).
        routes:
          - name: demo
            listen: \(Self.host)
            epm_port: \(self.epmPort)
            advertise: \(Self.host)
            upstream: \(Self.host)
            upstream_epm_port: \(self.serverEPMPort)
            ports: \(self.ports.lowerBound)-\(self.ports.upperBound)
            policy: demo
        policies:
          demo:
            default: deny
            rules:
              # DCSync: IDL_DRSGetNCChanges (opnum 3) and IDL_DRSReplicaSync (2) are refused; the
              # rest of drsuapi stays reachable through the next rule.
              - profile: block-dcsync
              - action: allow
                interfaces: [\(Self.allowed.joined(separator: ", "))]
                sources: [127.0.0.0/8]
        timeouts:
          drain: 2s

        """
    }
}

struct DemoError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Ports that can be bound on 127.0.0.1 now (a later bind can still lose a race; the demo then
/// says which port failed).
enum FreePorts {
    static func isFree(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var reuse: Int32 = 1
        _ = setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    static func first(in candidates: ClosedRange<Int>, excluding: ClosedRange<Int>) -> Int? {
        candidates.first { !excluding.contains($0) && self.isFree($0) }
    }

    /// The first `count` consecutive free ports starting at `from`, `from + count`, ...
    static func block(of count: Int, from start: Int, below limit: Int) -> ClosedRange<Int>? {
        var first = start
        while first + count <= limit {
            let block = first...(first + count - 1)
            if block.allSatisfy(self.isFree) { return block }
            first += count
        }
        return nil
    }
}

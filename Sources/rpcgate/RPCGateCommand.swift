import ArgumentParser
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import RPCGateway
import RPCGatewayConfig
import RPCPolicy
import RPCWire
import ServiceLifecycle
import UnixSignals

@main
struct RPCGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpcgate",
        abstract:
            "A gateway for Microsoft RPC (DCE/RPC over TCP): endpoint-mapper rewriting into a fixed port range, interface policy, metrics.",
        version: RPCGateVersion.full,
        subcommands: [
            Run.self, Demo.self, Init.self, CheckConfig.self, Explain.self, Interfaces.self, Endpoints.self,
            PolicyCommand.self,
        ]
    )
}

enum RPCGateVersion {
    /// The release. CHANGELOG.md names what changed in each; scripts/build-deb.sh reads it from
    /// `rpcgate --version`.
    static let current = "0.1.0"

    /// The git commit the binary was built from (written by Plugins/BuildInfoPlugin), or
    /// `unknown commit` for a build without git information.
    static var commit: String { BuildInfo.commit.map { "commit \($0)" } ?? "unknown commit" }

    /// What `--version`, the status page and the start-up log show: `0.1.0 (commit 1a2b3c4d5e6f)`.
    static var full: String { "\(self.current) (\(self.commit))" }
}

/// Prints every configuration problem, one per line, and exits non-zero.
func loadSettingsOrExit(_ path: String) throws -> GatewaySettings {
    do {
        return try ConfigurationLoader.load(path: path)
    } catch let error as ConfigurationError {
        for problem in error.problems {
            printError("\(problem)")
        }
        throw ExitCode(2)
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file; print every problem with its key and line."
    )

    @Argument(help: "The YAML configuration file.")
    var file: String?

    /// The same file as an option, as `run`, `explain` and `endpoints` take it.
    @Option(name: .customLong("config"), help: "The YAML configuration file (instead of the argument).")
    var config: String?

    func validate() throws {
        switch (self.file, self.config) {
        case (nil, nil): throw ValidationError("give the configuration file: rpcgate check-config FILE")
        case (.some, .some): throw ValidationError("give the configuration file once: as the argument or with --config")
        default: break
        }
    }

    func run() throws {
        let file = self.file ?? self.config ?? ""
        let settings = try loadSettingsOrExit(file)
        print("\(file): OK")
        for route in settings.routes {
            print(
                "route \(route.name) (\(route.mode.name)): epm \(route.listenAddress):\(route.epmPort) -> \(Self.upstreamText(route)), ports \(route.ports.lowerBound)-\(route.ports.upperBound), policy \(route.policy.name) (\(route.policy.rules.count) rules, default \(route.policy.defaultAction))"
            )
        }
        for route in settings.routes {
            if let via = route.via { print("route \(route.name): via peer \(via)") }
            if route.preservesServerPorts {
                print(
                    "route \(route.name): port mapping preserve (server port P served on gateway port P; "
                        + "signed and sealed endpoint-mapper lookups pass unchanged)"
                )
            }
            if let listen = route.serverPortsListen {
                let ranges = (route.allowedServerPorts ?? []).map { "\($0.lowerBound)-\($0.upperBound)" }
                print(
                    "route \(route.name): server ports \(ranges.joined(separator: ",")) on \(route.listenAddress):\(listen), "
                        + "pinholes \(route.pinholes.rawValue)"
                )
            }
        }
        for peer in settings.peers.values.sorted(by: { $0.name < $1.name }) {
            print(
                "peer \(peer.name): \(peer.host):\(peer.port), server name \(peer.serverName), cert \(peer.tls.certificate)"
            )
        }
        if let core = settings.core {
            print(
                "core: \(core.listenHost):\(core.listenPort) -> \(core.upstreams.map(\.description).joined(separator: ", ")), policy \(core.policy.name), allow \(core.allowedPeers.joined(separator: ", "))"
            )
        }
        if let admin = settings.admin {
            let token = admin.tokenFile.map { ", bearer token from \($0)" } ?? ", no token"
            let probes = admin.readiness
            print(
                "admin: \(HostPort.text(admin.host, UInt16(admin.port)))\(token); "
                    + "readiness probe every \(DurationText.short(probes.interval)), "
                    + "timeout \(DurationText.short(probes.timeout)), max age \(DurationText.short(probes.maximumAge))"
            )
        }
        print("logging: \(settings.logging.format.rawValue), level \(settings.logging.level?.rawValue ?? "info")")
        if let audit = settings.audit {
            let target = audit.file == AuditSettings.standardOutput ? "standard output" : audit.file
            print("audit: \(target) (buffer \(audit.bufferLines) lines)")
        }
        if let kernel = EphemeralPorts.kernelRanges() {
            for warning in EphemeralPorts.warnings(for: settings, kernel: kernel) { print("warning: \(warning)") }
        }
    }

    /// The server side of a route: its upstream, or a transparent route's server networks.
    static func upstreamText(_ route: RouteSettings) -> String {
        if case .transparent(let servers) = route.mode {
            return "original destinations in \(servers.map(\.description).joined(separator: ", "))"
        }
        return "\(route.upstreamHost):\(route.upstreamEPMPort)"
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway.")

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String

    @Option(
        help: "Log level: trace, debug, info, notice, warning, error, critical (overrides logging.level; default info)."
    )
    var logLevel: String?

    @Option(help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

    func run() async throws {
        let settings = try loadSettingsOrExit(self.config)
        var level = settings.logging.level ?? .info
        if let text = self.logLevel {
            guard let override = Logger.Level(rawValue: text.lowercased()) else {
                printError("rpcgate: unknown log level \(text) (trace, debug, info, notice, warning, error, critical)")
                throw ExitCode(2)
            }
            level = override
        }
        LoggingSystem.bootstrap(LogSetup.factory(format: settings.logging.format, level: level), metadataProvider: nil)
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "rpcgate")

        var audit: AuditLog?
        if let auditSettings = settings.audit {
            do {
                audit = try AuditLog(settings: auditSettings, logger: logger)
            } catch {
                printError("rpcgate: \(error)")
                throw ExitCode(1)
            }
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, self.threads))
        let gateway = GatewayServer(settings: settings, group: group, logger: logger, audit: audit)
        do {
            try await gateway.start()
        } catch {
            printError("rpcgate: \(error)")
            await audit?.shutdown()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        var admin: AdminServer?
        if let adminSettings = settings.admin {
            do {
                admin = try await AdminServer.start(
                    host: adminSettings.host,
                    port: adminSettings.port,
                    group: group,
                    content: AdminContent.gateway(gateway, registry: registry),
                    token: adminSettings.token,
                    logger: logger
                )
            } catch {
                printError("rpcgate: \(error)")
                await gateway.stop()
                await audit?.shutdown()
                try? await group.shutdownGracefully()
                throw ExitCode(1)
            }
        }
        if let kernel = EphemeralPorts.kernelRanges() {
            for warning in EphemeralPorts.warnings(for: settings, kernel: kernel) { logger.warning("\(warning)") }
        }
        logger.info(
            "rpcgate \(RPCGateVersion.full) started",
            metadata: [
                "config": "\(self.config)", "routes": "\(settings.routes.count)", "pid": "\(getpid())",
                "log_format": "\(settings.logging.format.rawValue)", "log_level": "\(level.rawValue)",
            ]
        )
        let service = GatewayService(gateway: gateway, admin: admin, audit: audit, logger: logger)
        let reloader = ReloadService(
            configPath: self.config,
            gateway: gateway,
            admin: admin,
            loaded: settings,
            logger: logger
        )
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: service),
                    .init(service: reloader, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await serviceGroup.run()
        try? await group.shutdownGracefully()
        logger.info("rpcgate stopped")
    }
}

extension AdminContent {
    /// The admin endpoints of a running gateway: Prometheus text from `registry`, readiness and
    /// the status page.
    static func gateway(_ gateway: GatewayServer, registry: PrometheusCollectorRegistry) -> AdminContent {
        AdminContent(
            metrics: {
                var buffer: [UInt8] = []
                registry.emit(into: &buffer)
                return String(decoding: buffer, as: UTF8.self)
            },
            readiness: { gateway.readiness() },
            status: { await gateway.status(version: RPCGateVersion.full) }
        )
    }
}

/// Keeps the process alive until a shutdown signal, then closes listeners and connections and
/// flushes the audit log.
struct GatewayService: Service, CustomStringConvertible {
    let gateway: GatewayServer
    let admin: AdminServer?
    let audit: AuditLog?
    let logger: Logger

    /// What ServiceLifecycle logs for this service (not the whole value).
    var description: String { "GatewayService" }

    func run() async throws {
        try? await gracefulShutdown()
        self.logger.info("shutting down: draining connections")
        await self.gateway.drain(deadline: self.gateway.settings.timeouts.drainDuration)
        try? await self.admin?.close()
        await self.audit?.shutdown()
    }
}

/// Reloads the configuration on SIGHUP. A file with problems is rejected with a logged error and
/// the running configuration stays; `rpcgate_config_reloads_total{result}` counts both outcomes.
struct ReloadService: Service, CustomStringConvertible {
    let configPath: String
    let gateway: GatewayServer
    let admin: AdminServer?
    let loaded: GatewaySettings
    let logger: Logger

    /// What ServiceLifecycle logs for this service: not the settings it holds.
    var description: String { "ReloadService(config: \(self.configPath))" }

    func run() async throws {
        let succeeded = Counter(label: "rpcgate_config_reloads_total", dimensions: [("result", "success")])
        let failed = Counter(label: "rpcgate_config_reloads_total", dimensions: [("result", "failure")])
        succeeded.increment(by: 0)
        failed.increment(by: 0)
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            self.logger.info("SIGHUP: reloading configuration", metadata: ["config": "\(self.configPath)"])
            let settings: GatewaySettings
            do {
                settings = try ConfigurationLoader.load(path: self.configPath)
            } catch let error as ConfigurationError {
                failed.increment()
                self.logger.error(
                    "configuration rejected; the running configuration stays",
                    metadata: ["problems": "\(error.problems.map(\.description).joined(separator: " | "))"]
                )
                continue
            } catch {
                failed.increment()
                self.logger.error(
                    "configuration rejected; the running configuration stays",
                    metadata: ["error": "\(error)"]
                )
                continue
            }
            var restartNeeded: [String] = []
            if let loaded = self.loaded.admin {
                if loaded.needsRestart(toApply: settings.admin) { restartNeeded.append("admin") }
            } else if settings.admin != nil {
                restartNeeded.append("admin")
            }
            if settings.audit != self.loaded.audit { restartNeeded.append("audit") }
            if settings.logging != self.loaded.logging { restartNeeded.append("logging") }
            if !restartNeeded.isEmpty {
                self.logger.warning(
                    "some settings take effect after a restart; kept as they were",
                    metadata: ["sections": "\(restartNeeded.joined(separator: ","))"]
                )
            }
            do {
                try await self.gateway.apply(settings)
                if let admin = self.admin, let configured = settings.admin {
                    // The token is re-read on every reload, so a rotated token_file applies at once.
                    admin.setToken(configured.token)
                }
                succeeded.increment()
                self.logger.info("configuration reloaded", metadata: ["routes": "\(settings.routes.count)"])
            } catch {
                failed.increment()
                self.logger.error("reload applied partly", metadata: ["error": "\(error)"])
            }
        }
    }
}

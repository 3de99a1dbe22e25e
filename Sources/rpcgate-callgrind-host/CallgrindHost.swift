// Runs the gateway exactly as `rpcgate run` does (same GatewayServer, Prometheus metrics, stderr
// logging), but from a synchronous `main`, so that it can run under valgrind.
//
// valgrind 3.19 (Debian 12) dies with "VALGRIND INTERNAL ERROR: signal 11" in any Swift program
// whose `main` is `async`: the main thread parks in libdispatch's `_dispatch_sigsuspend`. The
// `rpcgate` executable is an `AsyncParsableCommand`, so Benchmarks/profile.sh profiles this host.
//
//   rpcgate-callgrind-host CONFIG [THREADS] [LOG-LEVEL]      (SIGTERM or SIGINT stop it)
import Dispatch
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import RPCGateway
import RPCGatewayConfig

@main
struct CallgrindHost {
    /// Synchronous on purpose (see above). Closures run on dispatch queues are `@Sendable`, so they
    /// do not inherit the main actor.
    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2 else {
            FileHandle.standardError.write(Data("usage: rpcgate-callgrind-host CONFIG [THREADS] [LOG-LEVEL]\n".utf8))
            exit(2)
        }
        let threads = arguments.count >= 3 ? max(1, Int(arguments[2]) ?? 1) : 1
        let level = arguments.count >= 4 ? Logger.Level(rawValue: arguments[3]) ?? .warning : .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: PrometheusCollectorRegistry()))

        let settings: GatewaySettings
        do {
            settings = try ConfigurationLoader.load(path: arguments[1])
        } catch {
            FileHandle.standardError.write(Data("rpcgate-callgrind-host: \(error)\n".utf8))
            exit(2)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let gateway = GatewayServer(settings: settings, group: group, logger: Logger(label: "rpcgate"))
        let started = DispatchSemaphore(value: 0)
        let failed = NIOLockedValueBox<String?>(nil)
        Task.detached {
            do { try await gateway.start() } catch { failed.withLockedValue { $0 = "\(error)" } }
            started.signal()
        }
        started.wait()
        if let error = failed.withLockedValue({ $0 }) {
            FileHandle.standardError.write(Data("rpcgate-callgrind-host: \(error)\n".utf8))
            exit(1)
        }
        FileHandle.standardError.write(Data("rpcgate-callgrind-host: started, \(threads) thread(s)\n".utf8))

        // Stop on SIGTERM/SIGINT and return from main, so valgrind writes its profile.
        let stop = DispatchSemaphore(value: 0)
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { @Sendable in stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        let stopped = DispatchSemaphore(value: 0)
        Task.detached {
            await gateway.stop()
            stopped.signal()
        }
        stopped.wait()
        try? group.syncShutdownGracefully()
        FileHandle.standardError.write(Data("rpcgate-callgrind-host: stopped\n".utf8))
    }
}

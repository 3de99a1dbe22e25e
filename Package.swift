// swift-tools-version:6.1
import PackageDescription

// Set RPCGATE_FUZZ=1 when building the fuzz target with `--sanitize=fuzzer`: the fuzz
// executable then exports only `LLVMFuzzerTestOneInput`, and a plain build keeps a `@main`
// that replays files, so `swift build` always links.
let fuzzing = Context.environment["RPCGATE_FUZZ"] != nil

// The per-PDU modules (codec and runtime) are built without Swift's dynamic exclusivity checks in
// release builds: the callgrind profiles put those checks at about a tenth of the gateway's own
// instructions per forwarded PDU (docs/PERFORMANCE.md, "Compiler settings"). Debug builds, and so
// every unit test, keep them. RPCGATE_EXCLUSIVITY_CHECKS=1 keeps them in release too. The shipped
// build (README's build steps, deploy/Dockerfile, scripts/build-deb.sh, Benchmarks/) also passes
// `-Xswiftc -enforce-exclusivity=unchecked`, which reaches SwiftNIO's modules, where most of the
// remaining checks are; a manifest cannot set flags for its dependencies.
let hotPathSettings: [SwiftSetting] =
    Context.environment["RPCGATE_EXCLUSIVITY_CHECKS"] != nil
    ? [] : [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "rpcgate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "rpcgate", targets: ["rpcgate"]),
        .executable(name: "RPCWireFuzz", targets: ["RPCWireFuzz"]),
        .executable(name: "RPCGatewayFuzz", targets: ["RPCGatewayFuzz"]),
        .executable(name: "RPCConfigFuzz", targets: ["RPCConfigFuzz"]),
        .executable(name: "rpcgate-bench", targets: ["rpcgate-bench"]),
        // Libraries so the separate Benchmarks/ package can measure the codec and the state
        // machine. Only `public` API is reachable from there; `package` symbols are not.
        .library(name: "RPCWire", targets: ["RPCWire"]),
        .library(name: "RPCPolicy", targets: ["RPCPolicy"]),
        .library(name: "RPCGateway", targets: ["RPCGateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.10.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.0.0"),
    ],
    targets: [
        // Pure codec: bytes <-> values. NIOCore only: no I/O, no Foundation.
        .target(
            name: "RPCWire",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: hotPathSettings
        ),
        // Pure decisions over RPCWire value types.
        .target(
            name: "RPCPolicy",
            dependencies: ["RPCWire"]
        ),
        // Runtime: NIO handlers, listeners, port pool, metrics.
        .target(
            name: "RPCGateway",
            dependencies: [
                "RPCWire",
                "RPCPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: hotPathSettings
        ),
        // YAML -> typed, validated configuration. The first layer that may use Foundation.
        .target(
            name: "RPCGatewayConfig",
            dependencies: [
                "RPCWire",
                "RPCPolicy",
                "RPCGateway",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "rpcgate",
            dependencies: [
                "RPCGatewayConfig",
                "RPCPeer",
                "RPCGateway",
                "RPCPolicy",
                "RPCWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            plugins: ["BuildInfoPlugin"]
        ),
        // The `@main` every fuzz target has without libFuzzer: replays files through its harness.
        .target(name: "FuzzReplay"),
        // Writes the git commit into the rpcgate target before each build (`rpcgate --version`).
        .plugin(name: "BuildInfoPlugin", capability: .buildTool()),
        .executableTarget(
            name: "RPCWireFuzz",
            dependencies: [
                "RPCWire",
                "FuzzReplay",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: fuzzing ? [.define("FUZZING")] : []
        ),
        // A small DCE/RPC server and client over real PDUs (endpoint mapper, binds, calls), shared
        // by rpcgate-bench and `rpcgate demo`. Nothing in the gateway's own targets depends on it.
        .target(
            name: "RPCPeer",
            dependencies: [
                "RPCWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Load generator and DCE/RPC test server for Benchmarks/compare.sh.
        .executableTarget(
            name: "rpcgate-bench",
            dependencies: [
                "RPCPeer",
                "RPCWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The gateway from a synchronous main, for valgrind (Benchmarks/profile.sh); see its main.swift.
        .executableTarget(
            name: "rpcgate-callgrind-host",
            dependencies: [
                "RPCGatewayConfig",
                "RPCGateway",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // libFuzzer target: the whole per-connection pipeline in EmbeddedChannels, bytes from both sides.
        .executableTarget(
            name: "RPCGatewayFuzz",
            dependencies: [
                "RPCGateway",
                "FuzzReplay",
                "RPCPolicy",
                "RPCWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: fuzzing ? [.define("FUZZING")] : []
        ),
        // libFuzzer target: the YAML configuration loader.
        .executableTarget(
            name: "RPCConfigFuzz",
            dependencies: ["RPCGatewayConfig", "RPCGateway", "FuzzReplay"],
            swiftSettings: fuzzing ? [.define("FUZZING")] : []
        ),
        // Synthetic DCOM stub builders shared by the codec and connection tests.
        .target(
            name: "DCOMTestStubs",
            dependencies: ["RPCWire", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/DCOMTestStubs"
        ),
        .testTarget(
            name: "RPCWireTests",
            dependencies: [
                "RPCWire",
                "DCOMTestStubs",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "RPCPolicyTests",
            dependencies: ["RPCPolicy", "RPCWire"]
        ),
        .testTarget(
            name: "RPCGatewayTests",
            dependencies: [
                "RPCGateway",
                "DCOMTestStubs",
                "RPCWire",
                "RPCPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // Fuzz findings replayed through the fuzz harnesses (testable executables).
        .testTarget(
            name: "RPCFuzzRegressionTests",
            dependencies: [
                "RPCGatewayFuzz",
                "RPCConfigFuzz",
                "RPCPolicy",
                "RPCWire",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "RPCGatewayConfigTests",
            dependencies: [
                "RPCGatewayConfig",
                "RPCPolicy",
                "RPCGateway",
                "RPCWire",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The CLI's own pieces (log handlers, `init`'s configuration); test targets may depend on an
        // executable target.
        .testTarget(
            name: "rpcgateTests",
            dependencies: [
                "rpcgate",
                "RPCGateway",
                "RPCGatewayConfig",
                "RPCPolicy",
                "RPCWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

// STANDARD CROSS-TARGET SETTINGS (as in swift-nio, swift-nio-ssh, hummingbird).
for target in package.targets where target.type != .plugin {
    var settings = target.swiftSettings ?? []
    settings.append(.enableUpcomingFeature("MemberImportVisibility"))
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    settings.append(.enableUpcomingFeature("InternalImportsByDefault"))
    target.swiftSettings = settings
}

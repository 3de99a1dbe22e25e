// swift-tools-version:6.1
import PackageDescription

// Codec and state-machine micro-benchmarks for RPCGate (ordo-one/benchmark).
//
//   cd Benchmarks && swift package benchmark
//
// A separate package so the gateway itself never depends on the benchmark tooling. It reaches
// the gateway through the library products of the root package, so only `public` API can be
// measured here.
let package = Package(
    name: "rpcgate-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "rpcgate", path: "../"),
        // The local package mirror needs the trait spelled out (see the machine notes).
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
    ],
    targets: [
        .executableTarget(
            name: "RPCCodec",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RPCWire", package: "rpcgate"),
                .product(name: "RPCPolicy", package: "rpcgate"),
                .product(name: "RPCGateway", package: "rpcgate"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Benchmarks/RPCCodec",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        )
    ]
)

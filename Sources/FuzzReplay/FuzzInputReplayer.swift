#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `@main` of a fuzz target built without libFuzzer: it replays the files named on the command
/// line (crash reproducers, corpus entries) through the target's harness, so a plain `swift build`
/// links every fuzz target and a finding can be rerun without instrumentation.
///
/// A fuzzing build (`RPCGATE_FUZZ=1 … --sanitize=fuzzer`) leaves the conformance out, and
/// libFuzzer's own `main` calls the target's `LLVMFuzzerTestOneInput` instead.
public protocol FuzzInputReplayer {
    /// Runs one input through the harness; a finding traps.
    static func replay(_ input: [UInt8])
}

extension FuzzInputReplayer {
    public static func main() {
        let arguments = CommandLine.arguments
        let name = arguments.first.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? "fuzz target"
        let paths = arguments.dropFirst()
        guard !paths.isEmpty else {
            print("usage: \(name) FILE... (replays fuzz inputs; build with RPCGATE_FUZZ=1 --sanitize=fuzzer to fuzz)")
            return
        }
        for path in paths {
            guard let bytes = readFile(path) else {
                print("cannot read \(path)")
                continue
            }
            Self.replay(bytes)
            print("ok \(path) (\(bytes.count) bytes)")
        }
    }
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { break }
        result.append(contentsOf: chunk[0..<count])
    }
    return result
}

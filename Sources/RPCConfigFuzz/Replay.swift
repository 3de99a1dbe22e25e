#if !FUZZING
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Without libFuzzer: replays the files named on the command line (crash reproducers, corpus
/// entries) through the same harness, so a plain `swift build` links and regressions can be rerun.
@main
struct ReplayFuzzInputs {
    static func main() {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            print("usage: RPCConfigFuzz FILE... (replays fuzz inputs; build with RPCGATE_FUZZ=1 --sanitize=fuzzer to fuzz)")
            return
        }
        for path in paths {
            guard let bytes = readFile(path) else {
                print("cannot read \(path)")
                continue
            }
            ConfigHarness.run(bytes)
            print("ok \(path) (\(bytes.count) bytes)")
        }
    }

    private static func readFile(_ path: String) -> [UInt8]? {
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
}
#endif

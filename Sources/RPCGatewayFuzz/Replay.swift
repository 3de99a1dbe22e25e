#if !FUZZING
import FuzzReplay
import NIOCore

/// Without libFuzzer: replays the files named on the command line through ``GatewayHarness``.
@main
enum ReplayFuzzInputs: FuzzInputReplayer {
    static func replay(_ input: [UInt8]) {
        GatewayHarness.run(ByteBuffer(bytes: input))
    }
}
#endif

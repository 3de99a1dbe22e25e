#if !FUZZING
import FuzzReplay
import NIOCore

/// Without libFuzzer: replays the files named on the command line through ``fuzzOneInput(_:)``.
@main
enum ReplayFuzzInputs: FuzzInputReplayer {
    static func replay(_ input: [UInt8]) {
        fuzzOneInput(ByteBuffer(bytes: input))
    }
}
#endif

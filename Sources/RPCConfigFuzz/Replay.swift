#if !FUZZING
import FuzzReplay

/// Without libFuzzer: replays the files named on the command line through ``ConfigHarness``.
@main
enum ReplayFuzzInputs: FuzzInputReplayer {
    static func replay(_ input: [UInt8]) {
        ConfigHarness.run(input)
    }
}
#endif

// libFuzzer entry point. Build with `RPCGATE_FUZZ=1 swift build --product RPCConfigFuzz --sanitize=fuzzer`
// (see scripts/fuzz.sh). Only in fuzzing builds: the test bundle links several fuzz targets, and
// each would export the same symbol. Any trap here, in Yams/libyaml or in the configuration
// decoder is a finding.
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func rpcConfigFuzzTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    ConfigHarness.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#endif

import NIOCore

// libFuzzer entry point. Build with `RPCGATE_FUZZ=1 swift build --product RPCGatewayFuzz --sanitize=fuzzer`
// (see scripts/fuzz.sh). Only in fuzzing builds: the test bundle links several fuzz targets, and
// each would export the same symbol. Any trap here or in the gateway pipeline is a finding.
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func rpcGatewayFuzzTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    GatewayHarness.run(ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#endif

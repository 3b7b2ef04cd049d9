import CFuzzer
@_spi(Fuzzing) import HiredisNIO

#if canImport(Glibc)
    import Glibc
#endif

// Topology replies from a hostile peer: CLUSTER SHARDS and SLOTS, redirections, Sentinel answers
// (see `FuzzEntryPoints.parseTopologyReplies`).
// libFuzzer's own main is linked too (it names LLVMFuzzerTestOneInput) but SwiftPM's entry point
// is this file's code, which runs the driver.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzEntryPoints.parseTopologyReplies(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })

import CFuzzer
@_spi(Fuzzing) import HiredisNIO

#if canImport(Glibc)
    import Glibc
#endif

// RESP replies from a hostile peer, in pieces (see `FuzzEntryPoints.readReplies`).
// libFuzzer's own main is linked too (it names LLVMFuzzerTestOneInput) but SwiftPM's entry point
// is this file's code, which runs the driver.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzEntryPoints.readReplies(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })

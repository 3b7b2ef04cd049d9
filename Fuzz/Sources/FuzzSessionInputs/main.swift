import CFuzzer
@_spi(Fuzzing) import SessionCache

#if canImport(Glibc)
    import Glibc
#endif

// What the store parses from outside and from Redis: session ids, user and tab names, metadata
// JSON, stored messages, session hashes (see `SessionFuzzEntryPoints.parseInputs`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    SessionFuzzEntryPoints.parseInputs(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })

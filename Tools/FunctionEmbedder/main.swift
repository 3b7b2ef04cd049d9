// Writes a Swift file declaring `SessionFunctions.source`, the text of a Lua function library, as
// a raw string literal. Run by the EmbedFunctions build plugin: `FunctionEmbedder <in.lua> <out.swift>`.
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: FunctionEmbedder <library.lua> <output.swift>\n".utf8))
    exit(2)
}
let source = try String(contentsOfFile: arguments[1], encoding: .utf8)
// Enough #s that nothing in the source ends the literal or starts an interpolation.
var hashes = "#"
while source.contains("\"\"\"" + hashes) || source.contains("\\" + hashes) { hashes += "#" }
// The literal's lines start at column 0 (no indentation is stripped); the empty line before the
// closing delimiter keeps the file's final newline.
let swift = """
    // Generated at build time by the EmbedFunctions plugin from sessions.lua: edit that file.
    extension SessionFunctions {
        /// The function library's source: `sessions.lua`.
        static let source = \(hashes)\"\"\"
    \(source.hasSuffix("\n") ? source : source + "\n")
    \"\"\"\(hashes)
    }

    """
let output = URL(fileURLWithPath: arguments[2])
// Unchanged output keeps its timestamp: nothing downstream rebuilds.
if (try? String(contentsOf: output, encoding: .utf8)) != swift {
    try swift.write(to: output, atomically: true, encoding: .utf8)
}

// scripts/fuzz builds the whole package graph with -sanitize=fuzzer, this build tool included, and
// the linker then pulls in libFuzzer's main, which names this symbol. Never called: the tool's own
// code above is its entry point.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzerEntryPointForToolBuiltWithFuzzerFlags(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { 0 }

import Foundation
@_spi(Fuzzing) import SessionCache
import Testing

/// The session-input fuzz target's seeds and finds (`Fuzz/Corpus/SessionInputs`), replayed
/// through its entry point on every test run: what `scripts/fuzz` found stays found.
@Suite("Fuzz corpus replay: session inputs")
struct SessionInputsCorpusTests {
    @Test func sessionInputSeedsAndRegressions() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Fuzz/Corpus/SessionInputs").standardizedFileURL
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names.count >= 7)
        for name in names {
            try Data(contentsOf: directory.appendingPathComponent(name)).withUnsafeBytes { SessionFuzzEntryPoints.parseInputs($0) }
        }
    }
}

import Foundation
@_spi(Fuzzing) import HiredisNIO
import Testing

/// The fuzz targets' seeds and the inputs that once crashed them (`Fuzz/Corpus`), replayed
/// through the same entry points on every test run: what `scripts/fuzz` found stays found.
@Suite("Fuzz corpus replay")
struct FuzzCorpusTests {
    private static func inputs(of target: String) throws -> [(String, Data)] {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Fuzz/Corpus/\(target)").standardizedFileURL
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        return try names.map { ($0, try Data(contentsOf: directory.appendingPathComponent($0))) }
    }

    @Test func replyReaderSeedsAndRegressions() throws {
        let inputs = try Self.inputs(of: "ReplyReader")
        #expect(inputs.count >= 10)
        for (_, data) in inputs { data.withUnsafeBytes { FuzzEntryPoints.readReplies($0) } }
    }

    @Test func topologySeedsAndRegressions() throws {
        let inputs = try Self.inputs(of: "Topology")
        #expect(inputs.count >= 5)
        for (_, data) in inputs { data.withUnsafeBytes { FuzzEntryPoints.parseTopologyReplies($0) } }
    }

    @Test func urlSeedsAndRegressions() throws {
        let inputs = try Self.inputs(of: "URL")
        #expect(inputs.count >= 10)
        for (_, data) in inputs { data.withUnsafeBytes { FuzzEntryPoints.parseURL($0) } }
    }
}

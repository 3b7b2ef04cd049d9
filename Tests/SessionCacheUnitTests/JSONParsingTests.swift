import Foundation
import HiredisNIO
import Testing

@testable import SessionCache

@Suite("JSONValue's parser")
struct JSONParsingTests {
    @Test func itReadsWhatJSONEncoderWritesLikeJSONDecoder() throws {
        let samples: [JSONValue] = [
            .null, true, false, 0, -12.5, 1e21, 3.0e-7, "", "plain", "quote \" backslash \\ slash / tab \t newline \n",
            "ünïcødé and emoji 😀 and \u{1}", ["a", 1, nil, ["nested": [true]]], [:], [], ["k": ["x": "y", "n": 2]],
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for sample in samples {
            let text = String(decoding: try encoder.encode(sample), as: UTF8.self)
            #expect(JSONValue(parsing: text) == sample, "\(text)")
            #expect(JSONValue(parsing: text) == (try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))))
        }
        #expect(JSONValue(parsing: #" { "a" : [ 1 , 2 ] , "b":"\u00e9\ud83d\ude00" } "#) == ["a": [1, 2], "b": "é😀"])
        for invalid in ["", "{", "[1,]", "\"open", "tru", "1 2", "{\"a\" 1}", "\"\\x\"", "01a", "[" + String(repeating: "[", count: 600)] {
            #expect(JSONValue(parsing: invalid) == Optional<JSONValue>.none, "\(invalid)")
        }
    }
}

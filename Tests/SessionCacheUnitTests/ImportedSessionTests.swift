import SessionCache
import Testing

/// The other systems' formats, as their code writes them (vapor/redis: `SessionData` encodes as a
/// JSON object of strings; hummingbird-auth: the app's `Codable` session, encoded by the persist
/// driver's `JSONEncoder`).
@Suite("Formats of imported sessions")
struct ImportedSessionTests {
    let id = "Hbxozx8rTj+XXGWAzOhh1npZFXaGLpTWpWCaXuo44xQ="

    @Test func vaporRedisSessionData() throws {
        let former = try #require(
            ImportedSession(
                vaporRedisKey: "vrs-\(id)", value: #"{"_UserSession":"7","flash":"Saved."}"#, remaining: nil, userKey: "_UserSession"))
        #expect(former.formerID == id && former.user == "7" && former.remaining == nil)
        #expect(former.metadata == ["_UserSession": "7", "flash": "Saved."])
        // Without the user key it is anonymous; its data is kept all the same.
        #expect(ImportedSession(vaporRedisKey: "vrs-\(id)", value: #"{"a":"b"}"#, remaining: nil, userKey: "_UserSession")?.user == nil)
    }

    @Test(arguments: [
        ("vrs-x", #"["a"]"#), ("vrs-x", #"{"a":1}"#), ("vrs-x", "{oops"), ("other-x", #"{"a":"b"}"#), ("vrs-x", ""),
    ])
    func vaporRedisRefusesOtherShapes(key: String, value: String) {
        #expect(ImportedSession(vaporRedisKey: key, value: value, remaining: nil) == nil)
    }

    @Test func hummingbirdAuthSessions() throws {
        let object = try #require(
            ImportedSession(
                hummingbirdAuthKey: "hbs.\(id)", value: #"{"userID":42,"cart":[1,2]}"#, remaining: .seconds(30), userField: "userID"))
        #expect(object.formerID == id && object.user == "42" && object.remaining == .seconds(30))
        #expect(object.metadata == ["userID": .number(42), "cart": .array([.number(1), .number(2)])])

        let named = ImportedSession(hummingbirdAuthKey: "hbs.\(id)", value: #"{"user":"ann"}"#, remaining: nil, userField: "user")
        #expect(named?.user == "ann")
        // A session type that is not an object is kept whole.
        let scalar = ImportedSession(hummingbirdAuthKey: "hbs.\(id)", value: #""just-a-string""#, remaining: nil)
        #expect(scalar?.metadata == ["session": "just-a-string"] && scalar?.user == nil)
        // A fractional or huge number names nobody.
        #expect(ImportedSession(hummingbirdAuthKey: "hbs.\(id)", value: #"{"u":1.5}"#, remaining: nil, userField: "u")?.user == nil)
        #expect(ImportedSession(hummingbirdAuthKey: "hbs.\(id)", value: #"{"u":1e300}"#, remaining: nil, userField: "u")?.user == nil)
        #expect(ImportedSession(hummingbirdAuthKey: "vrs-\(id)", value: "{}", remaining: nil) == nil)
        #expect(ImportedSession(hummingbirdAuthKey: "hbs.\(id)", value: "{", remaining: nil) == nil)
    }

    @Test func formerIDs() {
        #expect(ImportedSession.isValidFormerID(id))
        #expect(ImportedSession.isValidFormerID("abc-_.~09"))
        for hostile in ["", "a{b}", "a:b", "a b", "a\u{0}b", "é", "a*", String(repeating: "a", count: 257)] {
            #expect(!ImportedSession.isValidFormerID(hostile), "\(hostile.prefix(8))")
        }
    }
}

import EmbeddedRedis
import Foundation
import HiredisNIO
import SessionCache
import Testing

/// Switching from another session system: imported sessions keep their data, user and time left,
/// and the old cookie works exactly once.
@Suite("Importing sessions of other systems")
struct ImportTests {
    /// An id as vapor/redis and hummingbird-auth make them: 32 random bytes in base64.
    static func formerID() -> String {
        Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    /// The error `body` throws; nil when it throws none.
    static func error<T>(_ body: () async throws(SessionError) -> T) async -> SessionError? {
        do throws(SessionError) {
            _ = try await body()
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster)
    func anImportedSessionIsHandedOutOnceUnderANewID(on deployment: Deployment) async throws {
        try await withStore(on: deployment, configure: { $0.importedSessionGrace = .milliseconds(300) }) { fixture in
            let former = Self.formerID()
            let result = try await fixture.store.importSession(
                ImportedSession(formerID: former, user: "alice", metadata: ["cart": "3 items"], remaining: .seconds(600)))
            guard case .imported(let imported) = result else {
                Issue.record("not imported: \(result)")
                return
            }
            #expect(imported.id != former && fixture.store.isWellFormed(imported.id))
            // The user's list, log-out-everywhere and the CLI see it from the start.
            #expect(try await fixture.store.list(user: "alice").map(\.id) == [imported.id])

            let redeemed = try #require(try await fixture.store.redeemImported(former))
            #expect(redeemed.id == imported.id && redeemed.user == "alice" && redeemed.metadata["cart"] == "3 items")
            // Within the grace the same session again (a tab restored with the first, a retry)...
            #expect(try await fixture.store.redeemImported(former)?.id == imported.id)
            // ...and nothing after it; the session goes on under its new id.
            try await Task.sleep(for: fixture.store.configuration.importedSessionGrace + .milliseconds(50))
            #expect(try await fixture.store.redeemImported(former) == nil)
            #expect(try await fixture.store.get(imported.id) != nil)
            // Importing it again does not bring the used cookie back.
            let again = try await fixture.store.importSession(ImportedSession(formerID: former, user: "alice"))
            #expect(again == .alreadyImported)
            #expect(try await fixture.store.redeemImported(former) == nil)
        }
    }

    /// A session the store refuses frees its former id: a corrected run imports it.
    @Test func aRefusedImportCanBeRunAgain() async throws {
        try await withStore { fixture in
            let former = Self.formerID()
            let refused = await Self.error { () async throws(SessionError) in
                try await fixture.store.importSession(ImportedSession(formerID: former, metadata: ["\u{1}bad": "x"]))
            }
            #expect(refused == .invalidMetadataKey("\u{1}bad"))
            guard case .imported = try await fixture.store.importSession(ImportedSession(formerID: former, metadata: ["good": "x"])) else {
                Issue.record("not imported on the second run")
                return
            }
        }
    }

    @Test func importingTwiceCreatesNothingTheSecondTime() async throws {
        try await withStore { fixture in
            let former = ImportedSession(formerID: Self.formerID(), user: "bob")
            guard case .imported(let first) = try await fixture.store.importSession(former) else {
                Issue.record("not imported")
                return
            }
            #expect(try await fixture.store.importSession(former) == .alreadyImported)
            #expect(try await fixture.store.list(user: "bob").map(\.id) == [first.id])
            #expect(try await fixture.store.redeemImported(former.formerID)?.id == first.id)
        }
    }

    /// The session keeps the time it had left: its absolute deadline is the former expiry (on
    /// Redis's clock), and one with nothing left is not created.
    @Test func theTimeLeftIsKept() async throws {
        try await withStore { fixture in
            let before = try await fixture.redisNow()
            let result = try await fixture.store.importSession(ImportedSession(formerID: Self.formerID(), remaining: .seconds(90)))
            guard case .imported(let session) = result else {
                Issue.record("not imported")
                return
            }
            let deadline = Int(session.absoluteDeadline.timeIntervalSince1970 * 1000)
            #expect(deadline >= before + 90_000 && deadline < before + 95_000)
            #expect(try await fixture.store.importSession(ImportedSession(formerID: Self.formerID(), remaining: .zero)) == .expired)

            // No limit in the former system: the mode's absolute lifetime applies.
            guard case .imported(let unlimited) = try await fixture.store.importSession(ImportedSession(formerID: Self.formerID())) else {
                Issue.record("not imported")
                return
            }
            let lifetime = fixture.store.configuration.absoluteLifetimes.lifetime(for: .standard)
            #expect(abs(unlimited.absoluteDeadline.timeIntervalSince(unlimited.createdAt) - Double(lifetime.components.seconds)) < 0.01)
        }
    }

    /// Requests that present the old cookie at once (tabs restored together) all get the one
    /// session it was imported as: none of their responses clears another's new cookie.
    @Test func concurrentRedemptionsGetTheSameSession() async throws {
        try await withStore { fixture in
            let former = Self.formerID()
            guard case .imported(let imported) = try await fixture.store.importSession(ImportedSession(formerID: former, user: "carol"))
            else {
                Issue.record("not imported")
                return
            }
            let store = fixture.store
            let ids = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<16 { group.addTask { try await store.redeemImported(former)?.id } }
                return try await group.reduce(into: Set<String?>()) { $0.insert($1) }
            }
            #expect(ids == [imported.id])
            #expect(try await store.list(user: "carol").count == 1)
        }
    }

    /// A former id reaches a key name: anything but base64 and `-_.~` is refused before Redis
    /// is asked, and a well-formed id never imported is simply unknown.
    @Test func hostileFormerIDsAreRefused() async throws {
        try await withStore { fixture in
            for hostile in ["", "a{b}c", "a:session:b", "x y", "é", String(repeating: "A", count: 257), "a\r\nb"] {
                let redeeming = await Self.error { () async throws(SessionError) in try await fixture.store.redeemImported(hostile) }
                let importing = await Self.error { () async throws(SessionError) in
                    try await fixture.store.importSession(ImportedSession(formerID: hostile))
                }
                #expect(redeeming == .invalidID && importing == .invalidID)
            }
            let unknown = try await fixture.store.redeemImported(Self.formerID())
            let keys = try await fixture.client.send(RESPCommand("DBSIZE")).int
            #expect(unknown == nil && keys == 0)
        }
    }

    /// `session-cache import` reads vapor/redis's and hummingbird-auth's keys as those libraries
    /// write them (fixtures made from their code: `SET vrs-<id> <SessionData JSON>` with no TTL;
    /// `SET hbs.<id> <session JSON> PX <ms>`), and prints counts, never an id or a value.
    @Test func theImportCommandCarriesBothFormatsOver() async throws {
        try await withStore { fixture in
            let common = ["--redis", fixture.server.url, "--namespace", "test", "--buckets", "\(fixture.keyspace.bucketCount)", "--json"]
            let vapor = (1...3).map { _ in Self.formerID() }
            for (index, id) in vapor.enumerated() {
                _ = try await fixture.client.send(
                    RESPCommand("SET", .string("vrs-\(id)"), .string(#"{"_UserSession":"user\#(index)","flash":"saved"}"#)))
            }
            _ = try await fixture.client.send(RESPCommand("SET", "vrs-not-json", "{oops"))
            let hummingbird = Self.formerID()
            _ = try await fixture.client.send(
                RESPCommand("SET", .string("hbs.\(hummingbird)"), .string(#"{"userID":42,"theme":"dark"}"#), "PX", 60_000))

            let run = try await runTool("session-cache", ["import", "--from", "vapor-redis", "--user-key", "_UserSession"] + common)
            #expect(run.status == 0, "\(run.output)")
            let counts = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Int]
            #expect(counts?["scanned"] == 4 && counts?["imported"] == 3 && counts?["unreadable"] == 1)
            for id in vapor + [hummingbird] { #expect(!run.output.contains(id)) }

            let again = try await runTool("session-cache", ["import", "--from", "vapor-redis", "--user-key", "_UserSession"] + common)
            let second = try JSONSerialization.jsonObject(with: Data(again.output.utf8)) as? [String: Int]
            #expect(second?["imported"] == 0 && second?["alreadyImported"] == 3)

            let hb = try await runTool("session-cache", ["import", "--from", "hummingbird-auth", "--user-field", "userID"] + common)
            let third = try JSONSerialization.jsonObject(with: Data(hb.output.utf8)) as? [String: Int]
            #expect(third?["imported"] == 1)

            let first = try #require(try await fixture.store.redeemImported(vapor[0]))
            #expect(first.user == "user0" && first.metadata["flash"] == "saved")
            let imported = try #require(try await fixture.store.redeemImported(hummingbird))
            #expect(imported.user == "42" && imported.metadata["theme"] == "dark")
            let deadline = imported.absoluteDeadline.timeIntervalSince(imported.createdAt)
            #expect(deadline > 0 && deadline <= 60)
        }
    }
}

import HiredisNIO
import Testing

@testable import SessionCache

/// `bind` copies an anonymous session into its user's bucket in three calls. A write from another
/// tab between the copy and the removal was acknowledged and lost; a retried or concurrent bind
/// left two live copies (two hooks, both attempt 0).
@Suite("Binding an anonymous session at login")
struct BindTests {
    @Test(arguments: Deployment.standaloneAndCluster) func writesDuringABindAreRefusedNeverLost(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let store = fixture.store
            let visitor = try await store.createAnonymous(metadata: ["cart": ["book"]])
            // A bind that got as far as its first call (the process doing it is slow, or died).
            let proposed = SessionID.make(bucket: fixture.keyspace.bucket(ofUser: "alice"))
            let marked = try await store.redis.call(BindBeginFunction(sessionKey: fixture.keyspace.session(visitor.id), newID: proposed))
            guard case .marked(_, _, _, _, let newID) = marked else {
                Issue.record("expected the session to be marked, got \(marked)")
                return
            }
            #expect(newID == proposed)
            // Another tab writes: refused, not acknowledged and dropped.
            let append = await expectSessionError {
                try await store.appendMessage(visitor.id, SessionMessage(role: "user", content: "lost?"))
            }
            #expect(append == .bindingInProgress)
            let metadata = await expectSessionError { try await store.setMetadata(visitor.id, key: "cart", value: ["book", "pen"]) }
            #expect(metadata == .bindingInProgress)
            #expect(await expectSessionError { _ = try await store.rotate(visitor.id) } == .bindingInProgress)
            // Reads and touches go on.
            try await store.touch(visitor.id)
            #expect(try await store.metadata(visitor.id) == ["cart": ["book"]])
            // The login's retry completes the same bind: one session, under the id first chosen.
            let bound = try await store.bind(visitor.id, to: "alice")
            #expect(bound.id == proposed)
            #expect(try await store.get(visitor.id) == nil)
            #expect(try await store.list(user: "alice").map(\.id) == [proposed])
            #expect(try await store.metadata(bound.id) == ["cart": ["book"]])
        }
    }

    /// What `bind` does before its last step: mark the session, place the copy. Returns the copy's
    /// id and the place call, to send again.
    private static func beginAndPlace(
        _ store: SessionStore, _ id: String, to user: String
    ) async throws -> (id: String, place: BindPlaceFunction) {
        let proposed = SessionID.make(bucket: store.keyspace.bucket(ofUser: user))
        let marked = try await store.redis.call(BindBeginFunction(sessionKey: store.keyspace.session(id), newID: proposed))
        guard case .marked(let expiry, let lastSeen, let fields, let messages, let newID) = marked else {
            throw SessionError.corrupted("expected the session to be marked, got \(marked)")
        }
        let place = BindPlaceFunction(
            sessionKey: store.keyspace.session(newID), user: user, oldID: id, timerExpiry: expiry, lastSeen: lastSeen,
            retention: store.retention(for: try store.resolve(.standard)), fields: fields, messages: messages)
        guard case .placed = try await store.redis.call(place) else { throw SessionError.corrupted("the copy was not placed") }
        return (newID, place)
    }

    /// A tab whose bind was slow places its copy after the user logged out: the copy was written
    /// again (EXISTS was 0) and the log-out undone. A late step never brings a session back.
    @Test(arguments: Deployment.standaloneAndCluster) func aLateBindStepNeverBringsBackASessionThatEnded(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment) { fixture in
            let store = fixture.store
            let visitor = try await store.createAnonymous(metadata: ["cart": ["book"]])
            let (newID, place) = try await Self.beginAndPlace(store, visitor.id, to: "dora")
            // The other tab's bind completes the same login, then the user logs out everywhere.
            #expect(try await store.bind(visitor.id, to: "dora").id == newID)
            #expect(try await store.deleteAll(user: "dora") == 1)
            // The slow tab's bind, from the start: the login it continues has ended.
            #expect(await expectSessionError { _ = try await store.bind(visitor.id, to: "dora") } == .notFound)
            // Its place step, late: nothing is written.
            guard case .notAlive = try await store.redis.call(place) else {
                Issue.record("a late place wrote the session again")
                return
            }
            #expect(try await store.get(newID) == nil)
            #expect(try await store.list(user: "dora").isEmpty)
        }
    }

    @Test(arguments: Deployment.everywhere) func twoTabsLoggingInAtOnceGetOneSession(_ deployment: Deployment) async throws {
        try await withStore(on: deployment, configure: { $0.expiryListener = true }) { fixture in
            let store = fixture.store
            for round in 0..<5 {
                let visitor = try await store.createAnonymous(metadata: ["round": .number(Double(round))])
                async let first = store.bind(visitor.id, to: "bob")
                async let second = store.bind(visitor.id, to: "bob")
                let ids = try await [first.id, second.id]
                #expect(ids[0] == ids[1], "both tabs continue the same session")
                #expect(try await store.get(visitor.id) == nil)
                #expect(try await store.metadata(ids[0])["round"] == .number(Double(round)))
            }
            #expect(try await store.count(user: "bob") == 5, "one live session per login, not two")
            // Binding to another user while a bind for bob is marked is refused.
            let contested = try await store.createAnonymous()
            _ = try await store.redis.call(
                BindBeginFunction(
                    sessionKey: fixture.keyspace.session(contested.id),
                    newID: SessionID.make(bucket: fixture.keyspace.bucket(ofUser: "bob"))))
            if fixture.keyspace.bucket(ofUser: "carol") != fixture.keyspace.bucket(ofUser: "bob") {
                #expect(await expectSessionError { _ = try await store.bind(contested.id, to: "carol") } == .notAnonymous)
            }
        }
    }
}

import EmbeddedRedis
import HiredisNIO
import SessionCache
import Testing
import Vapor
import VaporSessionCache
import VaporTesting

struct TestUser: SessionAuthenticatable {
    var sessionID: String
}

@Suite("SessionCacheDriver")
struct SessionCacheDriverTests {
    /// A Vapor app with the driver on a real redis-server.
    func withApp(_ body: @Sendable (Application, RedisServer, HiredisClient, SessionStore) async throws -> Void) async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                var configuration = SessionStoreConfiguration(namespace: "vapor")
                configuration.importedSessionGrace = .milliseconds(300)
                let store = try SessionStore(client: client, configuration: configuration)
                let app = try await Application.make(.testing)
                app.sessions.use { _ in
                    SessionCacheDriver(
                        store: store, authenticating: TestUser.self, redeemsImported: true, passive: { $0.url.path == "/poll" })
                }
                app.sessions.configuration = SessionCacheDriver.cookieConfiguration()
                let sessions = app.grouped(app.sessions.middleware)
                sessions.get("set", ":value") { request -> String in
                    request.session.data["color"] = request.parameters.get("value")
                    return "set"
                }
                sessions.get("get") { request -> String in request.session.data["color"] ?? "-" }
                sessions.get("login", ":user") { request -> String in
                    request.session.authenticate(TestUser(sessionID: request.parameters.get("user") ?? ""))
                    return "in"
                }
                sessions.get("logout") { request -> String in
                    request.session.unauthenticate(TestUser.self)
                    return "out"
                }
                // Ends the session (as log-out everywhere or an operator's kill would) while the
                // request runs, then writes to it.
                sessions.get("revoked-then-write") { request -> String in
                    if let id = request.session.id?.string { _ = try await store.delete(id) }
                    request.session.data["color"] = "revived?"
                    return "written"
                }
                sessions.get("poll") { request -> String in request.session.data["color"] ?? "-" }
                sessions.get("huge") { request -> String in
                    request.session.data["notes"] = String(repeating: "x", count: 100_000)
                    return "written?"
                }
                sessions.get("destroy") { request -> String in
                    request.session.destroy()
                    return "gone"
                }
                do {
                    try await body(app, server, client, store)
                } catch {
                    try await app.asyncShutdown()
                    throw error
                }
                try await app.asyncShutdown()
            }
        }
    }

    private func fcalls(_ client: HiredisClient) async throws -> Int {
        let stats = try await client.send(RESPCommand("INFO", "commandstats")).string ?? ""
        return RedisInfo(stats).commandStatistics["fcall"]?.calls ?? 0
    }

    @Test func aSafeCookieDataInRedisOnlyChangesWrittenAndAReadWritesNothing() async throws {
        try await withApp { app, _, client, store in
            var cookie: HTTPCookies.Value?
            try await app.testing().test(.GET, "set/blue") { response in
                cookie = response.headers.setCookie?["session"]
                let header = response.headers.first(name: .setCookie) ?? ""
                #expect(header.contains("HttpOnly") && header.contains("Secure") && header.contains("SameSite=Lax"))
            }
            let id = try #require(cookie?.string)
            #expect(try await store.metadata(id)["color"] == .string("blue"))
            var headers = HTTPHeaders()
            headers.cookie = ["session": try #require(cookie)]

            // A request that only reads: one call (resume, which slides the TTL), no write.
            _ = try await client.send(RESPCommand("CONFIG", "RESETSTAT"))
            try await app.testing().test(.GET, "get", headers: headers) { response in
                #expect(response.body.string == "blue")
            }
            #expect(try await fcalls(client) == 1)

            // A change: the changed key only.
            try await app.testing().test(.GET, "set/green", headers: headers) { _ in }
            #expect(try await store.metadata(id)["color"] == .string("green"))
        }
    }

    @Test func aMalformedOrEndedCookieGetsAFreshSessionNotAnError() async throws {
        try await withApp { app, _, _, store in
            for value in ["not-a-session", "AAA" + String(repeating: "A", count: 24)] {
                var headers = HTTPHeaders()
                headers.cookie = ["session": HTTPCookies.Value(string: value)]
                try await app.testing().test(.GET, "get", headers: headers) { response in
                    #expect(response.status == .ok)
                    #expect(response.body.string == "-")
                }
            }
            // Destroyed: deleted in Redis, the cookie expired.
            var cookie: HTTPCookies.Value?
            try await app.testing().test(.GET, "set/red") { response in cookie = response.headers.setCookie?["session"] }
            var headers = HTTPHeaders()
            headers.cookie = ["session": try #require(cookie)]
            try await app.testing().test(.GET, "destroy", headers: headers) { response in
                #expect(response.headers.setCookie?["session"]?.expires.map { $0 < Date() } == true)
            }
            #expect(try await store.get(try #require(cookie?.string)) == nil)
        }
    }

    @Test func theExpiryListenerRunsWithTheApplication() async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                var configuration = SessionStoreConfiguration(namespace: "vapor-hooks")
                configuration.expiryListener = true
                configuration.customIdleTimeouts = .milliseconds(100) ... .seconds(3600)
                let store = try SessionStore(client: client, configuration: configuration)
                let (expired, continuation) = AsyncStream.makeStream(of: String.self)
                let listener = ExpiryListener(store: store) { ended in continuation.yield(ended.session.id) }
                let app = try await Application.make(.testing)
                app.lifecycle.use(ExpiryListenerLifecycle(listener))
                try await app.asyncBoot()
                let session = try await store.create(user: "erin", mode: .custom(.milliseconds(300)))
                // The hook's call, or nil after 20 s.
                let first = await withTaskGroup(of: String?.self) { group in
                    group.addTask {
                        var iterator = expired.makeAsyncIterator()
                        return await iterator.next()
                    }
                    group.addTask {
                        try? await Task.sleep(for: .seconds(20))
                        return nil
                    }
                    let first = await group.next() ?? nil
                    group.cancelAll()
                    return first
                }
                #expect(first == session.id)
                try await app.asyncShutdown()
            }
        }
    }

    private func cookie(_ response: TestingHTTPResponse) -> HTTPCookies.Value? { response.headers.setCookie?["session"] }

    /// Logging in binds the anonymous session to its user under a new id: a planted id does not
    /// become authenticated, and the user's session list sees the session. Logging out ends it;
    /// its data carries on, anonymous, under another id.
    @Test func logInRotatesAndBindsTheSessionLogOutEndsIt() async throws {
        try await withApp { app, _, _, store in
            var anonymous: HTTPCookies.Value?
            try await app.testing().test(.GET, "set/blue") { anonymous = cookie($0) }
            let planted = try #require(anonymous)
            var headers = HTTPHeaders()
            headers.cookie = ["session": planted]
            var loggedIn: HTTPCookies.Value?
            try await app.testing().test(.GET, "login/alice", headers: headers) { loggedIn = cookie($0) }
            let bound = try #require(loggedIn?.string)
            #expect(bound != planted.string, "the id changes at log-in")
            #expect(try await store.get(planted.string) == nil, "the planted id is dead")
            #expect(try await store.get(bound)?.user == "alice")
            #expect(try await store.list(user: "alice").map(\.id) == [bound])
            #expect(try await store.metadata(bound)["color"] == .string("blue"), "the data came along")

            headers.cookie = ["session": try #require(loggedIn)]
            var loggedOut: HTTPCookies.Value?
            try await app.testing().test(.GET, "logout", headers: headers) { loggedOut = cookie($0) }
            let anonymousAgain = try #require(loggedOut?.string)
            #expect(anonymousAgain != bound)
            #expect(try await store.get(bound) == nil)
            #expect(try await store.list(user: "alice").isEmpty)
            #expect(try await store.get(anonymousAgain)?.user == nil)
            #expect(try await store.metadata(anonymousAgain)["color"] == .string("blue"))
        }
    }

    /// A session that ended while a request ran does not come back with the request's changes
    /// (it was recreated, with its user: a revoked log-in survived).
    /// A session as vapor/redis stores it (`vrs-<id>`: Vapor's own `SessionData` encoding, no TTL),
    /// imported: its cookie works once, the response carries a new id, and the user's list has it.
    @Test func anImportedVaporRedisSessionIsPickedUpOnceUnderANewCookie() async throws {
        try await withApp { app, server, _, store in
            let former = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let data = SessionData(initialData: ["_TestUserSession": "dana", "color": "green"])
            let value = String(decoding: try JSONEncoder().encode(data), as: UTF8.self)
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                _ = try await client.send(RESPCommand("SET", .string("vrs-\(former)"), .string(value)))
                let imported = try #require(
                    ImportedSession(vaporRedisKey: "vrs-\(former)", value: value, remaining: nil, userKey: "_TestUserSession"))
                _ = try await store.importSession(imported)
            }
            var old = HTTPHeaders()
            old.cookie = ["session": HTTPCookies.Value(string: former)]
            var replaced: HTTPCookies.Value?
            try await app.testing().test(.GET, "get", headers: old) { response in
                #expect(response.body.string == "green")
                replaced = cookie(response)
            }
            let new = try #require(replaced)
            #expect(new.string != former && store.isWellFormed(new.string))
            #expect(try await store.list(user: "dana").map(\.id) == [new.string])
            var headers = HTTPHeaders()
            headers.cookie = ["session": new]
            try await app.testing().test(.GET, "get", headers: headers) { #expect($0.body.string == "green") }
            // Within the grace (a tab restored with the first) the same session, then nothing.
            try await app.testing().test(.GET, "get", headers: old) { response in
                #expect(response.body.string == "green" && self.cookie(response)?.string == new.string)
            }
            try await Task.sleep(for: .milliseconds(350))
            try await app.testing().test(.GET, "get", headers: old) { #expect($0.body.string == "-") }
        }
    }

    /// Store errors are `AbortError`s: an outage is 503 (the cookie kept: nobody is logged out
    /// because Redis hiccuped), a limit 413; neither answer quotes the error.
    @Test func anOutageIs503AndALimit413NotA500() async throws {
        try await withApp { app, server, _, store in
            var cookie: HTTPCookies.Value?
            try await app.testing().test(.GET, "set/blue") { cookie = self.cookie($0) }
            var headers = HTTPHeaders()
            headers.cookie = ["session": try #require(cookie)]
            try await app.testing().test(.GET, "huge", headers: headers) { response in
                #expect(response.status == .payloadTooLarge)
                #expect(!response.body.string.contains("xxxx"))
            }
            #expect(try await store.metadata(try #require(cookie?.string))["notes"] == nil)

            await server.kill()
            try await app.testing().test(.GET, "get", headers: headers) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(self.cookie(response) == nil)  // the cookie is kept
                #expect(!response.body.string.contains("127.0.0.1"))
            }
            try await server.restart()
        }
    }

    /// A passive request (polling) reads the session without sliding its timer; any other slides it.
    @Test func passiveRequestsDoNotKeepASessionAlive() async throws {
        try await withApp { app, _, _, store in
            var cookie: HTTPCookies.Value?
            try await app.testing().test(.GET, "set/teal") { cookie = self.cookie($0) }
            let id = try #require(cookie?.string)
            var headers = HTTPHeaders()
            headers.cookie = ["session": try #require(cookie)]
            let before = try #require(try await store.get(id)).lastActivity
            // Redis's clock has millisecond resolution: let it move on.
            try await Task.sleep(for: .milliseconds(20))
            try await app.testing().test(.GET, "poll", headers: headers) { #expect($0.body.string == "teal") }
            #expect(try #require(try await store.get(id)).lastActivity == before)
            try await app.testing().test(.GET, "get", headers: headers) { #expect($0.body.string == "teal") }
            #expect(try #require(try await store.get(id)).lastActivity > before)
        }
    }

    @Test func aSessionEndedDuringARequestIsNotRecreated() async throws {
        try await withApp { app, _, _, store in
            var anonymous: HTTPCookies.Value?
            try await app.testing().test(.GET, "set/blue") { anonymous = cookie($0) }
            var headers = HTTPHeaders()
            headers.cookie = ["session": try #require(anonymous)]
            var loggedIn: HTTPCookies.Value?
            try await app.testing().test(.GET, "login/bob", headers: headers) { loggedIn = cookie($0) }
            headers.cookie = ["session": try #require(loggedIn)]
            try await app.testing().test(.GET, "revoked-then-write", headers: headers) { response in
                #expect(response.status == .ok)
            }
            #expect(try await store.list(user: "bob").isEmpty, "no session of bob's came back")
            #expect(try await store.get(try #require(loggedIn?.string)) == nil)
            try await app.testing().test(.GET, "get", headers: headers) { response in
                #expect(response.body.string == "-", "the next request starts without the ended session")
            }
        }
    }

    /// A listener on a store that is not set up for one used to fail in a task nobody watched:
    /// hooks silently never ran. It fails the boot now.
    @Test func aListenerThatCannotRunFailsTheBoot() async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                let store = try SessionStore(client: client, configuration: SessionStoreConfiguration(namespace: "vapor-no-listener"))
                let app = try await Application.make(.testing)
                app.lifecycle.use(ExpiryListenerLifecycle(ExpiryListener(store: store) { _ in }))
                await #expect(throws: SessionError.invalidConfiguration("an ExpiryListener needs a store with expiryListener = true")) {
                    try await app.asyncBoot()
                }
                try await app.asyncShutdown()
            }
        }
    }
}

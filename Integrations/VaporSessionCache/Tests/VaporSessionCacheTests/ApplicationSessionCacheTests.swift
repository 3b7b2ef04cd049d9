import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache
import Testing
import Vapor
import VaporSessionCache
import VaporTesting

/// `app.sessionCache` over real HTTP: a Vapor server on a loopback port, requests through Vapor's
/// HTTP client, a real redis-server.
@Suite("app.sessionCache over HTTP")
struct ApplicationSessionCacheTests {
    /// One answer of the live server.
    struct Answer {
        var status: HTTPResponseStatus
        var body: String
        var cookie: HTTPCookies.Value?
        var cookieHeader: String
    }

    /// A client of the live server that keeps nothing between requests: each carries the cookie
    /// it is given.
    struct Browser: Sendable {
        let app: Application
        let port: Int

        func get(_ path: String, cookie: HTTPCookies.Value? = nil, tab: String? = nil) async throws -> Answer {
            var headers = HTTPHeaders()
            if let cookie { headers.cookie = ["session": cookie] }
            if let tab { headers.add(name: "X-Tab", value: tab) }
            let response = try await app.client.get(URI(string: "http://127.0.0.1:\(port)/\(path)"), headers: headers)
            return Answer(
                status: response.status, body: response.body.map { String(buffer: $0) } ?? "",
                cookie: response.headers.setCookie?["session"], cookieHeader: response.headers.first(name: .setCookie) ?? "")
        }
    }

    /// An app configured through `app.sessionCache` (its own client, store and locks, run by its
    /// lifecycle), serving on a loopback port.
    func withLiveApp(
        namespace: String, listener: Bool = false, gate: Gate = Gate(), configure: (Application) throws -> Void = { _ in },
        _ body: @Sendable (Browser, RedisServer, Application) async throws -> Void
    ) async throws {
        try await RedisServer.with { server in
            let app = try await Application.make(.testing)
            var store = SessionStoreConfiguration(namespace: namespace)
            store.expiryListener = listener
            store.customIdleTimeouts = .milliseconds(100) ... .seconds(3600)
            var redis = server.configuration
            redis.commandTimeout = .milliseconds(500)  // an outage answers within a second
            try app.sessionCache.configure(redis: redis, store: store)
            let passive: @Sendable (Request) -> Bool = { $0.url.path == "/slow" }
            app.sessions.use(.sessionCache(authenticating: TestUser.self, passive: passive))
            app.sessions.configuration = SessionCacheDriver.cookieConfiguration(secure: false)
            app.middleware.use(app.sessionCache.middleware(passive: passive, tab: { $0.headers.first(name: "X-Tab") }))
            let authenticated = app.grouped(TestUser.sessionAuthenticator())
            app.get("set", ":value") { request -> String in
                request.session.data["color"] = request.parameters.get("value")
                return "set"
            }
            app.get("get") { request -> String in request.session.data["color"] ?? "-" }
            app.get("look") { request -> String in request.session.id?.string ?? "-" }
            app.get("login", ":user") { request -> String in
                request.session.authenticate(TestUser(sessionID: request.parameters.get("user") ?? ""))
                return "in"
            }
            authenticated.get("me") { request -> String in request.auth.get(TestUser.self)?.sessionID ?? "nobody" }
            app.get("count") { request -> String in
                // Read, yield, write: two requests of one session that overlap lose an increment.
                let count = Int(request.session.data["count"] ?? "0") ?? 0
                try await Task.sleep(for: .milliseconds(2))
                request.session.data["count"] = String(count + 1)
                return String(count + 1)
            }
            // A poll that reads the session, then waits for the test: a log-in happens meanwhile.
            app.get("slow") { request -> String in
                let color = request.session.data["color"] ?? "-"
                await gate.enter()
                return color
            }
            app.get("api", "logout") { request -> String in
                request.session.destroy()
                return "out"
            }
            app.get("store-user") { request -> String in
                guard let id = request.session.id?.string else { return "-" }
                return try await request.sessionStore.get(id)?.user ?? "-"
            }
            try configure(app)
            try await app.asyncBoot()
            try await app.server.start(address: .hostname("127.0.0.1", port: 0))
            let port = try #require(app.http.server.shared.localAddress?.port)
            do {
                try await body(Browser(app: app, port: port), server, app)
            } catch {
                await app.server.shutdown()
                try await app.asyncShutdown()
                throw error
            }
            await app.server.shutdown()
            try await app.asyncShutdown()
        }
    }

    /// The user is the session's, bound at log-in under a new id: Vapor's `SessionAuthenticator`
    /// finds it, the store's user lists see it, and it is no metadata field an app could overwrite.
    @Test func logInBindsTheUserWhichIsNoMetadataAndAuthenticates() async throws {
        try await withLiveApp(namespace: "vapor-live-login") { browser, _, app in
            let anonymous = try #require(try await browser.get("set/blue").cookie)
            let loggedIn = try #require(try await browser.get("login/alice", cookie: anonymous).cookie)
            #expect(loggedIn.string != anonymous.string)
            let store = app.sessionCache.store
            #expect(try await store.get(loggedIn.string)?.user == "alice")
            #expect(try await store.metadata(loggedIn.string) == ["color": .string("blue")])
            #expect(try await browser.get("me", cookie: loggedIn).body == "alice")
            #expect(try await browser.get("store-user", cookie: loggedIn).body == "alice")
            #expect(try await browser.get("me", cookie: anonymous).body == "nobody")
        }
    }

    /// A stale cookie (a bot replaying one, a session that expired) and a handler that only looks at
    /// the session store nothing, and set no cookie.
    @Test func aStaleCookieOrAnUnusedSessionStoresNothing() async throws {
        try await withLiveApp(namespace: "vapor-live-stale") { browser, server, _ in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                let before = try await client.send(RESPCommand("DBSIZE")).int
                let stale = HTTPCookies.Value(string: "AAA" + String(repeating: "B", count: 24))
                for _ in 0..<20 {
                    let answer = try await browser.get("get", cookie: stale)
                    #expect(answer.status == .ok && answer.body == "-")
                    #expect(answer.cookie == nil, "left as it is")
                }
                let looked = try await browser.get("look")
                #expect(looked.cookie == nil)
                #expect(try await client.send(RESPCommand("DBSIZE")).int == before)
            }
        }
    }

    /// A request that began before a log-in and ends after it leaves the new cookie alone (Vapor
    /// alone would set the old id again), and so does one that began after it with the old cookie
    /// (Vapor alone would clear it): the user stays logged in. `destroy()` on a path below `/`
    /// clears the `/` cookie.
    @Test func requestsOverlappingALogInLeaveItsCookieAlone() async throws {
        let gate = Gate()
        try await withLiveApp(namespace: "vapor-live-race", gate: gate) { browser, _, app in
            let anonymous = try #require(try await browser.get("set/blue").cookie)
            async let slow = browser.get("slow", cookie: anonymous)
            await gate.waitForEntry()
            let loggedIn = try #require(try await browser.get("login/hana", cookie: anonymous).cookie)
            #expect(loggedIn.string != anonymous.string)
            let late = try await browser.get("get", cookie: anonymous)
            #expect(late.body == "-" && late.cookie == nil, "no session under the old id, and no cookie set")
            gate.open()
            let overlapping = try await slow
            #expect(overlapping.body == "blue" && overlapping.cookie == nil, "the old id is not set again")
            #expect(try await app.sessionCache.store.get(loggedIn.string)?.user == "hana")

            let out = try await browser.get("api/logout", cookie: loggedIn)
            #expect(out.cookie?.string == "" && out.cookieHeader.contains("Max-Age=0") && out.cookieHeader.contains("Path=/"))
            #expect(try await app.sessionCache.store.get(loggedIn.string) == nil)
        }
    }

    /// The cookie lives as long as the session's absolute deadline by Redis's clock: a long-lived
    /// session keeps its cookie, and no cookie outlives its session's deadline.
    @Test func theCookiesMaxAgeIsTheSessionsAbsoluteDeadline() async throws {
        try await withLiveApp(namespace: "vapor-live-cookie") { browser, _, app in
            let first = try await browser.get("set/blue")
            let cookie = try #require(first.cookie)
            let session = try #require(try await app.sessionCache.store.get(cookie.string))
            let lifetime = Int(session.absoluteDeadline.timeIntervalSince(session.lastActivity))
            #expect(lifetime > 3600, "the standard mode's lifetime is hours")
            #expect(cookie.maxAge.map { abs($0 - lifetime) <= 1 } == true)

            // The same id is not set again (a request that began before a log-in must not undo
            // it): the cookie keeps the lifetime it was given with its id.
            #expect(try await browser.get("get", cookie: cookie).cookie == nil)
        }
    }

    /// Two tabs of one session, twenty requests each at once, every one a read-modify-write of a
    /// counter: the lock makes them take turns (from before the read to after the write), so no
    /// increment is lost. With a per-tab lock each tab's requests take turns.
    @Test func overlappingRequestsOfOneSessionTakeTurnsUnderTheLock() async throws {
        try await withLiveApp(namespace: "vapor-live-lock") { browser, _, app in
            let cookie = try #require(try await browser.get("set/blue").cookie)
            try await withThrowingTaskGroup(of: HTTPResponseStatus.self) { group in
                for index in 0..<40 {
                    group.addTask { try await browser.get("count", cookie: cookie, tab: index % 2 == 0 ? "a" : "b").status }
                }
                for try await status in group { #expect(status == .ok) }
            }
            #expect(try await app.sessionCache.store.metadata(cookie.string)["count"] == .string("40"))
        }
    }

    /// Redis unreachable: 503 with a fixed text, the cookie kept (nobody is logged out because
    /// Redis hiccuped), and the session there again once Redis is back.
    @Test func anOutageIsAnswered503AndTheUserIsNotLoggedOut() async throws {
        try await withLiveApp(namespace: "vapor-live-outage") { browser, server, _ in
            let cookie = try #require(try await browser.get("login/carol").cookie)
            server.pause()  // frozen, as a host swapping or a network partition would leave it
            let answer = try await browser.get("me", cookie: cookie)
            server.resume()
            #expect(answer.status == .serviceUnavailable)
            #expect(answer.cookie == nil, "the cookie is left as it is")
            #expect(!answer.body.contains("127.0.0.1"))
            // The client replaces the connection it presumed dead by itself.
            var me = ""
            for _ in 0..<50 where me != "carol" {
                me = try await browser.get("me", cookie: cookie).body
                if me != "carol" { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(me == "carol")
        }
    }

    /// Hooks given to `app.sessionCache.onExpiry` run in the application's lifecycle; shutting the
    /// application down while one runs lets it finish and finalizes its session: it is not cut
    /// to be run again by another instance.
    @Test func shutdownLetsARunningHookFinish() async throws {
        try await RedisServer.with { server in
            let app = try await Application.make(.testing)
            var store = SessionStoreConfiguration(namespace: "vapor-live-hooks")
            store.expiryListener = true
            store.customIdleTimeouts = .milliseconds(100) ... .seconds(3600)
            try app.sessionCache.configure(redis: server.configuration, store: store)
            let (started, startedContinuation) = AsyncStream.makeStream(of: String.self)
            let (release, releaseContinuation) = AsyncStream.makeStream(of: Void.self)
            let finished = NIOLockedValueBox<[String]>([])
            app.sessionCache.onExpiry { expired in
                startedContinuation.yield(expired.session.id)
                for await _ in release { break }
                // Not cancelled by the shutdown: it gets to do its work.
                try Task.checkCancellation()
                finished.withLockedValue { $0.append(expired.session.id) }
            }
            try await app.asyncBoot()
            let session = try await app.sessionCache.store.create(user: "erin", mode: .custom(.milliseconds(200)))
            var iterator = started.makeAsyncIterator()
            let running = await iterator.next()
            #expect(running == session.id)

            async let shutdown: Void = app.asyncShutdown()
            try await Task.sleep(for: .milliseconds(200))
            #expect(finished.withLockedValue { $0 }.isEmpty, "the shutdown waits for the hook")
            releaseContinuation.yield()
            try await shutdown
            #expect(finished.withLockedValue { $0 } == [session.id])

            // Finalized: nothing of the session is left to claim again.
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                let keys = try await client.send(RESPCommand("KEYS", "vapor-live-hooks:*")).array?.compactMap(\.string) ?? []
                #expect(!keys.contains { $0.contains(session.id) })
                for key in keys where key.hasSuffix(":claims") || key.hasSuffix(":deadlines") {
                    let members = try await client.send(RESPCommand("ZRANGE", .string(key), 0, -1)).array?.compactMap(\.string) ?? []
                    #expect(!members.contains { $0.contains(session.id) })
                }
            }
        }
    }

    /// `configure` refuses a second call, and a listener the store cannot run fails the boot.
    @Test func misconfigurationIsATypedErrorAtConfigurationOrBoot() async throws {
        try await RedisServer.with { server in
            let app = try await Application.make(.testing)
            try app.sessionCache.configure(redis: server.configuration)
            #expect(throws: SessionError.invalidConfiguration("app.sessionCache.configure was called twice")) {
                try app.sessionCache.configure(redis: server.configuration)
            }
            app.sessionCache.onExpiry { _ in }
            await #expect(throws: SessionError.invalidConfiguration("an ExpiryListener needs a store with expiryListener = true")) {
                try await app.asyncBoot()
            }
            try await app.asyncShutdown()
        }
    }
}

/// Vapor's session authenticator for ``TestUser``: the session's user id is the user.
extension TestUser {
    struct Authenticator: AsyncSessionAuthenticator {
        typealias User = TestUser
        func authenticate(sessionID: String, for request: Request) async throws {
            request.auth.login(TestUser(sessionID: sessionID))
        }
    }

    static func sessionAuthenticator() -> Authenticator { Authenticator() }
}

/// Holds a request in its handler until the test opens it.
final class Gate: Sendable {
    private let entered = AsyncStream.makeStream(of: Void.self)
    private let opened = AsyncStream.makeStream(of: Void.self)

    /// In a handler: says it is in, then waits until ``open()``.
    func enter() async {
        entered.continuation.yield()
        for await _ in opened.stream { return }
    }

    /// In the test: waits until a handler is in.
    func waitForEntry() async {
        for await _ in entered.stream { return }
    }

    func open() {
        opened.continuation.yield()
        opened.continuation.finish()
    }
}

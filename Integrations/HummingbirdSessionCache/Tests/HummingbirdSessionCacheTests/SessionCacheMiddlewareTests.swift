import EmbeddedRedis
import Foundation
import HTTPTypes
import HiredisNIO
import Hummingbird
import HummingbirdSessionCache
import HummingbirdTesting
import SessionCache
import Testing

/// An app's own session data, stored as one metadata value.
struct Cart: Codable, Sendable {
    var items: [String]
}

@Suite("SessionCacheMiddleware")
struct SessionCacheMiddlewareTests {
    /// A router with the middleware and a few routes, on a real redis-server.
    func withApp(
        locks: Bool = false, redeemsImported: Bool = false,
        _ body: @escaping @Sendable (any TestClientProtocol, RedisServer, SessionStore) async throws -> Void
    ) async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                var configuration = SessionStoreConfiguration(namespace: "web")
                configuration.importedSessionGrace = .milliseconds(300)
                let store = try SessionStore(client: client, configuration: configuration)
                let lock = locks ? SessionLock(store: store) : nil
                let router = Router(context: BasicSessionCacheRequestContext.self)
                router.add(middleware: SessionCacheMiddleware(store: store, locks: lock, redeemsImported: redeemsImported))
                router.get("/me") { _, context in context.session.user ?? "nobody" }
                router.post("/login/:user") { _, context in
                    try await context.session.logIn(user: try context.parameters.require("user"))
                    return "ok"
                }
                router.post("/theme/:theme") { _, context in
                    context.session.set("theme", .string(try context.parameters.require("theme")))
                    return context.session.lease == nil ? "unlocked" : "locked"
                }
                router.get("/theme") { _, context in context.session["theme"]?.stringValue ?? "-" }
                // Logs in (or rotates) and changes metadata in the same request: the write after the
                // handler goes to the new id.
                router.post("/login-with-theme/:user") { _, context in
                    try await context.session.logIn(user: try context.parameters.require("user"))
                    context.session.set("theme", "sepia")
                    return "ok"
                }
                router.post("/rotate-with-theme") { _, context in
                    try await context.session.rotate()
                    context.session.set("theme", "rotated")
                    return "ok"
                }
                router.post("/huge") { _, context in
                    context.session.set("notes", .string(String(repeating: "x", count: 100_000)))
                    return "written?"
                }
                router.post("/bad-key") { _, context in
                    context.session.set("\u{1}<script>", "x")  // a control character: invalid
                    return "written?"
                }
                router.post("/cart/:item") { _, context in
                    var cart = try context.session.get("cart", as: Cart.self) ?? Cart(items: [])
                    cart.items.append(try context.parameters.require("item"))
                    try context.session.set("cart", encoding: cart)
                    return "ok"
                }
                router.get("/cart") { _, context in (try context.session.get("cart", as: Cart.self)?.items ?? []).joined(separator: ",") }
                router.post("/logout-everywhere") { _, context in "\(try await context.session.logOutEverywhere())" }
                router.post("/logout-others") { _, context in "\(try await context.session.logOutOthers())" }
                router.get("/devices") { _, context in try await context.session.devices() }
                router.post("/device/:label") { _, context in
                    try await context.session.setDevice(try context.parameters.require("label"))
                    return "ok"
                }
                router.post("/end/:handle") { _, context in
                    "\(try await context.session.endSession(handle: try context.parameters.require("handle")))"
                }
                router.post("/rotate") { _, context in
                    try await context.session.rotate()
                    return "ok"
                }
                router.post("/logout") { _, context in
                    try await context.session.destroy()
                    return "ok"
                }
                let app = Application(router: router)
                // The lock's wake-ups run in its run(), as they would in the app's ServiceGroup.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    if let lock { group.addTask { try await lock.run() } }
                    try await app.test(.live) { http in try await body(http, server, store) }
                    await lock?.close()
                    group.cancelAll()
                }
            }
        }
    }

    private func sessionCookie(_ response: TestResponse) -> String? {
        response.headers[values: .setCookie].first { $0.hasPrefix("session=") }
    }

    private func cookieHeader(_ setCookie: String?) -> HTTPFields {
        guard let value = setCookie?.split(separator: ";").first else { return [:] }
        return [.cookie: String(value)]
    }

    @Test func logInSetsASafeCookieAndTheNextRequestHasTheUser() async throws {
        try await withApp { http, _, store in
            #expect(try await http.execute(uri: "/me", method: .get) { String(buffer: $0.body) } == "nobody")
            let setCookie = try await http.execute(uri: "/login/alice", method: .post) { self.sessionCookie($0) }
            let cookie = try #require(setCookie)
            #expect(
                cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Lax") && cookie.contains("Max-Age="))
            let headers = cookieHeader(cookie)
            #expect(try await http.execute(uri: "/me", method: .get, headers: headers) { String(buffer: $0.body) } == "alice")

            // Metadata written after the handler, only what changed; read back on the next request.
            _ = try await http.execute(uri: "/theme/dark", method: .post, headers: headers) { _ in }
            #expect(try await http.execute(uri: "/theme", method: .get, headers: headers) { String(buffer: $0.body) } == "dark")
            let id = String(cookie.split(separator: ";")[0].dropFirst("session=".count))
            #expect(try await store.metadata(id)["theme"] == .string("dark"))
        }
    }

    @Test func rotationAndLogoutChangeOrClearTheCookieAndTheOldIdStopsWorking() async throws {
        try await withApp { http, _, _ in
            let first = cookieHeader(try await http.execute(uri: "/login/bob", method: .post) { self.sessionCookie($0) })
            let rotated = try #require(try await http.execute(uri: "/rotate", method: .post, headers: first) { self.sessionCookie($0) })
            let second = cookieHeader(rotated)
            #expect(second != first)
            #expect(try await http.execute(uri: "/me", method: .get, headers: first) { String(buffer: $0.body) } == "nobody")
            #expect(try await http.execute(uri: "/me", method: .get, headers: second) { String(buffer: $0.body) } == "bob")

            let cleared = try #require(try await http.execute(uri: "/logout", method: .post, headers: second) { self.sessionCookie($0) })
            #expect(cleared.hasPrefix("session=;") && cleared.contains("Max-Age=0"))
            #expect(try await http.execute(uri: "/me", method: .get, headers: second) { String(buffer: $0.body) } == "nobody")
        }
    }

    /// A cookie that finds no session is no error, and is left as it is: the request may have
    /// begun before a log-in in another tab replaced it, and clearing it would log that tab out.
    @Test func aMalformedOrUnknownCookieIsAFreshStartNotAnErrorAndIsLeftAlone() async throws {
        try await withApp { http, _, _ in
            for value in ["../../etc/passwd", "AAA" + String(repeating: "A", count: 24), ""] {
                try await http.execute(uri: "/me", method: .get, headers: [.cookie: "session=\(value)"]) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body) == "nobody")
                    #expect(self.sessionCookie(response) == nil)
                }
            }
            // The id a log-in replaced: no session, and no Set-Cookie that would undo the log-in's.
            let replaced = cookieHeader(try await http.execute(uri: "/login/gus", method: .post) { self.sessionCookie($0) })
            let new = try await http.execute(uri: "/login/fay", method: .post, headers: replaced) { self.sessionCookie($0) }
            #expect(new != nil)
            try await http.execute(uri: "/me", method: .get, headers: replaced) { response in
                #expect(String(buffer: response.body) == "nobody")
                #expect(self.sessionCookie(response) == nil)
            }
        }
    }

    /// hummingbird-auth's session as its persist driver stores it (`hbs.<id>`: the app's session
    /// JSON-encoded, with a TTL), imported: its cookie works once, and is replaced by a new id.
    @Test func anImportedHummingbirdAuthSessionIsPickedUpOnceUnderANewCookie() async throws {
        struct AppSession: Codable {
            var userID: String
            var theme: String
        }
        try await withApp(redeemsImported: true) { http, server, store in
            let former = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let value = String(decoding: try JSONEncoder().encode(AppSession(userID: "erin", theme: "dark")), as: UTF8.self)
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                _ = try await client.send(RESPCommand("SET", .string("hbs.\(former)"), .string(value), "PX", 60_000))
                let ttl = try #require(try await client.send(RESPCommand("PTTL", .string("hbs.\(former)"))).int)
                let imported = try #require(
                    ImportedSession(hummingbirdAuthKey: "hbs.\(former)", value: value, remaining: .milliseconds(ttl), userField: "userID"))
                _ = try await store.importSession(imported)
            }
            let old: HTTPFields = [.cookie: "session=\(former)"]
            let replaced = try await http.execute(uri: "/theme", method: .get, headers: old) { response in
                #expect(String(buffer: response.body) == "dark")
                return self.sessionCookie(response)
            }
            let cookie = try #require(replaced)
            #expect(!cookie.contains(former))
            let new = cookieHeader(cookie)
            #expect(try await http.execute(uri: "/me", method: .get, headers: new) { String(buffer: $0.body) } == "erin")
            // A tab restored with the first gets the same session (its response sets the same cookie)...
            let twin = try await http.execute(uri: "/me", method: .get, headers: old) { (String(buffer: $0.body), self.sessionCookie($0)) }
            #expect(twin.0 == "erin" && twin.1?.split(separator: ";").first == cookie.split(separator: ";").first)
            // ...and after the grace the old cookie is nobody's; it is left alone (clearing it could
            // overwrite the new one).
            try await Task.sleep(for: .milliseconds(350))
            let late = try await http.execute(uri: "/me", method: .get, headers: old) { (String(buffer: $0.body), self.sessionCookie($0)) }
            #expect(late.0 == "nobody" && late.1 == nil)
        }
    }

    @Test func anOutageFailsClosedWith503InsteadOfLoggingEveryoneOut() async throws {
        try await withApp { http, server, _ in
            let headers = cookieHeader(try await http.execute(uri: "/login/carol", method: .post) { self.sessionCookie($0) })
            await server.kill()
            try await http.execute(uri: "/me", method: .get, headers: headers) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(self.sessionCookie(response) == nil)  // the cookie is kept
            }
            try await server.restart()
            #expect(try await http.execute(uri: "/me", method: .get, headers: headers) { String(buffer: $0.body) } == "nobody")
        }
    }

    @Test func withLocksEachRequestHoldsTheSessionsLease() async throws {
        try await withApp(locks: true) { http, _, _ in
            let headers = cookieHeader(try await http.execute(uri: "/login/dave", method: .post) { self.sessionCookie($0) })
            #expect(try await http.execute(uri: "/theme/light", method: .post, headers: headers) { String(buffer: $0.body) } == "locked")
            // Two requests of one session at once: both succeed, one after the other.
            try await withThrowingTaskGroup(of: Int.self) { group in
                for theme in ["red", "blue"] {
                    group.addTask {
                        try await http.execute(uri: "/theme/\(theme)", method: .post, headers: headers) { $0.status.code }
                    }
                }
                for try await status in group { #expect(status == 200) }
            }
        }
    }

    /// With locks, a log-in or rotation followed by metadata changes writes them to the new id (the
    /// lease named the old one: the write was refused as stale, answered 400, and the user was
    /// logged out).
    @Test(arguments: [false, true])
    func logInAndRotationThenAWriteKeepTheUserLoggedIn(locks: Bool) async throws {
        try await withApp(locks: locks) { http, _, store in
            let response = try await http.execute(uri: "/login-with-theme/erin", method: .post) { ($0.status, self.sessionCookie($0)) }
            #expect(response.0 == .ok)
            let cookie = try #require(response.1)
            let id = String(cookie.split(separator: ";")[0].dropFirst("session=".count))
            #expect(try await store.metadata(id)["theme"] == .string("sepia"))

            let rotated = try await http.execute(uri: "/rotate-with-theme", method: .post, headers: cookieHeader(cookie)) {
                ($0.status, self.sessionCookie($0))
            }
            #expect(rotated.0 == .ok)
            let newCookie = try #require(rotated.1)
            let newID = String(newCookie.split(separator: ";")[0].dropFirst("session=".count))
            let theme = try await store.metadata(newID)["theme"]
            #expect(newID != id && theme == .string("rotated"))
            #expect(
                try await http.execute(uri: "/me", method: .get, headers: cookieHeader(newCookie)) { String(buffer: $0.body) } == "erin")
        }
    }

    /// A limit is 413 and bad input 400, each with a fixed text (the error's description, which
    /// quotes the input, is not echoed); nothing is written.
    @Test func limitsAndBadInputAreAnsweredWithoutEchoingIt() async throws {
        try await withApp(locks: true) { http, _, store in
            let cookie = try #require(try await http.execute(uri: "/login/fay", method: .post) { self.sessionCookie($0) })
            let id = String(cookie.split(separator: ";")[0].dropFirst("session=".count))
            let huge = try await http.execute(uri: "/huge", method: .post, headers: cookieHeader(cookie)) {
                ($0.status, String(buffer: $0.body))
            }
            #expect(huge.0 == .contentTooLarge && huge.1.contains("too large"))
            let bad = try await http.execute(uri: "/bad-key", method: .post, headers: cookieHeader(cookie)) {
                ($0.status, String(buffer: $0.body))
            }
            #expect(bad.0 == .badRequest && !bad.1.contains("script"))
            #expect(try await store.metadata(id).isEmpty)
            // The lock was given back each time: the next request is not kept waiting.
            #expect(try await http.execute(uri: "/me", method: .get, headers: cookieHeader(cookie)) { String(buffer: $0.body) } == "fay")
        }
    }

    /// Typed values, a second log-in of the same user (data kept, id changed), log out of the
    /// other devices, then of every device.
    @Test func codableDataSameUserLogInAndLogOutEverywhere() async throws {
        try await withApp { http, _, _ in
            func body(_ uri: String, _ method: HTTPRequest.Method, _ cookie: String?) async throws -> String {
                try await http.execute(uri: uri, method: method, headers: self.cookieHeader(cookie)) { String(buffer: $0.body) }
            }
            let first = try await http.execute(uri: "/login/gil", method: .post) { self.sessionCookie($0) }
            _ = try await body("/cart/apple", .post, first)
            _ = try await body("/cart/pear", .post, first)
            #expect(try await body("/cart", .get, first) == "apple,pear")

            // The same user again: a new id, the data kept; the old id no longer works.
            let again = try await http.execute(uri: "/login/gil", method: .post, headers: cookieHeader(first)) { self.sessionCookie($0) }
            #expect(again != nil && again != first)
            #expect(try await body("/cart", .get, again) == "apple,pear")
            #expect(try await body("/me", .get, first) == "nobody")

            let phone = try await http.execute(uri: "/login/gil", method: .post) { self.sessionCookie($0) }
            let laptop = try await http.execute(uri: "/login/gil", method: .post) { self.sessionCookie($0) }
            #expect(try await body("/logout-others", .post, laptop) == "2")
            #expect(try await body("/me", .get, again) == "nobody")
            #expect(try await body("/me", .get, phone) == "nobody")
            #expect(try await body("/me", .get, laptop) == "gil")

            let cleared = try await http.execute(uri: "/logout-everywhere", method: .post, headers: cookieHeader(laptop)) {
                (String(buffer: $0.body), self.sessionCookie($0))
            }
            #expect(cleared.0 == "1" && cleared.1?.contains("Max-Age=0") == true)
            #expect(try await body("/me", .get, laptop) == "nobody")
        }
    }

    /// Two tabs change the same value at once: with locks, each change is made to what the other
    /// wrote (the session is read again under the lock), so none is lost.
    @Test func withLocksConcurrentReadModifyWritesLoseNothing() async throws {
        try await withApp(locks: true) { http, _, _ in
            let cookie = cookieHeader(try await http.execute(uri: "/login/hal", method: .post) { self.sessionCookie($0) })
            let items = (1...8).map { "item\($0)" }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for item in items {
                    group.addTask { _ = try await http.execute(uri: "/cart/\(item)", method: .post, headers: cookie) { $0.status } }
                }
                try await group.waitForAll()
            }
            let cart = try await http.execute(uri: "/cart", method: .get, headers: cookie) { String(buffer: $0.body) }
            #expect(Set(cart.split(separator: ",").map(String.init)) == Set(items))
        }
    }

    /// "Where you are signed in": each device of the user with its label and whether it is this
    /// one, as JSON with handles and no ids; a handle signs that device out, and only the user's.
    @Test func theDeviceListShowsHandlesNotIdsAndAHandleSignsThatDeviceOut() async throws {
        try await withApp { http, _, _ in
            let laptop = cookieHeader(try await http.execute(uri: "/login/dora", method: .post) { self.sessionCookie($0) })
            let phone = cookieHeader(try await http.execute(uri: "/login/dora", method: .post) { self.sessionCookie($0) })
            let eve = cookieHeader(try await http.execute(uri: "/login/eve", method: .post) { self.sessionCookie($0) })
            _ = try await http.execute(uri: "/device/laptop", method: .post, headers: laptop) { _ in }
            _ = try await http.execute(uri: "/device/phone", method: .post, headers: phone) { _ in }
            let body = try await http.execute(uri: "/devices", method: .get, headers: phone) { String(buffer: $0.body) }
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601  // Hummingbird's encoding of dates
            let devices = try decoder.decode([DeviceSession].self, from: Data(body.utf8))
            #expect(devices.map(\.device) == ["phone", "laptop"] && devices.map(\.isCurrent) == [true, false])
            for header in [laptop, phone] {
                let id = try #require(header[.cookie]?.dropFirst("session=".count))
                #expect(!body.contains(id))
            }
            // Eve cannot sign dora's laptop out; dora can.
            #expect(
                try await http.execute(uri: "/end/\(devices[1].handle)", method: .post, headers: eve) { String(buffer: $0.body) } == "false"
            )
            #expect(try await http.execute(uri: "/me", method: .get, headers: laptop) { String(buffer: $0.body) } == "dora")
            #expect(
                try await http.execute(uri: "/end/\(devices[1].handle)", method: .post, headers: phone) { String(buffer: $0.body) }
                    == "true")
            #expect(try await http.execute(uri: "/me", method: .get, headers: laptop) { String(buffer: $0.body) } == "nobody")
            #expect(try await http.execute(uri: "/me", method: .get, headers: phone) { String(buffer: $0.body) } == "dora")
        }
    }
}

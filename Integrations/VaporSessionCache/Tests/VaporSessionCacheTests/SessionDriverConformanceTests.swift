import EmbeddedRedis
import Foundation
import HiredisNIO
import SessionCache
import Testing
import Vapor
import VaporSessionCache
import VaporTesting

/// What Vapor's own session and authentication tests (4.122: `SessionTests`, `AsyncSessionTests`,
/// `AuthenticationTests.testSessionAuthentication`) and vapor/redis's `testSessions` expect of a
/// sessions driver, with this one: `app.sessions.use(.sessionCache)` and Vapor's own
/// `app.sessions.middleware` and `SessionAuthenticator`, booted the way `app.testing()` boots.
@Suite("Vapor's SessionDriver contract")
struct SessionDriverConformanceTests {
    func withApp(_ body: @Sendable (Application, SessionStore) async throws -> Void) async throws {
        try await RedisServer.with { server in
            let app = try await Application.make(.testing)
            try app.sessionCache.configure(redis: server.configuration, store: SessionStoreConfiguration(namespace: "conformance"))
            app.sessions.use(.sessionCache(authenticating: TestUser.self))
            let sessions = app.grouped(app.sessions.middleware, TestUser.sessionAuthenticator())
            sessions.get("set") { request -> String in
                request.session.data["foo"] = "bar"
                return "set"
            }
            sessions.get("get") { request -> String in
                guard let foo = request.session.data["foo"] else { throw Abort(.badRequest) }
                return foo
            }
            sessions.get("del") { request -> String in
                request.session.destroy()
                return "del"
            }
            sessions.get("login", ":user") { request -> String in
                // What a bearer or password authenticator does: SessionAuthenticator persists it.
                request.auth.login(TestUser(sessionID: request.parameters.get("user") ?? ""))
                return "in"
            }
            sessions.get("me") { request -> String in try request.auth.require(TestUser.self).sessionID }
            do {
                try await body(app, app.sessionCache.store)
            } catch {
                try await app.asyncShutdown()
                throw error
            }
            try await app.asyncShutdown()
        }
    }

    private func cookie(_ response: TestingHTTPResponse) -> HTTPCookies.Value? { response.headers.setCookie?["session"] }

    /// `testInvalidCookie`: no cookie, no data; a cookie the driver never issued gets a new,
    /// different cookie whose session reads back.
    @Test func aCookieNeverIssuedGetsANewSessionThatReadsBack() async throws {
        try await withApp { app, _ in
            try await app.testing().test(.GET, "get") { #expect($0.status == .badRequest) }
            var issued: HTTPCookies.Value?
            try await app.testing().test(
                .GET, "set", beforeRequest: { $0.headers.cookie = ["session": "foo"] },
                afterResponse: { response in
                    #expect(response.status == .ok)
                    issued = cookie(response)
                })
            let new = try #require(issued)
            #expect(new.string != "foo")
            try await app.testing().test(
                .GET, "get", beforeRequest: { $0.headers.cookie = ["session": new] },
                afterResponse: { response in
                    #expect(response.status == .ok)
                    #expect(response.body.string == "bar")
                })
        }
    }

    /// `testSessionDestroy`: a destroyed session is deleted and its cookie expired.
    @Test func destroyDeletesTheSessionAndExpiresTheCookie() async throws {
        try await withApp { app, store in
            var issued: HTTPCookies.Value?
            try await app.testing().test(.GET, "set") { issued = cookie($0) }
            let id = try #require(issued?.string)
            #expect(try await store.get(id) != nil)
            try await app.testing().test(
                .GET, "del", beforeRequest: { $0.headers.cookie = ["session": try #require(issued)] },
                afterResponse: { response in
                    #expect(response.body.string == "del")
                    let expired = try #require(cookie(response))
                    #expect(expired.string.isEmpty && expired.expires.map { $0 <= Date() } == true)
                })
            #expect(try await store.get(id) == nil)
        }
    }

    /// `testSessionAuthentication`: unauthenticated is 401 without a cookie; a log-in gives one
    /// (here under a new id, bound to the user); with it the user is authenticated.
    @Test func aLogInThroughSessionAuthenticatorAuthenticatesLaterRequests() async throws {
        try await withApp { app, store in
            try await app.testing().test(.GET, "me") { response in
                #expect(response.status == .unauthorized)
                #expect(cookie(response) == nil)
            }
            var issued: HTTPCookies.Value?
            try await app.testing().test(.GET, "login/vapor") { issued = cookie($0) }
            let loggedIn = try #require(issued)
            #expect(try await store.get(loggedIn.string)?.user == "vapor")
            try await app.testing().test(
                .GET, "me", beforeRequest: { $0.headers.cookie = ["session": loggedIn] },
                afterResponse: { response in
                    #expect(response.status == .ok)
                    #expect(response.body.string == "vapor")
                    #expect(cookie(response)?.string == loggedIn.string)
                })
        }
    }

    /// `testSessionNotCreatedWhenNoCookieProvided`, and vapor/redis's check that the cookie holds
    /// the id only (no key prefix of the store's).
    @Test func noCookieNoSessionAndTheCookieIsTheBareID() async throws {
        try await withApp { app, store in
            try await app.testing().test(.GET, "me") { #expect(cookie($0) == nil) }
            var issued: HTTPCookies.Value?
            try await app.testing().test(.GET, "set") { issued = cookie($0) }
            let id = try #require(issued?.string)
            #expect(store.isWellFormed(id) && !id.contains("conformance") && !id.contains(":"))
        }
    }
}

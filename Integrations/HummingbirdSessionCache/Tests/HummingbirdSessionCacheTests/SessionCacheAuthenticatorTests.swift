import EmbeddedRedis
import HTTPTypes
import HiredisNIO
import Hummingbird
import HummingbirdAuth
import HummingbirdSessionCache
import HummingbirdTesting
import SessionCache
import Testing

/// An application's user, found from the session's user id.
struct AppUser: Sendable {
    var name: String
}

/// A context with both a session of the store and HummingbirdAuth's identity.
struct AuthenticatedContext: SessionCacheRequestContext, AuthRequestContext {
    var coreContext: CoreRequestContextStorage
    var identity: AppUser?
    let session = WebSession()

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

@Suite("SessionCacheAuthenticator")
struct SessionCacheAuthenticatorTests {
    /// Over real HTTP: the session's user is `context.identity` for HummingbirdAuth's
    /// `IsAuthenticatedMiddleware` and `requireIdentity()`; an anonymous session, an unknown user or
    /// a session logged out elsewhere is no identity.
    @Test func theSessionsUserIsTheIdentityUntilTheSessionEnds() async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                let store = try SessionStore(client: client, configuration: SessionStoreConfiguration(namespace: "auth"))
                let router = Router(context: AuthenticatedContext.self)
                router.add(middleware: SessionCacheMiddleware(store: store, cookie: .init(secure: false)))
                router.add(
                    middleware: SessionCacheAuthenticator(context: AuthenticatedContext.self) { user, _ in
                        user == "mallory" ? nil : AppUser(name: user)  // not (or no longer) a user of the app
                    })
                router.post("/login/:user") { _, context in
                    try await context.session.logIn(user: try context.parameters.require("user"))
                    return "ok"
                }
                router.post("/anonymous") { _, context in
                    try await context.session.startAnonymous()
                    return "ok"
                }
                router.group("/private").add(middleware: IsAuthenticatedMiddleware()).get("/me") { _, context in
                    try context.requireIdentity().name
                }
                let app = Application(router: router)
                try await app.test(.live) { http in
                    func cookie(_ path: String) async throws -> HTTPFields {
                        let setCookie = try await http.execute(uri: path, method: .post) { response in
                            response.headers[values: .setCookie].first { $0.hasPrefix("session=") }
                        }
                        return [.cookie: String(try #require(setCookie).split(separator: ";")[0])]
                    }
                    func me(_ headers: HTTPFields) async throws -> (HTTPResponse.Status, String) {
                        try await http.execute(uri: "/private/me", method: .get, headers: headers) { ($0.status, String(buffer: $0.body)) }
                    }
                    #expect(try await me([:]).0 == .unauthorized)
                    #expect(try await me(try await cookie("/anonymous")).0 == .unauthorized)
                    #expect(try await me(try await cookie("/login/mallory")).0 == .unauthorized)

                    let alice = try await cookie("/login/alice")
                    let answer = try await me(alice)
                    #expect(answer.0 == .ok && answer.1 == "alice")
                    // Logged out everywhere (another device, an operator): no identity any more.
                    #expect(try await store.deleteAll(user: "alice") == 1)
                    #expect(try await me(alice).0 == .unauthorized)
                }
            }
        }
    }
}

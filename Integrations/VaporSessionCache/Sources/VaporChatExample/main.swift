// The example chat on Vapor: the same page and API as the Hummingbird one (ChatExample), on
// `app.sessionCache`. Several instances behind a load balancer share everything through Redis;
// the browser test (Tests/Browser/chat_test.py) runs against both.
//
// Environment: HOST (127.0.0.1), PORT (8080), REDIS_URL (redis://127.0.0.1:6379), INSTANCE (a
// name shown in the page), CHAT_IDLE_SECONDS (idle timeout of the "short" mode, 30),
// CHAT_WARNING_SECONDS (10), SECURE_COOKIE (1; 0 for plain HTTP on localhost), CHAT_ADMIN_TOKEN
// (the bearer token of /admin/hook-runs; unset or empty: no admin endpoint).
import ChatPage
import Foundation
import HiredisNIO
import SessionCache
import Vapor
import VaporSessionCache

let environment = ProcessInfo.processInfo.environment
let port = Int(environment["PORT"] ?? "") ?? 8080
let instance = environment["INSTANCE"] ?? "chat-\(port)"
let idle = Duration.seconds(Int(environment["CHAT_IDLE_SECONDS"] ?? "") ?? 30)
let warning = Duration.seconds(Int(environment["CHAT_WARNING_SECONDS"] ?? "") ?? 10)
let adminToken = environment["CHAT_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }

/// The chat's user, as Vapor's authentication knows it: its id is the session's user.
struct ChatUser: SessionAuthenticatable {
    var name: String
    var sessionID: String { name }
}

/// Finds the session's user for `req.auth` (Vapor's session authentication).
struct ChatUserAuthenticator: AsyncSessionAuthenticator {
    typealias User = ChatUser
    func authenticate(sessionID: String, for request: Request) async throws { request.auth.login(ChatUser(name: sessionID)) }
}

extension ChatState: @retroactive Content {}
extension ChatConversations: @retroactive Content {}
struct Login: Content { var user: String }
struct Text: Content { var text: String }
struct ModeChoice: Content { var mode: String }
struct DeviceHandle: Content { var handle: String }

/// A response of the page or one of its files.
func asset(_ text: String, type: String) -> Response {
    Response(status: .ok, headers: ["Content-Type": type, "Content-Security-Policy": securityPolicy], body: .init(string: text))
}

extension Request {
    /// The session's id, or 401.
    var sessionID: String {
        get throws {
            guard let id = session.id?.string, !id.isEmpty else { throw Abort(.unauthorized) }
            return id
        }
    }
}

let app = try await Application.make(.detect(arguments: ["serve"]))
app.http.server.configuration.hostname = environment["HOST"] ?? "127.0.0.1"
app.http.server.configuration.port = port
app.http.server.configuration.serverName = instance

var redisConfiguration = try HiredisConfiguration(url: environment["REDIS_URL"] ?? "redis://127.0.0.1:6379")
redisConfiguration.clientName = instance
var storeConfiguration = SessionStoreConfiguration(namespace: "chat")
storeConfiguration.expiryListener = true
storeConfiguration.messageWindow = 50
// Vapor gives a session its id after the handler: sessions start in the chat's own mode.
storeConfiguration.defaultMode = .custom(idle)
try app.sessionCache.configure(redis: redisConfiguration, store: storeConfiguration)
// The cleanup hook: once per ended conversation, on whichever instance claims it; the count per
// user is kept in Redis for the admin endpoint (and the browser test).
app.sessionCache.onExpiry { expired in
    app.logger.info("cleanup hook ran", metadata: ["reason": "\(expired.reason)", "attempt": "\(expired.attempt)"])
    _ = try await app.sessionCache.client.pipeline([
        RESPCommand("HINCRBY", "chat:hook-runs", .string(expired.session.user ?? "-"), 1), RESPCommand("EXPIRE", "chat:hook-runs", 86_400),
    ])
}
// The page polls its state and loads its files: that must not keep an idle conversation alive.
let passive: @Sendable (Request) -> Bool = { $0.method == .GET && ["/api/state", "/app.js", "/app.css"].contains($0.url.path) }
app.sessions.use(.sessionCache(authenticating: ChatUser.self, passive: passive))
app.sessions.configuration = SessionCacheDriver.cookieConfiguration(name: "chat", secure: environment["SECURE_COOKIE"] != "0")
app.middleware.use(app.sessionCache.middleware(passive: passive))
let routes = app.grouped(ChatUserAuthenticator())

routes.get { _ in asset(page, type: "text/html; charset=utf-8") }
routes.get("app.js") { _ in asset(script, type: "text/javascript; charset=utf-8") }
routes.get("app.css") { _ in asset(stylesheet, type: "text/css; charset=utf-8") }
routes.get("api", "state") { request -> ChatState in
    guard let id = request.session.id?.string, !id.isEmpty, let session = try await request.sessionStore.get(id) else {
        return ChatState(instance: instance)
    }
    let messages = try await request.sessionStore.recentMessages(id, limit: 50)
    return ChatState(instance: instance, session: session, messages: messages, warning: warning)
}
routes.post("api", "login") { request -> HTTPStatus in
    let login = try request.content.decode(Login.self)
    guard !login.user.isEmpty, login.user.count <= 64 else { throw Abort(.badRequest, reason: "a user name, please") }
    // Vapor's session authenticator stores the user in the session after the handler, and the
    // driver binds the session to the user under a new id when the response is written.
    request.auth.login(ChatUser(name: login.user))
    request.session.data["device"] = deviceLabel(userAgent: request.headers.first(name: .userAgent))
    return .ok
}
routes.post("api", "messages") { request -> HTTPStatus in
    let id = try request.sessionID
    let text = try request.content.decode(Text.self).text
    try await request.sessionStore.appendTurn(id, user: text, assistant: "echo: \(text)", lease: request.sessionLease)
    // The device's label, kept in the session's data at log-in (its id was not known yet), moves
    // to the store's device field once.
    if let device = request.session.data["device"] {
        try await request.sessionStore.setDevice(id, label: device)
        request.session.data["device"] = nil
    }
    return .ok
}
routes.post("api", "mode") { request -> HTTPStatus in
    let choice = try request.content.decode(ModeChoice.self)
    try await request.sessionStore.setTimeoutMode(
        try request.sessionID, timeoutMode(named: choice.mode, short: idle), lease: request.sessionLease)
    return .ok
}
routes.get("api", "conversations") { request -> ChatConversations in
    ChatConversations(try await request.sessionStore.list(user: try request.auth.require(ChatUser.self).name))
}
routes.get("api", "devices") { request -> [DeviceSession] in
    let user = try request.auth.require(ChatUser.self)
    return try await request.sessionStore.devices(user: user.name, current: try request.sessionID)
}
routes.post("api", "devices", "end") { request -> HTTPStatus in
    let user = try request.auth.require(ChatUser.self)
    let handle = try request.content.decode(DeviceHandle.self).handle
    return try await request.sessionStore.endSession(handle: handle, user: user.name) ? .ok : .notFound
}
routes.post("api", "logout-everywhere") { request -> HTTPStatus in
    let user = try request.auth.require(ChatUser.self)
    request.session.destroy()
    _ = try await request.sessionStore.deleteAll(user: user.name)
    return .ok
}
// The hook's counts, for the operator and the browser test: only with the token
// (`Authorization: Bearer CHAT_ADMIN_TOKEN`); without one configured, there is no such endpoint.
routes.get("admin", "hook-runs") { request -> String in
    guard let adminToken else { throw Abort(.notFound) }
    guard let bearer = request.headers.bearerAuthorization, isAdminToken(bearer.token, adminToken) else { throw Abort(.unauthorized) }
    let pairs = try await app.sessionCache.client.send(RESPCommand("HGETALL", "chat:hook-runs")).array?.compactMap(\.string) ?? []
    return stride(from: 0, to: pairs.count - 1, by: 2).map { "\(pairs[$0]) \(pairs[$0 + 1])" }.joined(separator: "\n")
}

try await app.execute()
try await app.asyncShutdown()

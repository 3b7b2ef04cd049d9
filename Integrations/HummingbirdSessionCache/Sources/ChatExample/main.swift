// The example chat (Examples/Chat): a Hummingbird app where each user's conversation is a session.
// Several instances behind a load balancer share everything through Redis: any instance answers
// any request, a restart loses nothing, two tabs take turns on the session's lock, the expiry
// hook runs once per ended conversation whichever instance is up.
//
// Environment: HOST (127.0.0.1; 0.0.0.0 in a container), PORT (8080), REDIS_URL (redis://127.0.0.1:6379), INSTANCE (a name shown in the
// page), CHAT_IDLE_SECONDS (idle timeout of the "short" mode, 30), CHAT_WARNING_SECONDS (10),
// SECURE_COOKIE (1; 0 for plain HTTP on localhost), METRICS_PORT (Prometheus text on
// /metrics; unset: no metrics endpoint), CHAT_ADMIN_TOKEN (the bearer token of /admin/hook-runs;
// unset or empty: no admin endpoint).
import ChatPage
import Foundation
import HiredisNIO
import Hummingbird
import HummingbirdSessionCache
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import SessionCache

let environment = ProcessInfo.processInfo.environment
let port = Int(environment["PORT"] ?? "") ?? 8080
let instance = environment["INSTANCE"] ?? "chat-\(port)"
let idle = Duration.seconds(Int(environment["CHAT_IDLE_SECONDS"] ?? "") ?? 30)
let warning = Duration.seconds(Int(environment["CHAT_WARNING_SECONDS"] ?? "") ?? 10)
let adminToken = environment["CHAT_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
let logger: Logger = {
    var logger = Logger(label: instance)
    logger.logLevel = .info
    return logger
}()

// Metrics: bootstrapped before the client and the store are made (their defaults pick the
// system up). The store's operations take well under a millisecond: buckets from 50 µs.
let registry = PrometheusCollectorRegistry()
var prometheus = PrometheusMetricsFactory(registry: registry)
prometheus.defaultDurationHistogramBuckets = [
    .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
    .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
    .milliseconds(500), .seconds(1),
]
MetricsSystem.bootstrap(prometheus)
let activeSessions = Gauge(label: "chat_active_sessions")
let activeUsers = Gauge(label: "chat_users")

var redisConfiguration = try HiredisConfiguration(url: environment["REDIS_URL"] ?? "redis://127.0.0.1:6379")
redisConfiguration.clientName = instance
let redis = try HiredisClient(configuration: redisConfiguration)

var storeConfiguration = SessionStoreConfiguration(namespace: "chat")
storeConfiguration.expiryListener = true
storeConfiguration.messageWindow = 50
storeConfiguration.logger = logger
let store = try SessionStore(client: redis, configuration: storeConfiguration)
let locks = SessionLock(store: store)

// The cleanup hook: runs once per ended conversation, on whichever instance claims it. The count
// per session is kept in Redis so that the admin endpoint (and the browser test) can see it.
let listener = ExpiryListener(store: store) { expired in
    logger.info(
        "cleanup hook ran",
        metadata: ["user": "\(expired.session.user ?? "-")", "reason": "\(expired.reason)", "attempt": "\(expired.attempt)"])
    _ = try await redis.pipeline([
        RESPCommand("HINCRBY", "chat:hook-runs", .string(expired.session.user ?? "-"), 1),
        RESPCommand("EXPIRE", "chat:hook-runs", 86_400),
    ])
}

extension ChatState: ResponseEncodable {}
extension ChatConversations: ResponseEncodable {}

/// A response of the page or one of its files.
func asset(_ text: String, type: String) -> Response {
    Response(
        status: .ok, headers: [.contentType: type, .contentSecurityPolicy: securityPolicy],
        body: .init(byteBuffer: ByteBuffer(string: text)))
}

struct Login: Decodable { var user: String }
struct Text: Decodable { var text: String }
struct ModeChoice: Decodable { var mode: String }
struct DeviceHandle: Decodable { var handle: String }

let router = Router(context: BasicSessionCacheRequestContext.self)
router.add(middleware: LogRequestsMiddleware(.debug))
router.add(
    middleware: SessionCacheMiddleware(
        store: store, locks: locks, cookie: .init(name: "chat", secure: environment["SECURE_COOKIE"] != "0"),
        // The page polls its state, and loads its files: that must not keep an idle conversation alive.
        passive: { $0.method == .get && ["/api/state", "/app.js", "/app.css"].contains($0.uri.path) }))

router.get("/") { _, _ in asset(page, type: "text/html; charset=utf-8") }
router.get("/app.js") { _, _ in asset(script, type: "text/javascript; charset=utf-8") }
router.get("/app.css") { _, _ in asset(stylesheet, type: "text/css; charset=utf-8") }
router.get("/api/state") { _, context -> ChatState in
    // The middleware read this passive request's session with `get`: its time left is Redis's.
    guard let session = context.session.current else { return ChatState(instance: instance) }
    let messages = try await store.recentMessages(session.id, limit: 50)
    return ChatState(instance: instance, session: session, messages: messages, warning: warning)
}
router.post("/api/login") { request, context -> HTTPResponse.Status in
    let login = try await request.decode(as: Login.self, context: context)
    guard !login.user.isEmpty, login.user.count <= 64 else { throw HTTPError(.badRequest, message: "a user name, please") }
    try await context.session.logIn(user: login.user, mode: .custom(idle))  // a new id: no fixation
    try await context.session.setDevice(deviceLabel(userAgent: request.headers[.userAgent]))
    return .ok
}
router.post("/api/messages") { request, context -> HTTPResponse.Status in
    guard let id = context.session.id else { throw HTTPError(.unauthorized) }
    let text = try await request.decode(as: Text.self, context: context).text
    try await store.appendTurn(id, user: text, assistant: "echo: \(text)", lease: context.session.lease)
    return .ok
}
router.post("/api/mode") { request, context -> HTTPResponse.Status in
    guard let id = context.session.id else { throw HTTPError(.unauthorized) }
    let choice = try await request.decode(as: ModeChoice.self, context: context)
    try await store.setTimeoutMode(id, timeoutMode(named: choice.mode, short: idle), lease: context.session.lease)
    return .ok
}
router.get("/api/conversations") { _, context -> ChatConversations in
    guard let user = context.session.user else { throw HTTPError(.unauthorized) }
    return ChatConversations(try await store.list(user: user))
}
router.get("/api/devices") { _, context -> [DeviceSession] in try await context.session.devices() }
router.post("/api/devices/end") { request, context -> HTTPResponse.Status in
    let handle = try await request.decode(as: DeviceHandle.self, context: context).handle
    return try await context.session.endSession(handle: handle) ? .ok : .notFound
}
router.post("/api/logout-everywhere") { _, context -> HTTPResponse.Status in
    guard let user = context.session.user else { throw HTTPError(.unauthorized) }
    try await context.session.destroy()
    _ = try await store.deleteAll(user: user)
    return .ok
}
// The hook's counts, for the operator and the browser test: only with the token
// (`Authorization: Bearer CHAT_ADMIN_TOKEN`); without one configured, there is no such endpoint.
router.get("/admin/hook-runs") { request, _ -> String in
    guard let adminToken else { throw HTTPError(.notFound) }
    guard let authorization = request.headers[.authorization], authorization.lowercased().hasPrefix("bearer "),
        isAdminToken(String(authorization.dropFirst("bearer ".count)), adminToken)
    else { throw HTTPError(.unauthorized) }
    let pairs = try await redis.send(RESPCommand("HGETALL", "chat:hook-runs")).array?.compactMap(\.string) ?? []
    return stride(from: 0, to: pairs.count - 1, by: 2).map { "\(pairs[$0]) \(pairs[$0 + 1])" }.joined(separator: "\n")
}

/// Samples the store's figures into gauges every 5 s (one call per bucket: not per request),
/// until graceful shutdown or cancellation. (Checking only for graceful shutdown, it spun at full
/// speed once the group was cancelled: the sleep and the call then fail at once.)
struct StatsSampler: Service {
    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                if let stats = try? await store.stats() {
                    activeSessions.record(stats.activeSessions)
                    activeUsers.record(stats.users)
                }
                try? await Task.sleep(for: .seconds(5))
            }
        }
    }
}

/// Prometheus text on its own port (not behind the load balancer).
func metricsApplication(port: Int) -> some ApplicationProtocol {
    let router = Router()
    router.get("/metrics") { _, _ in registry.emitToString() }
    return Application(router: router, configuration: .init(address: .hostname(environment["HOST"] ?? "127.0.0.1", port: port)))
}

let app = Application(
    router: router, configuration: .init(address: .hostname(environment["HOST"] ?? "127.0.0.1", port: port), serverName: instance),
    logger: logger)
// The client first: it stops last.
var services: [any Service] = [redis, locks, listener, StatsSampler(), app]
if let metricsPort = Int(environment["METRICS_PORT"] ?? "") { services.append(metricsApplication(port: metricsPort)) }
let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
logger.info("chat instance listening", metadata: ["port": "\(port)"])
try await group.run()

// Stores a value and reads it back through the client, against Redis at REDIS_URL or, without it,
// an embedded redis-server that this program starts and stops itself.
@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO

ToolLogging.bootstrap()

let environmentURL = ProcessInfo.processInfo.environment["REDIS_URL"]
let embedded: RedisServer? = environmentURL == nil ? try await RedisServer.start() : nil
let configuration = try environmentURL.map { try HiredisConfiguration(url: $0) } ?? embedded!.configuration
print("Redis at \(configuration.address)\(embedded == nil ? "" : " (embedded)")")

let client = try HiredisClient.started(configuration: configuration)
try await client.set("example:greeting", to: "hello from Swift", expiresIn: .seconds(60))
let value = try await client.get("example:greeting")
print("GET example:greeting -> \(value.map { String(buffer: $0) } ?? "(nil)")")

// 1,000 concurrent commands from as many tasks share the pool's connections (automatic pipelining).
let sum = try await withThrowingTaskGroup(of: Int.self) { group in
    for index in 0..<1_000 {
        group.addTask { try await client.send(RESPCommand("INCRBY", "example:counter", .integer(index))).int ?? 0 }
    }
    var highest = 0
    for try await value in group { highest = max(highest, value) }
    return highest
}
print("INCRBY from 1,000 tasks -> \(sum) (expected \(999 * 1000 / 2))")
_ = try await client.delete(["example:greeting", "example:counter"])
await client.close()
await embedded?.stop()

import EmbeddedRedis
import RedisClient

let t0 = ContinuousClock.now
let server = try await RedisServer.start()
print("started", ContinuousClock.now - t0)
let client = try RedisClient(configuration: server.configuration)
_ = try await client.send(RedisCommand("PING"))
print("ping", ContinuousClock.now - t0)
await client.close()
print("closed", ContinuousClock.now - t0)
await server.stop()
print("stopped", ContinuousClock.now - t0); print(server.log.suffix(600))

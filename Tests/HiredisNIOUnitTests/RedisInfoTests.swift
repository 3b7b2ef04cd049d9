import HiredisNIO
import Testing

@Suite("INFO parsing")
struct RedisInfoTests {
    private let text = """
        # Server\r
        redis_version:7.0.15\r
        \r
        # CPU\r
        used_cpu_sys:1.234567\r
        used_cpu_user:2.5\r
        # Commandstats\r
        cmdstat_get:calls=42,usec=84,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r
        cmdstat_fcall_ro:calls=7,usec=70,usec_per_call=10.00,rejected_calls=1,failed_calls=0\r
        # Keyspace\r
        db0:keys=3,expires=1,avg_ttl=0\r
        """

    @Test func fieldsNumbersAndCommandStatistics() {
        let info = RedisInfo(text)
        #expect(info["redis_version"] == "7.0.15")
        #expect(info.number("used_cpu_sys") == 1.234567)
        #expect(info.number("redis_version") == nil)
        #expect(info.number("missing") == nil)
        #expect(info.numbers["used_cpu_user"] == 2.5)
        #expect(info.commandStatistics["get"] == .init(calls: 42, microseconds: 84))
        #expect(info.commandStatistics["fcall_ro"]?.calls == 7)
        #expect(info.commandStatistics.count == 2)
        // A value with colons of its own is kept whole.
        #expect(RedisInfo("executable:/usr/bin/redis-server:x\n")["executable"] == "/usr/bin/redis-server:x")
        #expect(RedisInfo("").fields.isEmpty)
    }
}

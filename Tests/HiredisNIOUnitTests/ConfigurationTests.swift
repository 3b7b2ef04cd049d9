import Testing

@testable import HiredisNIO

@Suite("Configuration and pure helpers")
struct ConfigurationTests {
    @Test func parsesFullURL() throws {
        let configuration = try HiredisConfiguration(url: "redis://app:s%40cret@cache.internal:6380/3")
        #expect(configuration.host == "cache.internal")
        #expect(configuration.port == 6380)
        #expect(configuration.username == "app")
        #expect(configuration.password == "s@cret")
        #expect(configuration.database == 3)
    }

    @Test func parsesPasswordOnlyAndDefaults() throws {
        let withColon = try HiredisConfiguration(url: "redis://:pw@localhost")
        #expect(withColon.username == nil)
        #expect(withColon.password == "pw")
        #expect(withColon.port == 6379)
        #expect(withColon.database == 0)
        let bare = try HiredisConfiguration(url: "redis://10.0.0.5:7000")
        #expect(bare.host == "10.0.0.5" && bare.port == 7000 && bare.password == nil)
        let ipv6 = try HiredisConfiguration(url: "redis://[::1]:7001/1")
        #expect(ipv6.host == "::1" && ipv6.port == 7001 && ipv6.database == 1)
    }

    @Test func refusesGarbage() {
        for url in [
            "http://host", "redis://host:notaport", "redis://host:6379/x", "host:6379", "redis://h:0", "redis://a:1,b:2",
            "redis+cluster://a:1/3", "redis+sentinel://a:26379", "redis://h?tls_ca_file=/x", "rediss://h?tls_verify=maybe",
        ] {
            #expect(throws: HiredisError.self, "\(url)") { try HiredisConfiguration(url: url) }
        }
    }

    @Test func parsesTLSClusterAndSentinelURLs() throws {
        let tls = try HiredisConfiguration(url: "rediss://:pw@cache.internal:6380/1?tls_ca_file=/etc/ca.pem&tls_server_name=redis")
        #expect(tls.host == "cache.internal" && tls.port == 6380 && tls.database == 1 && tls.password == "pw")
        #expect(tls.tls?.caFile == "/etc/ca.pem" && tls.tls?.serverName == "redis" && tls.tls?.verification == .full)
        let cluster = try HiredisConfiguration(url: "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
        #expect(
            cluster.topology
                == .cluster(seeds: [
                    HiredisAddress(host: "10.0.0.1", port: 7000), HiredisAddress(host: "10.0.0.2", port: 7001),
                    HiredisAddress(host: "::1", port: 7002),
                ]))
        let sentinel = try HiredisConfiguration(url: "redis+sentinel://:pw@s1,s2:26380/sessions/2")
        #expect(
            sentinel.topology
                == .sentinel(
                    sentinels: [HiredisAddress(host: "s1", port: 26379), HiredisAddress(host: "s2", port: 26380)], primaryName: "sessions"))
        #expect(sentinel.database == 2 && sentinel.password == "pw")
        let secureCluster = try HiredisConfiguration(url: "rediss+cluster://n1:7000?tls_verify=no_hostname")
        #expect(secureCluster.tls?.verification == .noHostname)
    }

    /// The Sentinels' own credentials and TLS in the query of a Sentinel URL.
    @Test func sentinelOptionsInTheQuery() throws {
        let plain = try HiredisConfiguration(url: "redis+sentinel://s1,s2/sessions?sentinel_username=watcher&sentinel_password=p%26w")
        #expect(plain.sentinelUsername == "watcher" && plain.sentinelPassword == "p&w" && plain.sentinelTLS == .sameAsNodes)
        #expect(plain.username == nil && plain.password == nil)
        #expect(plain.discoverSentinels)
        #expect(try !HiredisConfiguration(url: "redis+sentinel://s1/sessions?sentinel_discovery=off").discoverSentinels)

        let plaintextSentinels = try HiredisConfiguration(url: "rediss+sentinel://s1/sessions?tls_ca_file=/ca.pem&sentinel_tls=off")
        #expect(plaintextSentinels.tls?.caFile == "/ca.pem" && plaintextSentinels.sentinelTLS == .off)

        // Sentinel TLS options start from the nodes' and override them.
        let own = try HiredisConfiguration(
            url: "rediss+sentinel://s1/sessions?tls_ca_file=/ca.pem&tls_cert_file=/c.pem&sentinel_tls_ca_file=/sentinel-ca.pem")
        var expected = try #require(own.tls)
        expected.caFile = "/sentinel-ca.pem"
        #expect(own.tls?.caFile == "/ca.pem" && own.sentinelTLS == .on(expected))

        // Over plaintext nodes, from the defaults.
        let onlySentinels = try HiredisConfiguration(url: "redis+sentinel://s1/sessions?sentinel_tls=on&sentinel_tls_verify=no_hostname")
        var defaults = HiredisTLSConfiguration()
        defaults.verification = .noHostname
        #expect(onlySentinels.tls == nil && onlySentinels.sentinelTLS == .on(defaults))

        for url in [
            "redis://h?sentinel_password=x", "redis+cluster://h?sentinel_tls=on", "redis+sentinel://s/p?sentinel_tls=maybe",
            "redis+sentinel://s/p?sentinel_tls=off&sentinel_tls_ca_file=/x", "redis+sentinel://s/p?sentinel_tls_verify=loose",
            "redis+sentinel://s/p?sentinel_colour=blue", "redis+sentinel://s/p?sentinel_discovery=yes",
            "redis+cluster://h?sentinel_discovery=off",
        ] {
            #expect(throws: HiredisError.self, "\(url)") { try HiredisConfiguration(url: url) }
        }
    }

    @Test func sentinelPasswordsNeverShow() throws {
        let url = "redis+sentinel://s1:notaport/p?sentinel_password=s3cret-pw&sentinel_tls=on"
        #expect(HiredisConfiguration.redacted(url) == "redis+sentinel://s1:notaport/p?sentinel_password=***&sentinel_tls=on")
        // In any case, and past a `#` a pasted password may hold.
        #expect(
            HiredisConfiguration.redacted("redis+sentinel://s/p?SENTINEL_PASSWORD=a#b&x=1")
                == "redis+sentinel://s/p?SENTINEL_PASSWORD=***&x=1")
        #expect(try HiredisConfiguration(url: "redis+sentinel://s/p?sentinel_password=").sentinelPassword == nil)
        do {
            _ = try HiredisConfiguration(url: url)
            Issue.record("accepted")
        } catch {
            #expect(!"\(error)".contains("s3cret-pw"), "\(error)")
        }
    }

    @Test func errorsNeverShowThePassword() {
        for url in ["redis://app:s3cret-pw@host:notaport", "redis://:s3cret-pw@host:6379/x", "http://:s3cret-pw@host", "s3cret-pw@host"] {
            do {
                _ = try HiredisConfiguration(url: url)
                Issue.record("\(HiredisConfiguration.redacted(url)) was accepted")
            } catch {
                #expect(!"\(error)".contains("s3cret-pw"), "\(error)")
            }
        }
        #expect(HiredisConfiguration.redacted("redis://app:pw@host:6379/2") == "redis://***@host:6379/2")
        #expect(HiredisConfiguration.redacted("redis://host:6379") == "redis://host:6379")
    }

    /// Passwords pasted unencoded (base64 ones contain `/`, `+`, `=`): the authority was cut at the
    /// first `/` before looking for `@`, so `redis://app:s3cr/et@10.0.0.5:6379/0` was "bad host
    /// or port in 'redis://app:s3cr/et@10.0.0.5:6379/0'", password and all.
    @Test func passwordsWithSlashesQuestionMarksAndAtSignsParseAndNeverShow() throws {
        let passwords = ["s3cr/et", "a/b+c==", "q?uery", "ha#sh", "at@sign", "p/w?x#y@z", "tls_ca_file=/x", "é/ü", "x//y"]
        let shapes = [
            ("redis://app:%@@10.0.0.5:6379/0", "10.0.0.5", 6379),
            ("rediss://:%@@cache.internal:6380/1?tls_ca_file=/etc/ca@dir/ca.pem", "cache.internal", 6380),
            ("redis+cluster://app:%@@n1:7000,n2:7001", "n1", 7000),
            ("redis+sentinel://:%@@s1:26379,s2/primary/2", "s1", 26379),
            ("redis://%@@[::1]:7001", "::1", 7001),
        ]
        for password in passwords {
            for (shape, host, port) in shapes {
                let url = shape.replacingOccurrences(of: "%@", with: password)
                let configuration = try HiredisConfiguration(url: url)
                #expect(configuration.password == password, "\(HiredisConfiguration.redacted(url))")
                #expect(configuration.host == host && configuration.port == port, "\(HiredisConfiguration.redacted(url))")
                #expect(!HiredisConfiguration.redacted(url).contains(password), "\(HiredisConfiguration.redacted(url))")
                // The same URL broken after the host: the error names it without the password.
                // (With the host unrecognisable, `q?uery@...` reads as host `q` and an ignored
                // query: accepted, and nothing is shown.)
                let broken = url.replacingOccurrences(of: "\(port)", with: "notaport")
                do {
                    _ = try HiredisConfiguration(url: broken)
                } catch {
                    #expect(!"\(error)".contains(password), "\(error)")
                }
            }
        }
        // An `@` in the query is not a password's end.
        let query = try HiredisConfiguration(url: "rediss://cache:6380/0?tls_ca_file=/etc/a@b/ca.pem")
        #expect(query.password == nil && query.host == "cache" && query.tls?.caFile == "/etc/a@b/ca.pem")
        #expect(HiredisConfiguration.redacted("redis://app:pw@") == "redis://***@")
        // Found by scripts/fuzz: a combining mark after `@` made one Character of both, and the
        // redaction found no `@` (the URL was shown whole, password included).
        #expect(HiredisConfiguration.redacted("redis://app:s3cret@\u{0314}host") == "redis://***@\u{0314}host")
        #expect(HiredisConfiguration.redacted(":/\u{0314}/app:s3cret@host") == "***@host")
        // An `@` inside a password, before a host list that does not parse (a port past 65535):
        // refused, and no part of the password shows.
        #expect(try HiredisConfiguration(url: "redis://app:k@7/Qz@redis.example.com/0").password == "k@7/Qz")
        for url in ["redis://app:k@7/Qz@redis.example.com:70000/0", "redis://u:p?x=1@host:bad"] {
            do {
                _ = try HiredisConfiguration(url: url)
                Issue.record("accepted \(HiredisConfiguration.redacted(url))")
            } catch {
                #expect(!"\(error)".contains("Qz") && !"\(error)".contains("k@7") && !"\(error)".contains("p?x"), "\(error)")
            }
        }
        // A broken port hides where the credentials end; no part of them shows in the error.
        do {
            _ = try HiredisConfiguration(url: "redis://app:s3cr:6379/et@10.0.0.5:bad")
            Issue.record("accepted a bad port")
        } catch {
            #expect(!"\(error)".contains("s3cr") && !"\(error)".contains("/et"), "\(error)")
        }
    }

    @Test func sha1MatchesKnownVectors() {
        #expect(SHA1.hex("".utf8) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hex("abc".utf8) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(
            SHA1.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(LuaScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }

    @Test func serverErrorSplitsCode() {
        let error = HiredisServerError(reply: "WRONGTYPE Operation against a key holding the wrong kind of value")
        #expect(error.code == "WRONGTYPE")
        #expect(HiredisError.server(error).serverCode == "WRONGTYPE")
    }

    @Test func durationMillisecondsRoundUp() {
        #expect(Duration.milliseconds(1500).wholeMilliseconds == 1500)
        #expect(Duration.microseconds(1500).wholeMilliseconds == 2)
        #expect(Duration.seconds(2).wholeMilliseconds == 2000)
    }
}

import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Bytes from the kernel's CSPRNG, read 4 KiB at a time: an id or a lock token costs no system
/// call of its own (`SystemRandomNumberGenerator` makes one per 8 bytes, three per id: 4% of a
/// lock acquisition's client CPU). Bytes are handed out once and wiped from the pool as they go.
/// A forked child discards the pool it inherited, so that it never repeats its parent's bytes.
enum SecureRandom {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var next = 4096
    }

    private static let pool = Mutex(Pool())
    /// Set in a forked child (`pthread_atfork`): the pool it inherited must not be used.
    private static let forked = Atomic<Bool>(false)
    private static let watchesForks: Bool = {
        pthread_atfork(nil, nil) { SecureRandom.forked.store(true, ordering: .relaxed) }
        return true
    }()

    /// Fills `buffer` with random bytes.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        _ = watchesForks
        pool.withLock { pool in
            if forked.exchange(false, ordering: .relaxed) { pool.next = pool.bytes.count }
            var filled = 0
            while filled < buffer.count {
                if pool.next == pool.bytes.count {
                    pool.bytes.withUnsafeMutableBytes { readKernelRandom(into: $0) }
                    pool.next = 0
                }
                let count = min(buffer.count - filled, pool.bytes.count - pool.next)
                pool.bytes.withUnsafeMutableBytes { source in
                    let taken = UnsafeMutableRawBufferPointer(rebasing: source[pool.next..<pool.next + count])
                    UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<filled + count]).copyMemory(from: UnsafeRawBufferPointer(taken))
                    taken.initializeMemory(as: UInt8.self, repeating: 0)
                }
                pool.next += count
                filled += count
            }
        }
    }

    private static func readKernelRandom(into buffer: UnsafeMutableRawBufferPointer) {
        // The kernel's CSPRNG as a file (the Glibc module does not export getrandom): three
        // system calls per 4 KiB.
        let file = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        if file >= 0 {
            defer { close(file) }
            var filled = 0
            while filled < buffer.count {
                let count = read(file, buffer.baseAddress! + filled, buffer.count - filled)
                if count > 0 {
                    filled += count
                } else if count == 0 || errno != EINTR {
                    break
                }
            }
            if filled == buffer.count { return }
        }
        // No /dev/urandom (a chroot, say): the standard library's CSPRNG, 8 bytes at a time.
        var generator = SystemRandomNumberGenerator()
        for offset in stride(from: 0, to: buffer.count, by: 8) {
            withUnsafeBytes(of: generator.next() as UInt64) { random in
                UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<min(offset + 8, buffer.count)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: random[0..<min(8, buffer.count - offset)]))
            }
        }
    }
}

/// Session ids: the bucket in 3 characters, then 144 bits from the system CSPRNG, all URL-safe
/// base64 (27 characters, safe in a cookie and in a key name).
enum SessionID {
    static let length = 27
    static let bucketCharacters = 3
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let values: [Int8] = {
        var values = [Int8](repeating: -1, count: 256)
        for (index, byte) in alphabet.enumerated() { values[Int(byte)] = Int8(index) }
        return values
    }()

    /// A new id in `bucket`. `SystemRandomNumberGenerator` reads the kernel CSPRNG (getrandom).
    static func make(bucket: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        var text: [UInt8] = []
        text.reserveCapacity(length)
        for shift in [12, 6, 0] { text.append(alphabet[(bucket >> shift) & 63]) }
        // 144 bits: 18 bytes, 24 characters with no padding.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        for _ in 0..<3 { withUnsafeBytes(of: generator.next() as UInt64) { bytes.append(contentsOf: $0) } }
        for chunk in stride(from: 0, to: 18, by: 3) {
            let value = UInt32(bytes[chunk]) << 16 | UInt32(bytes[chunk + 1]) << 8 | UInt32(bytes[chunk + 2])
            for shift in [18, 12, 6, 0] { text.append(alphabet[Int((value >> UInt32(shift)) & 63)]) }
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bucket an id names, or nil when `id` does not have the form of an id the store issues
    /// (anything else is refused before Redis is asked; it also keeps key names clean).
    static func bucket(of id: String) -> Int? {
        let utf8 = id.utf8
        guard utf8.count == length else { return nil }
        var bucket = 0
        for (index, byte) in utf8.enumerated() {
            let value = values[Int(byte)]
            if value < 0 { return nil }
            if index < bucketCharacters { bucket = bucket << 6 | Int(value) }
        }
        return bucket
    }

    /// A shortened id for logs, spans and events: the bucket and 6 random characters (36 bits),
    /// enough to correlate and far too few to use.
    static func redacted(_ id: String) -> String { String(id.prefix(9)) }

    static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || (byte >= 48 && byte <= 57)
    }
}

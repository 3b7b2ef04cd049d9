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

    /// A new id in `bucket`: 144 bits from the kernel's CSPRNG (``SecureRandom``).
    static func make(bucket: Int) -> String {
        String(unsafeUninitializedCapacity: length) { text in
            for (index, shift) in [12, 6, 0].enumerated() { text[index] = alphabet[(bucket >> shift) & 63] }
            // 144 bits: 18 bytes, 24 characters with no padding.
            withUnsafeTemporaryAllocation(byteCount: 18, alignment: 1) { bytes in
                SecureRandom.fill(bytes)
                for chunk in 0..<6 {
                    let value = UInt32(bytes[chunk * 3]) << 16 | UInt32(bytes[chunk * 3 + 1]) << 8 | UInt32(bytes[chunk * 3 + 2])
                    for (index, shift) in [18, 12, 6, 0].enumerated() {
                        text[bucketCharacters + chunk * 4 + index] = alphabet[Int((value >> UInt32(shift)) & 63)]
                    }
                }
                bytes.initializeMemory(as: UInt8.self, repeating: 0)
            }
            return length
        }
    }

    /// The bucket an id names, or nil when `id` does not have the form of an id the store issues
    /// (anything else is refused before Redis is asked; it also keeps key names clean).
    static func bucket(of id: String) -> Int? {
        var id = id
        return id.withUTF8 { utf8 -> Int? in
            guard utf8.count == length else { return nil }
            var bucket = 0
            for index in 0..<length {
                let value = values[Int(utf8[index])]
                if value < 0 { return nil }
                if index < bucketCharacters { bucket = bucket << 6 | Int(value) }
            }
            return bucket
        }
    }

    /// A shortened id for logs, spans and events: the bucket and 6 random characters (36 bits),
    /// enough to correlate and far too few to use.
    static func redacted(_ id: String) -> String { String(id.prefix(9)) }

    static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || (byte >= 48 && byte <= 57)
    }
}

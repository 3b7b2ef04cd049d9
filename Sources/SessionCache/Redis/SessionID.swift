/// Session ids: 256 bits from the system CSPRNG, as 43 characters of URL-safe base64 (no padding).
enum SessionID {
    static let length = 43
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// A new id. `SystemRandomNumberGenerator` reads the kernel CSPRNG (getrandom) on Linux.
    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(33)
        for _ in 0..<4 { withUnsafeBytes(of: generator.next() as UInt64) { bytes.append(contentsOf: $0) } }
        bytes.append(0)  // pad to 33 bytes = 44 characters; the last one carries no random bits
        var text: [UInt8] = []
        text.reserveCapacity(44)
        for chunk in stride(from: 0, to: 33, by: 3) {
            let value = UInt32(bytes[chunk]) << 16 | UInt32(bytes[chunk + 1]) << 8 | UInt32(bytes[chunk + 2])
            for shift in [18, 12, 6, 0] { text.append(alphabet[Int((value >> UInt32(shift)) & 63)]) }
        }
        return String(decoding: text.prefix(length), as: UTF8.self)
    }

    /// Whether `id` has the form of an id the store issues; anything else is refused before Redis
    /// is asked (it also keeps key names clean: no braces, colons or spaces).
    static func isWellFormed(_ id: String) -> Bool {
        let utf8 = id.utf8
        return utf8.count == length
            && utf8.allSatisfy { byte in
                (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || (byte >= 48 && byte <= 57) || byte == 45 || byte == 95
            }
    }
}

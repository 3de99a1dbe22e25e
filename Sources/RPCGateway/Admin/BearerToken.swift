/// The secret that protects the admin listener (`admin.token_file`): every path except
/// `/healthz` requires `Authorization: Bearer <token>`.
///
/// Its description never shows the secret, so settings can be logged and compared freely.
public struct BearerToken: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    private let bytes: [UInt8]

    /// `nil` when `token` is empty.
    public init?(_ token: String) {
        guard !token.isEmpty else { return nil }
        self.bytes = Array(token.utf8)
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "BearerToken(<redacted>)" }

    /// Whether an `Authorization` header value carries this token. The scheme is matched
    /// case-insensitively (RFC 9110 section 11.1); the token is compared in constant time for a
    /// given candidate length, so response timing does not reveal how many bytes matched.
    package func authorizes(authorizationHeader value: String?) -> Bool {
        guard let value else { return false }
        let utf8 = Array(value.utf8)
        let scheme = Array("bearer ".utf8)
        guard utf8.count > scheme.count,
            zip(utf8.prefix(scheme.count), scheme).allSatisfy({ Self.lowercased($0) == $1 })
        else { return false }
        var candidate = utf8[scheme.count...]
        // Optional whitespace after the scheme and at the end (RFC 9110 section 5.6.3).
        while let first = candidate.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
            candidate = candidate.dropFirst()
        }
        while let last = candidate.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") {
            candidate = candidate.dropLast()
        }
        return Self.constantTimeEquals(Array(candidate), self.bytes)
    }

    /// Byte equality whose running time depends only on the lengths, not on where the first
    /// difference is.
    package static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt64(truncatingIfNeeded: a.count ^ b.count)
        let length = max(a.count, b.count)
        for index in 0..<length {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= UInt64(x ^ y)
        }
        return difference == 0
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }
}

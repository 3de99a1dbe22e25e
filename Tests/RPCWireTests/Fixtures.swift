import Foundation
import NIOCore
import Testing

/// Loads captured PDUs kept as hex in `Tests/RPCWireTests/Fixtures/NAME.hex`.
///
/// Lines starting with `#` are comments; whitespace is ignored. The files are real traffic captured
/// from a Samba AD DC and impacket/rpcclient (see Fixtures/README.md), or built from the spec where
/// the name says so.
enum Fixture {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures"
    )

    static func exists(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent("\(name).hex").path)
    }

    static func names(withPrefix prefix: String) -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return files.filter { $0.hasPrefix(prefix) && $0.hasSuffix(".hex") }.map { String($0.dropLast(4)) }.sorted()
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        let text = try String(contentsOf: directory.appendingPathComponent("\(name).hex"), encoding: .utf8)
        let hex = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined().filter { !$0.isWhitespace }
        return try hexBytes(String(hex))
    }

    static func buffer(_ name: String) throws -> ByteBuffer {
        ByteBuffer(bytes: try bytes(name))
    }
}

struct HexError: Error {}

func hexBytes(_ hex: String) throws -> [UInt8] {
    let digits = Array(hex.utf8)
    guard digits.count % 2 == 0 else { throw HexError() }
    var result: [UInt8] = []
    result.reserveCapacity(digits.count / 2)
    var index = 0
    while index < digits.count {
        guard let high = hexNibble(digits[index]), let low = hexNibble(digits[index + 1]) else { throw HexError() }
        result.append(high << 4 | low)
        index += 2
    }
    return result
}

private func hexNibble(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: return c - 48
    case 97...102: return c - 87
    case 65...70: return c - 55
    default: return nil
    }
}

func hexString(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

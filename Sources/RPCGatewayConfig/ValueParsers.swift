package import RPCPolicy

/// Pure text parsers for configuration values. They know nothing of YAML nodes or locations; the
/// decoder turns their failures into located problems.
package enum ValueParsers {
    // MARK: - Numbers

    /// `[+-]DIGITS`, decimal only (no `0x`, no `_`), at most 18 digits so it fits an `Int`.
    package static func signedDecimal(_ text: String) -> Int? {
        var digits = Substring(text)
        var negative = false
        if let sign = digits.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        guard let value = self.decimal(digits) else { return nil }
        return negative ? -value : value
    }

    /// `DIGITS`, decimal ASCII, one to 18 of them.
    package static func decimal(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.count <= 18,
            text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int(text)
    }

    // MARK: - Durations

    package enum DurationFailure: Error, Equatable {
        case malformed
        case notPositive
        case tooLong

        package func message(for text: String) -> String {
            switch self {
            case .malformed:
                return "\"\(text)\" is not a duration (use 500ms, 30s, 10m, 1h, or a number of seconds)"
            case .notPositive:
                return "\"\(text)\" must be longer than zero"
            case .tooLong:
                return "\"\(text)\" is longer than the maximum of \(ValueParsers.maximumDurationHours)h"
            }
        }
    }

    /// Longest accepted duration (a year): keeps every timeout representable as NIO nanoseconds.
    package static let maximumDurationHours: Int64 = 8760

    /// `500ms`, `30s`, `10m`, `1h`, combinations such as `1h30m`, or a bare number of seconds.
    package static func duration(_ text: String) -> Result<Duration, DurationFailure> {
        let text = text.trimmingASCIISpaces
        let units: [String: Int64] = ["ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000]
        var milliseconds: Int64 = 0
        if let seconds = self.decimal(text[...]) {
            guard Int64(seconds) <= self.maximumDurationHours * 3600 else { return .failure(.tooLong) }
            milliseconds = Int64(seconds) * 1000
        } else {
            var rest = Substring(text)
            guard !rest.isEmpty else { return .failure(.malformed) }
            while !rest.isEmpty {
                let digits = rest.prefix { $0.isASCII && $0.isNumber }
                rest = rest.dropFirst(digits.count)
                let unit = rest.prefix { $0.isASCII && $0.isLetter }
                rest = rest.dropFirst(unit.count)
                guard let value = self.decimal(digits), let scale = units[String(unit)] else {
                    return .failure(.malformed)
                }
                let (product, overflow) = Int64(value).multipliedReportingOverflow(by: scale)
                let (sum, sumOverflow) = milliseconds.addingReportingOverflow(product)
                guard !overflow, !sumOverflow else { return .failure(.tooLong) }
                milliseconds = sum
            }
        }
        guard milliseconds > 0 else { return .failure(.notPositive) }
        guard milliseconds <= self.maximumDurationHours * 3_600_000 else { return .failure(.tooLong) }
        return .success(.milliseconds(milliseconds))
    }

    // MARK: - Ports

    /// `LOW-HIGH`, both 1-65535, `LOW <= HIGH`.
    package static func portRange(_ text: String) -> ClosedRange<UInt16>? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2,
            let low = self.decimal(parts[0].trimmingASCIISpaces[...]),
            let high = self.decimal(parts[1].trimmingASCIISpaces[...]),
            (1...65535).contains(low), (1...65535).contains(high), low <= high
        else { return nil }
        return UInt16(low)...UInt16(high)
    }

    // MARK: - Hosts

    /// RFC 5952 text: IPv6 with the longest run of two or more zero groups written as `::`.
    package static func text(of address: IPAddress) -> String {
        guard case .v6(let high, let low) = address else { return address.description }
        let groups = (0..<8).map { index -> UInt16 in
            UInt16(truncatingIfNeeded: (index < 4 ? high : low) >> (UInt64(3 - index % 4) * 16))
        }
        var best: Range<Int>?
        var start: Int?
        for index in 0...8 {
            if index < 8, groups[index] == 0 {
                if start == nil { start = index }
            } else if let runStart = start {
                if index - runStart >= 2, index - runStart > (best?.count ?? 0) { best = runStart..<index }
                start = nil
            }
        }
        let hex = groups.map { String($0, radix: 16) }
        guard let best else { return hex.joined(separator: ":") }
        return hex[..<best.lowerBound].joined(separator: ":") + "::" + hex[best.upperBound...].joined(separator: ":")
    }

    /// An IPv4 or IPv6 literal, or a DNS name.
    package static func isHost(_ text: String) -> Bool {
        IPAddress(text) != nil || self.isHostName(text)
    }

    /// A DNS name (RFC 1123 labels; `_` tolerated as some internal zones use it). The last label
    /// may not be all digits, so a mistyped address such as `10.0.0` is not taken for a name.
    package static func isHostName(_ text: String) -> Bool {
        var name = Substring(text)
        if name.hasSuffix(".") { name = name.dropLast() }
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for label in labels {
            guard !label.isEmpty, label.utf8.count <= 63, label.first != "-", label.last != "-",
                label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
            else { return false }
        }
        return !(labels.last?.allSatisfy { $0.isASCII && $0.isNumber } ?? true)
    }

    /// `HOST:PORT` with IPv6 in brackets (`[::1]:9135`). The failure is a message for the user.
    package static func hostAndPort(_ text: String) -> Result<(host: String, port: Int), HostPortFailure> {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(.malformed) }
            host = text[text.index(after: text.startIndex)..<close]
            let afterBracket = text[text.index(after: close)...]
            guard afterBracket.hasPrefix(":") else { return .failure(.missingPort) }
            port = afterBracket.dropFirst()
            guard host.contains(":"), IPAddress(host) != nil else { return .failure(.badHost(String(host))) }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(.missingPort) }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { return .failure(.unbracketedIPv6) }
            guard !host.isEmpty else { return .failure(.missingHost) }
            guard self.isHost(String(host)) else { return .failure(.badHost(String(host))) }
        }
        guard let number = self.decimal(port), (1...65535).contains(number) else {
            return .failure(.badPort(String(port)))
        }
        return .success((String(host), number))
    }

    package enum HostPortFailure: Error, Equatable {
        case malformed
        case missingPort
        case missingHost
        case unbracketedIPv6
        case badHost(String)
        case badPort(String)

        package func message(for text: String) -> String {
            let shape = "HOST:PORT, such as 127.0.0.1:9135 or [::1]:9135"
            switch self {
            case .malformed: return "\"\(text)\" is not \(shape)"
            case .missingPort: return "\"\(text)\" has no port (\(shape))"
            case .missingHost: return "\"\(text)\" has no host (use 0.0.0.0:PORT to listen on all IPv4 addresses)"
            case .unbracketedIPv6: return "\"\(text)\": write an IPv6 address in brackets, such as [::1]:9135"
            case .badHost(let host): return "\"\(host)\" is not an IP address or host name (\(shape))"
            case .badPort(let port): return "\"\(port)\" is not a port number (1-65535)"
            }
        }
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    var trimmingASCIISpaces: String {
        var result = Substring(self)
        while let first = result.first, first == " " || first == "\t" { result.removeFirst() }
        while let last = result.last, last == " " || last == "\t" { result.removeLast() }
        return String(result)
    }
}

package import NIOCore
package import RPCPolicy
package import RPCWire

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A wall-clock instant with millisecond precision, for audit lines.
///
/// Taken on the data path with one `clock_gettime(CLOCK_REALTIME)`; formatted (RFC 3339, UTC) on
/// the audit writer thread. No Foundation: the civil date is computed here.
package struct AuditTimestamp: Hashable, Sendable, Comparable {
    /// Milliseconds since 1970-01-01T00:00:00Z (negative before).
    package var millisecondsSinceEpoch: Int64

    package init(millisecondsSinceEpoch: Int64) {
        self.millisecondsSinceEpoch = millisecondsSinceEpoch
    }

    /// The current time of the system's real-time clock.
    package static func now() -> AuditTimestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return AuditTimestamp(millisecondsSinceEpoch: Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000)
    }

    package static func < (lhs: AuditTimestamp, rhs: AuditTimestamp) -> Bool {
        lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
    }

    /// RFC 3339 in UTC with milliseconds: `2024-05-01T12:34:56.789Z`.
    package var rfc3339: String {
        var buffer = ByteBuffer()
        self.writeRFC3339(into: &buffer)
        return String(buffer: buffer)
    }

    /// Writes ``rfc3339`` (24 ASCII bytes for years 0-9999).
    package func writeRFC3339(into buffer: inout ByteBuffer) {
        let millisecondsPerDay: Int64 = 86_400_000
        var days = self.millisecondsSinceEpoch / millisecondsPerDay
        var remainder = self.millisecondsSinceEpoch % millisecondsPerDay
        if remainder < 0 {
            days -= 1
            remainder += millisecondsPerDay
        }
        let (year, month, day) = Self.civilDate(daysSinceEpoch: days)
        let seconds = remainder / 1000
        buffer.writeDecimal(year, width: 4)
        buffer.writeInteger(UInt8(ascii: "-"))
        buffer.writeDecimal(month, width: 2)
        buffer.writeInteger(UInt8(ascii: "-"))
        buffer.writeDecimal(day, width: 2)
        buffer.writeInteger(UInt8(ascii: "T"))
        buffer.writeDecimal(seconds / 3600, width: 2)
        buffer.writeInteger(UInt8(ascii: ":"))
        buffer.writeDecimal(seconds / 60 % 60, width: 2)
        buffer.writeInteger(UInt8(ascii: ":"))
        buffer.writeDecimal(seconds % 60, width: 2)
        buffer.writeInteger(UInt8(ascii: "."))
        buffer.writeDecimal(remainder % 1000, width: 3)
        buffer.writeInteger(UInt8(ascii: "Z"))
    }

    /// Proleptic Gregorian year, month and day of a day count from 1970-01-01 (H. Hinnant,
    /// "chrono-compatible low-level date algorithms", `civil_from_days`).
    static func civilDate(daysSinceEpoch: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}

/// One audit line: a bind decision, or a call that was denied or audited.
///
/// The data path builds this small value and hands it to ``AuditLog``; names are looked up and the
/// JSON is formatted on the writer thread (``writeJSONLine(into:)``).
///
/// Binds on the endpoint-mapper listener are decided by the listener itself (only the endpoint
/// mapper, below packet level), not by a policy rule: their `rule` is `null` and `listener` is
/// `epm`.
package struct AuditRecord: Hashable, Sendable {
    package enum Event: String, Hashable, Sendable {
        case bind
        case call
    }

    package var time: AuditTimestamp
    package var route: String
    package var event: Event
    /// The client's address and port; `nil` when the socket had none.
    package var client: SocketAddress?
    /// The server endpoint the connection is spliced to.
    package var server: TCPEndpoint
    package var listener: GatewayMetrics.Listener
    package var interface: SyntaxID
    /// Calls only.
    package var opnum: UInt16?
    package var authType: AuthType
    package var authLevel: AuthLevel
    package var decision: PolicyDecision
    /// The name of the route's policy.
    package var policy: String

    package init(
        time: AuditTimestamp,
        route: String,
        event: Event,
        client: SocketAddress?,
        server: TCPEndpoint,
        listener: GatewayMetrics.Listener,
        interface: SyntaxID,
        opnum: UInt16? = nil,
        authType: AuthType,
        authLevel: AuthLevel,
        decision: PolicyDecision,
        policy: String
    ) {
        self.time = time
        self.route = route
        self.event = event
        self.client = client
        self.server = server
        self.listener = listener
        self.interface = interface
        self.opnum = opnum
        self.authType = authType
        self.authLevel = authLevel
        self.decision = decision
        self.policy = policy
    }

    /// Appends the record as one line of JSON, newline included. Key order is fixed:
    /// `time, route, event, client, client_port, server, listener, interface, uuid, version,
    /// [opnum,] auth_type, auth_level, decision, rule, profile, policy`.
    package func writeJSONLine(into buffer: inout ByteBuffer) {
        var object = JSONObjectWriter()
        object.begin(&buffer)
        object.key("time", &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
        self.time.writeRFC3339(into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
        object.field("route", self.route, &buffer)
        object.field("event", self.event.rawValue, &buffer)
        let address = self.client?.ipAddress
        object.field("client", address, &buffer)
        object.field("client_port", address == nil ? nil : self.client?.port.map(Int64.init), &buffer)
        object.field("server", self.server.description, &buffer)
        object.field("listener", self.listener.rawValue, &buffer)
        object.field("interface", InterfaceCatalog.name(of: self.interface) ?? "unknown", &buffer)
        object.field("uuid", self.interface.uuid.description, &buffer)
        object.field("version", "\(self.interface.majorVersion).\(self.interface.minorVersion)", &buffer)
        if let opnum = self.opnum {
            object.field("opnum", Int64(opnum), &buffer)
        }
        object.field("auth_type", self.authType.description, &buffer)
        object.field("auth_level", self.authLevel.description, &buffer)
        object.field("decision", self.decision.action.rawValue, &buffer)
        object.field("rule", self.decision.origin.map { Int64($0.index) }, &buffer)
        object.field("profile", self.decision.origin?.profile, &buffer)
        object.field("policy", self.policy, &buffer)
        object.end(&buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// The record as one line of JSON, without the newline (for tests and diagnostics).
    package var jsonLine: String {
        var buffer = ByteBuffer()
        self.writeJSONLine(into: &buffer)
        buffer.moveWriterIndex(to: buffer.writerIndex - 1)
        return String(buffer: buffer)
    }
}

// MARK: - JSON

/// Writes one flat JSON object into a buffer the caller owns. Keys are trusted constants; values
/// are escaped.
struct JSONObjectWriter {
    private var first = true

    mutating func begin(_ buffer: inout ByteBuffer) {
        self.first = true
        buffer.writeInteger(UInt8(ascii: "{"))
    }

    mutating func key(_ key: StaticString, _ buffer: inout ByteBuffer) {
        if !self.first { buffer.writeInteger(UInt8(ascii: ",")) }
        self.first = false
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeStaticString(key)
        buffer.writeStaticString("\":")
    }

    mutating func field(_ key: StaticString, _ value: String?, _ buffer: inout ByteBuffer) {
        self.key(key, &buffer)
        if let value {
            buffer.writeJSONString(value)
        } else {
            buffer.writeStaticString("null")
        }
    }

    mutating func field(_ key: StaticString, _ value: Int64?, _ buffer: inout ByteBuffer) {
        self.key(key, &buffer)
        if let value {
            buffer.writeString(String(value))
        } else {
            buffer.writeStaticString("null")
        }
    }

    func end(_ buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "}"))
    }
}

extension ByteBuffer {
    /// Writes `string` as a JSON string literal (RFC 8259 section 7): quotes, `"` and `\` escaped,
    /// control characters as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`. Other characters are
    /// written as UTF-8.
    @discardableResult
    package mutating func writeJSONString(_ string: String) -> Int {
        let start = self.writerIndex
        self.writeInteger(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): self.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): self.writeStaticString("\\\\")
            case 0x0A: self.writeStaticString("\\n")
            case 0x0D: self.writeStaticString("\\r")
            case 0x09: self.writeStaticString("\\t")
            case 0x08: self.writeStaticString("\\b")
            case 0x0C: self.writeStaticString("\\f")
            case 0x00..<0x20:
                self.writeStaticString("\\u00")
                self.writeInteger(Self.hexDigit(byte >> 4))
                self.writeInteger(Self.hexDigit(byte & 0x0F))
            default:
                self.writeInteger(byte)
            }
        }
        self.writeInteger(UInt8(ascii: "\""))
        return self.writerIndex - start
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    /// `value` in decimal, zero-padded to `width` digits (negative values get a leading `-`).
    fileprivate mutating func writeDecimal(_ value: Int64, width: Int) {
        if value < 0 { self.writeInteger(UInt8(ascii: "-")) }
        let digits = String(value.magnitude)
        if digits.utf8.count < width {
            self.writeRepeatingByte(UInt8(ascii: "0"), count: width - digits.utf8.count)
        }
        self.writeString(digits)
    }
}

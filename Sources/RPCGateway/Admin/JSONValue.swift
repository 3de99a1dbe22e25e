package import NIOCore

/// A JSON value with ordered object keys, for the admin endpoints (`/status.json`, `/readyz`)
/// and the JSON log format. No Foundation: written straight into a `ByteBuffer`.
package enum JSONValue: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case string(String)
    case array([JSONValue])
    /// Keys in the order given; duplicate keys are the caller's mistake and are written as given.
    case object([(String, JSONValue)])

    package static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.int(let a), .int(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.object(let a), .object(let b)): a.map(\.0) == b.map(\.0) && a.map(\.1) == b.map(\.1)
        default: false
        }
    }

    package func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0)
        case .bool(let value): hasher.combine(value)
        case .int(let value): hasher.combine(value)
        case .string(let value): hasher.combine(value)
        case .array(let values): hasher.combine(values)
        case .object(let pairs):
            for (key, value) in pairs {
                hasher.combine(key)
                hasher.combine(value)
            }
        }
    }

    /// `.string(value)`, or `.null` for `nil`.
    package static func string(orNull value: String?) -> JSONValue {
        value.map(JSONValue.string) ?? .null
    }

    /// `.int(value)`, or `.null` for `nil`.
    package static func int<I: BinaryInteger>(orNull value: I?) -> JSONValue {
        value.map { .int(Int64(truncatingIfNeeded: $0)) } ?? .null
    }

    /// Writes compact JSON (no whitespace).
    package func write(into buffer: inout ByteBuffer) {
        switch self {
        case .null:
            buffer.writeStaticString("null")
        case .bool(let value):
            if value { buffer.writeStaticString("true") } else { buffer.writeStaticString("false") }
        case .int(let value):
            buffer.writeString(String(value))
        case .string(let value):
            buffer.writeJSONString(value)
        case .array(let values):
            buffer.writeInteger(UInt8(ascii: "["))
            for (index, value) in values.enumerated() {
                if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                value.write(into: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        case .object(let pairs):
            buffer.writeInteger(UInt8(ascii: "{"))
            for (index, (key, value)) in pairs.enumerated() {
                if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                buffer.writeJSONString(key)
                buffer.writeInteger(UInt8(ascii: ":"))
                value.write(into: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    /// The compact JSON text.
    package var text: String {
        var buffer = ByteBuffer()
        self.write(into: &buffer)
        return String(buffer: buffer)
    }
}

import Logging
import NIOConcurrencyHelpers
import RPCGateway

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `write(2)`, under a name that does not clash with ``LogOutput/write(_:)``.
private func systemWrite(_ descriptor: CInt, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Darwin)
    Darwin.write(descriptor, buffer, count)
    #elseif canImport(Glibc)
    Glibc.write(descriptor, buffer, count)
    #elseif canImport(Musl)
    Musl.write(descriptor, buffer, count)
    #endif
}

// Structured log formats for `logging.format`: `logfmt` and `json` (one line per message), next
// to swift-log's `StreamLogHandler` for `text`. Metadata is flattened: handler metadata, then the
// metadata provider's, then the call's (later wins); nested dictionaries become dotted keys
// (`a.b`), arrays a list. Metadata keys that collide with the fixed fields (`time`, `level`,
// `label`, `msg`/`message`) are written as `metadata.KEY`.

/// Where formatted lines go: a file descriptor (standard error), one `write(2)` per line under a
/// lock so lines from different threads never interleave; or, in tests, a closure.
final class LogOutput: Sendable {
    private enum Sink {
        case fileDescriptor(CInt)
        case capture(@Sendable (String) -> Void)
    }

    private let sink: Sink
    private let lock = NIOLock()

    static let standardError = LogOutput(fileDescriptor: 2)

    init(fileDescriptor: CInt) {
        self.sink = .fileDescriptor(fileDescriptor)
    }

    /// Hands every line (without its newline) to `capture`.
    init(capture: @escaping @Sendable (String) -> Void) {
        self.sink = .capture(capture)
    }

    /// Writes `line` and a newline.
    func write(_ line: String) {
        switch self.sink {
        case .capture(let capture):
            capture(line)
        case .fileDescriptor(let descriptor):
            var bytes = Array(line.utf8)
            bytes.append(UInt8(ascii: "\n"))
            self.lock.withLock {
                bytes.withUnsafeBytes { raw in
                    guard let base = raw.baseAddress else { return }
                    var offset = 0
                    // Ends when everything is written or write(2) fails with anything but EINTR.
                    while offset < raw.count {
                        let written = systemWrite(descriptor, base + offset, raw.count - offset)
                        if written > 0 {
                            offset += written
                        } else if written < 0, errno == EINTR {
                            continue
                        } else {
                            return
                        }
                    }
                }
            }
        }
    }
}

/// The fields every structured line carries, and the merged, flattened metadata.
struct LogRecord {
    var time: String
    var level: Logger.Level
    var label: String
    var message: String
    /// Flattened metadata, sorted by key.
    var fields: [(key: String, value: FlatValue)]

    enum FlatValue: Equatable {
        case text(String)
        case list([String])
    }

    static let reservedKeys: Set<String> = ["time", "level", "label", "msg", "message"]

    init(
        time: String = AuditTimestamp.now().rfc3339,
        level: Logger.Level,
        label: String,
        message: Logger.Message,
        handlerMetadata: Logger.Metadata,
        provider: Logger.MetadataProvider?,
        callMetadata: Logger.Metadata?
    ) {
        self.time = time
        self.level = level
        self.label = label
        self.message = message.description
        var merged = handlerMetadata
        if let provided = provider?.get() {
            merged.merge(provided) { _, new in new }
        }
        if let callMetadata {
            merged.merge(callMetadata) { _, new in new }
        }
        var fields: [(key: String, value: FlatValue)] = []
        Self.flatten(merged, prefix: "", into: &fields)
        self.fields = fields.map { field in
            Self.reservedKeys.contains(field.key) ? ("metadata." + field.key, field.value) : field
        }.sorted { $0.key < $1.key }
    }

    private static func flatten(
        _ metadata: Logger.Metadata,
        prefix: String,
        into fields: inout [(key: String, value: FlatValue)]
    ) {
        for (key, value) in metadata {
            let name = prefix.isEmpty ? key : prefix + "." + key
            switch value {
            case .string(let text):
                fields.append((name, .text(text)))
            case .stringConvertible(let convertible):
                fields.append((name, .text(convertible.description)))
            case .dictionary(let nested):
                self.flatten(nested, prefix: name, into: &fields)
            case .array(let values):
                fields.append((name, .list(values.map(Self.text(of:)))))
            }
        }
    }

    private static func text(of value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .dictionary(let nested):
            "{"
                + nested.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.text(of: $0.value))" }.joined(
                    separator: ","
                ) + "}"
        case .array(let values): "[" + values.map(Self.text(of:)).joined(separator: ",") + "]"
        }
    }
}

/// How a log line looks: the logfmt and JSON formats differ only here.
protocol LogLineFormat {
    static func format(_ record: LogRecord) -> String
}

/// The handler behind both formats: each log event becomes one ``LogRecord`` (handler, provider
/// and call metadata merged) and one line on the output, formatted by `Format`.
struct LineLogHandler<Format: LogLineFormat>: LogHandler {
    let label: String
    let output: LogOutput
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, output: LogOutput = .standardError, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.output = output
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let record = LogRecord(
            level: event.level,
            label: self.label,
            message: event.message,
            handlerMetadata: self.metadata,
            provider: self.metadataProvider,
            callMetadata: event.metadata
        )
        self.output.write(Format.format(record))
    }
}

typealias LogfmtLogHandler = LineLogHandler<LogfmtFormat>
typealias JSONLogHandler = LineLogHandler<JSONLinesFormat>

// MARK: - logfmt

/// `time=2024-05-01T12:00:00.123Z level=info label=rpcgate msg="connection closed" bytes_from_client=228 …`
///
/// Values are quoted when empty or when they contain a space, `=`, `"` or a control character;
/// inside quotes `\` and `"` are escaped and control characters written as `\n`, `\r`, `\t` or
/// `\u00XX`. Keys keep letters, digits and `_ . - /`; anything else becomes `_`.
enum LogfmtFormat: LogLineFormat {
    static func format(_ record: LogRecord) -> String {
        var line =
            "time=\(record.time) level=\(record.level.rawValue) label=\(Self.value(record.label)) msg=\(Self.value(record.message))"
        for (key, value) in record.fields {
            line += " " + Self.key(key) + "="
            switch value {
            case .text(let text): line += Self.value(text)
            case .list(let items): line += Self.value(items.joined(separator: ","))
            }
        }
        return line
    }

    static func key(_ key: String) -> String {
        let cleaned = String(
            String.UnicodeScalarView(
                key.unicodeScalars.map { scalar in
                    switch scalar {
                    case "a"..."z", "A"..."Z", "0"..."9", "_", ".", "-", "/": scalar
                    default: "_"
                    }
                }
            )
        )
        return cleaned.isEmpty ? "_" : cleaned
    }

    static func value(_ text: String) -> String {
        let needsQuotes =
            text.isEmpty
            || text.unicodeScalars.contains { $0.value <= 0x20 || $0 == "=" || $0 == "\"" || $0.value == 0x7F }
        guard needsQuotes else { return text }
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    quoted += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
                } else {
                    quoted.unicodeScalars.append(scalar)
                }
            }
        }
        return quoted + "\""
    }
}

// MARK: - JSON lines

/// `{"time":"2024-05-01T12:00:00.123Z","level":"info","label":"rpcgate","message":"connection closed","bytes_from_client":"228",…}`
///
/// One JSON object per line; metadata values are strings (lists are arrays of strings), keys in
/// sorted order after the fixed fields.
enum JSONLinesFormat: LogLineFormat {
    static func format(_ record: LogRecord) -> String {
        var pairs: [(String, JSONValue)] = [
            ("time", .string(record.time)),
            ("level", .string(record.level.rawValue)),
            ("label", .string(record.label)),
            ("message", .string(record.message)),
        ]
        for (key, value) in record.fields {
            switch value {
            case .text(let text): pairs.append((key, .string(text)))
            case .list(let items): pairs.append((key, .array(items.map(JSONValue.string))))
            }
        }
        return JSONValue.object(pairs).text
    }
}

// MARK: - Bootstrap

enum LogSetup {
    /// A handler factory for `LoggingSystem.bootstrap` in the configured format and level.
    static func factory(
        format: LoggingSettings.Format,
        level: Logger.Level,
        output: LogOutput = .standardError
    ) -> @Sendable (String, Logger.MetadataProvider?) -> any LogHandler {
        { label, provider in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label, metadataProvider: provider)
                handler.logLevel = level
                return handler
            case .logfmt:
                var handler = LogfmtLogHandler(label: label, output: output, metadataProvider: provider)
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: label, output: output, metadataProvider: provider)
                handler.logLevel = level
                return handler
            }
        }
    }
}

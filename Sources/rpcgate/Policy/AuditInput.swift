import Foundation
import RPCPolicy
import RPCWire

/// One audit line as `policy suggest` and `policy test` need it.
///
/// Read from the ECS field names (`docs/AUDIT.md`); lines written before them (`time`, `client`,
/// `uuid`, `version`, ...) are read too.
struct AuditEntry: Hashable, Sendable {
    enum Event: String, Hashable, Sendable {
        case bind
        case call
    }

    var time: Date
    /// The RFC 3339 text as written, for messages.
    var timeText: String
    var route: String
    var listener: String
    var event: Event
    var client: IPAddress
    var interface: SyntaxID
    /// The catalog name the gateway wrote (`unknown` when none).
    var interfaceName: String
    var opnum: UInt16?
    var authLevel: AuthLevel
    var authType: String
    var decision: PolicyAction
    var user: String?
    var servicePrincipal: String?
    /// DCOM activation lines (`event.action` `activation`, read as calls): the class created, or
    /// that it could not be read (`rpc.dcom.clsid`).
    var activation: ActivationClass?
    /// A DCOM reply line (`activation_reply`, `oxid_resolution`): it records what a request led to,
    /// not a decision; learning and replay skip it.
    var isAnnouncement = false

    /// Whether the line was decided by the endpoint-mapper listener itself (not by a policy). The
    /// DCOM interfaces RPCSS serves on the same port are decided by the policy.
    var isEndpointMapperListener: Bool {
        self.listener == "epm" && !DCOMInterface.isActivator(self.interface.uuid)
            && self.interface.uuid != DCOMInterface.objectExporter.uuid
    }

    static let authLevels: [String: AuthLevel] = [
        "none": .none, "connect": .connect, "call": .call, "packet": .packet, "integrity": .integrity,
        "privacy": .privacy,
    ]

    /// Parses one JSON line; `nil` when it is not an audit record.
    init?(jsonLine: Data) {
        guard let object = try? JSONSerialization.jsonObject(with: jsonLine) as? [String: Any] else { return nil }
        func string(_ keys: String...) -> String? {
            for key in keys { if let value = object[key] as? String { return value } }
            return nil
        }
        func integer(_ keys: String...) -> Int? {
            for key in keys { if let value = object[key] as? Int { return value } }
            return nil
        }
        guard let timeText = string("@timestamp", "time"), let time = AuditTime.parse(timeText),
            let route = string("rpc.route", "route"),
            let eventText = string("event.action", "event"),
            let event = Event(rawValue: eventText) ?? Self.dcomEvents[eventText],
            let clientText = string("source.ip", "client"), let client = IPAddress(clientText),
            let uuidText = string("rpc.interface_uuid", "uuid"), let uuid = DCEUUID(uuidText),
            let versionText = string("rpc.interface_version", "version"),
            let decisionText = string("rpc.decision", "decision"), let decision = PolicyAction(rawValue: decisionText)
        else { return nil }
        let version = versionText.split(separator: ".")
        guard version.count == 2, let major = UInt16(version[0]), let minor = UInt16(version[1]) else { return nil }
        self.time = time
        self.timeText = timeText
        self.route = route
        self.listener = string("rpc.listener", "listener") ?? "mapped"
        self.event = event
        self.client = client
        self.interface = SyntaxID(uuid: uuid, majorVersion: major, minorVersion: minor)
        self.interfaceName = string("rpc.interface", "interface") ?? "unknown"
        self.opnum = integer("rpc.opnum", "opnum").flatMap { UInt16(exactly: $0) }
        self.authLevel = string("rpc.auth_level", "auth_level").flatMap { Self.authLevels[$0] } ?? .none
        self.authType = string("rpc.auth_type", "auth_type") ?? "none"
        self.decision = decision
        let user = string("user.name")
        let domain = string("user.domain")
        self.user = user.map { name in domain.map { "\($0)\\\(name)" } ?? name }
        self.servicePrincipal = string("rpc.auth.service_principal")
        self.isAnnouncement = eventText == "activation_reply" || eventText == "oxid_resolution"
        if eventText == "activation", let classText = string("rpc.dcom.clsid") {
            switch classText {
            case "sealed": self.activation = .sealed
            case "unreadable": self.activation = .unreadable
            default: self.activation = DCEUUID(classText).map { .known($0) }
            }
        }
    }

    /// DCOM lines (`docs/AUDIT.md`): an activation is a call; replies are read and skipped.
    static let dcomEvents: [String: Event] = ["activation": .call, "activation_reply": .call, "oxid_resolution": .call]
}

/// RFC 3339 timestamps, as the audit log writes them and as `--since`/`--until` take them.
enum AuditTime {
    static func parse(_ text: String) -> Date? {
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = withFraction.date(from: text) { return date }
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        if let date = plain.date(from: text) { return date }
        // A bare date: its midnight, UTC.
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        return day.date(from: text)
    }

    static func text(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}

/// Reads audit records from files, rotated or compressed, or standard input.
struct AuditReader {
    var since: Date?
    var until: Date?
    /// Lines that were not audit records (blank lines excluded).
    private(set) var skippedLines = 0
    private(set) var outsideWindow = 0

    init(since: Date? = nil, until: Date? = nil) {
        self.since = since
        self.until = until
    }

    /// Longest line accepted (an audit line is under 1 KiB); longer ones are skipped.
    static let maximumLineLength = 64 * 1024

    /// Calls `body` for each record of each source in order. `-` is standard input. gzip, xz,
    /// bzip2 and zstd files (recognised by their first bytes, whatever their name) are read
    /// through the system's decompressor.
    mutating func read(_ sources: [String], _ body: (AuditEntry) throws -> Void) throws {
        for source in sources {
            let stream = try Self.open(source)
            defer { stream.close() }
            var pending = Data()
            while true {
                let chunk = stream.handle.readData(ofLength: 256 * 1024)
                if chunk.isEmpty { break }
                pending.append(chunk)
                var lineStart = pending.startIndex
                while let newline = pending[lineStart...].firstIndex(of: 0x0A) {
                    try self.take(Data(pending[lineStart..<newline]), body)
                    lineStart = pending.index(after: newline)
                }
                pending = Data(pending[lineStart...])
                if pending.count > Self.maximumLineLength {
                    self.skippedLines += 1
                    pending.removeAll()
                }
            }
            if !pending.isEmpty { try self.take(pending, body) }
            try stream.finish(source)
        }
    }

    private mutating func take(_ line: Data, _ body: (AuditEntry) throws -> Void) throws {
        guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { return }
        guard let entry = AuditEntry(jsonLine: line) else {
            self.skippedLines += 1
            return
        }
        if let since = self.since, entry.time < since {
            self.outsideWindow += 1
            return
        }
        if let until = self.until, entry.time >= until {
            self.outsideWindow += 1
            return
        }
        try body(entry)
    }

    /// An open input: a file handle, and the decompressor feeding it if any.
    struct Stream {
        var handle: FileHandle
        var process: Process?
        var file: FileHandle?

        func close() {
            try? self.handle.close()
            try? self.file?.close()
        }

        func finish(_ source: String) throws {
            guard let process = self.process else { return }
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw AuditInputError(
                    "\(source): \(process.executableURL?.lastPathComponent ?? "decompressor") exited with status \(process.terminationStatus)"
                )
            }
        }
    }

    /// Magic numbers and the command that decompresses to standard output.
    static let decompressors: [(magic: [UInt8], command: String)] = [
        ([0x1F, 0x8B], "gzip"),
        ([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], "xz"),
        ([0x42, 0x5A, 0x68], "bzip2"),
        ([0x28, 0xB5, 0x2F, 0xFD], "zstd"),
    ]

    static func open(_ source: String) throws -> Stream {
        if source == "-" { return Stream(handle: FileHandle.standardInput) }
        guard let file = FileHandle(forReadingAtPath: source) else {
            throw AuditInputError("cannot read the audit file \(source)")
        }
        let head = file.readData(ofLength: 6)
        try file.seek(toOffset: 0)
        guard let command = self.decompressors.first(where: { head.starts(with: $0.magic) })?.command else {
            return Stream(handle: file)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [command, "-dc"]
        process.standardInput = file
        let pipe = Pipe()
        process.standardOutput = pipe
        do {
            try process.run()
        } catch {
            throw AuditInputError("\(source) is \(command)-compressed and \(command) cannot be run: \(error)")
        }
        return Stream(handle: pipe.fileHandleForReading, process: process, file: file)
    }
}

struct AuditInputError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

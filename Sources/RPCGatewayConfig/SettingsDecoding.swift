import Foundation
import Logging
import RPCGateway
import RPCPolicy
import Yams

extension ConfigurationDecoder {
    static let topLevelKeys = [
        "routes", "policies", "admin", "limits", "timeouts", "audit", "logging", "peers", "core",
    ]
    static let adminKeys = ["listen", "token_file", "readiness"]
    static let readinessKeys = ["interval", "timeout", "max_age"]
    static let loggingKeys = ["format", "level"]
    /// Bytes read from `admin.token_file` at most: a token, not a key bundle.
    static let maximumTokenFileSize = 4096
    static let limitKeys = [
        "max_connections", "max_connections_per_source", "new_connections_per_second_per_source",
        "source_prefix_ipv4", "source_prefix_ipv6",
    ]
    /// Upper bound for `new_connections_per_second_per_source`: catches a stray digit.
    static let maximumConnectionRate = 1_000_000
    static let timeoutKeys = ["connect", "idle", "bind", "half_close", "drain"]
    static let auditKeys = ["file", "buffer_lines", "syslog"]
    static let syslogKeys = ["address", "transport", "facility", "app_name"]
    /// Upper bound for `audit.buffer_lines`: catches a stray digit (each line is about 200 bytes).
    static let maximumAuditBufferLines = 10_000_000

    /// The whole document. `nil` when anything is wrong; ``problems`` then says what.
    mutating func decodeSettings(_ root: Node) -> GatewaySettings? {
        guard case .mapping = root else {
            let found = Self.isNull(root) ? "the document is empty" : "found \(Self.describe(root))"
            self.report(
                "the configuration must be a mapping with keys such as routes and policies; \(found)",
                at: .root,
                node: root
            )
            return nil
        }
        // A core needs no routes of its own; anything else does.
        let isCore: Bool = {
            guard case .mapping(let mapping) = root else { return false }
            return mapping.contains { key, _ in
                if case .scalar(let scalar) = key { return scalar.string == "core" }
                return false
            }
        }()
        guard let top = self.fields(of: root, at: .root, known: Self.topLevelKeys, required: isCore ? [] : ["routes"])
        else {
            return nil
        }

        var policies = DecodedPolicies()
        if let node = top["policies"] {
            policies = self.decodePolicies(node, at: ConfigPath.root.key("policies"))
        }

        var drafts: [RouteDraft] = []
        if let node = top["routes"] {
            let path = ConfigPath.root.key("routes")
            if let items = self.list(node, at: path, what: "a list of routes") {
                if items.isEmpty, top["core"] == nil {
                    self.report("at least one route is required", at: path, node: node)
                }
                for item in items {
                    if let draft = self.decodeRoute(item.node, at: item.path) { drafts.append(draft) }
                }
                self.checkRoutes(drafts, policies: policies)
            }
        }

        var peers: [String: PeerSettings] = [:]
        if let node = top["peers"] {
            peers = self.decodePeers(node, at: ConfigPath.root.key("peers"))
        }
        self.checkVia(drafts, peers: peers, peersNode: top["peers"])
        var core: CoreSettings?
        if let node = top["core"] {
            core = self.decodeCore(node, at: ConfigPath.root.key("core"), policies: policies)
        }

        var admin: AdminSettings?
        if let node = top["admin"] {
            admin = self.decodeAdmin(node, at: ConfigPath.root.key("admin"), routes: drafts)
        }
        var limits = ConnectionLimits()
        if let node = top["limits"] {
            self.decodeLimits(node, at: ConfigPath.root.key("limits"), into: &limits)
        }
        var timeouts = Timeouts()
        if let node = top["timeouts"] {
            self.decodeTimeouts(node, at: ConfigPath.root.key("timeouts"), into: &timeouts)
        }
        var audit: AuditSettings?
        if let node = top["audit"] {
            audit = self.decodeAudit(node, at: ConfigPath.root.key("audit"))
        }
        var logging = LoggingSettings()
        if let node = top["logging"] {
            self.decodeLogging(node, at: ConfigPath.root.key("logging"), into: &logging)
        }

        core?.perSource = limits.perSource

        guard self.problems.isEmpty else { return nil }
        let routes = drafts.compactMap { Self.settings(of: $0, policies: policies) }
        // Every field decoded (no problems), so every draft builds.
        guard routes.count == drafts.count, !routes.isEmpty || core != nil else { return nil }
        return GatewaySettings(
            routes: routes,
            admin: admin,
            limits: limits,
            timeouts: timeouts,
            audit: audit,
            logging: logging,
            peers: peers,
            core: core
        )
    }

    // MARK: - Sections

    private mutating func decodeAdmin(_ node: Node, at path: ConfigPath, routes: [RouteDraft]) -> AdminSettings? {
        guard let fields = self.fields(of: node, at: path, known: Self.adminKeys, required: ["listen"]),
            let listenNode = fields["listen"],
            let text = self.string(listenNode, at: path.key("listen"), what: "HOST:PORT")
        else { return nil }
        switch ValueParsers.hostAndPort(text) {
        case .failure(let failure):
            self.report(failure.message(for: text), at: path.key("listen"), node: listenNode)
            return nil
        case .success(let (host, port)):
            if let address = IPAddress(host) {
                for route in routes {
                    guard let routeAddress = route.listenAddress, Self.addressesOverlap(address, routeAddress) else {
                        continue
                    }
                    if route.epmPort.map({ Int($0) == port }) ?? false
                        || route.ports.map({ $0.contains(UInt16(port)) }) ?? false
                    {
                        self.report(
                            "port \(port) is already used by \(route.label) on \(route.listenText ?? "")",
                            at: path.key("listen"),
                            node: listenNode
                        )
                    }
                }
            }
            var admin = AdminSettings(host: host, port: port)
            var valid = true
            if let node = fields["token_file"] {
                let tokenPath = path.key("token_file")
                if let file = self.string(node, at: tokenPath, what: "the path of a file holding the token"),
                    let token = self.readToken(file, at: tokenPath, node: node)
                {
                    admin.token = token
                    admin.tokenFile = file
                } else {
                    valid = false
                }
            }
            if let node = fields["readiness"] {
                if let readiness = self.decodeReadiness(node, at: path.key("readiness")) {
                    admin.readiness = readiness
                } else {
                    valid = false
                }
            }
            return valid ? admin : nil
        }
    }

    /// `admin.token_file`: an existing, readable, non-empty file whose content (surrounding
    /// whitespace and line breaks removed) is the token, in the RFC 6750 `b64token` alphabet.
    private mutating func readToken(_ file: String, at path: ConfigPath, node: Node) -> BearerToken? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else {
            self.report("the token file \(file) does not exist", at: path, node: node)
            return nil
        }
        guard !isDirectory.boolValue else {
            self.report("\(file) is a directory; give the path of the token file", at: path, node: node)
            return nil
        }
        guard FileManager.default.isReadableFile(atPath: file), let handle = FileHandle(forReadingAtPath: file) else {
            self.report("the token file \(file) is not readable by this user", at: path, node: node)
            return nil
        }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: Self.maximumTokenFileSize + 1) ?? Data()
        } catch {
            self.report("cannot read the token file \(file): \(error.localizedDescription)", at: path, node: node)
            return nil
        }
        guard data.count <= Self.maximumTokenFileSize else {
            self.report(
                "the token file \(file) is larger than \(Self.maximumTokenFileSize) bytes; "
                    + "it should hold only the token",
                at: path,
                node: node
            )
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            self.report("the token file \(file) is not UTF-8 text", at: path, node: node)
            return nil
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let token = BearerToken(trimmed) else {
            self.report("the token file \(file) is empty", at: path, node: node)
            return nil
        }
        guard Self.isBearerTokenText(trimmed) else {
            self.report(
                "the token in \(file) must be one line of letters, digits and - . _ ~ + / (then = padding only)",
                at: path,
                node: node
            )
            return nil
        }
        return token
    }

    /// RFC 6750 section 2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
    static func isBearerTokenText(_ text: String) -> Bool {
        let scalars = Array(text.unicodeScalars)
        var end = scalars.count
        while end > 0, scalars[end - 1] == "=" { end -= 1 }
        guard end > 0 else { return false }
        return scalars[..<end].allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "-", ".", "_", "~", "+", "/": true
            default: false
            }
        }
    }

    /// `admin.readiness: {interval, timeout, max_age}`.
    private mutating func decodeReadiness(_ node: Node, at path: ConfigPath) -> ReadinessSettings? {
        guard let fields = self.fields(of: node, at: path, known: Self.readinessKeys) else { return nil }
        var settings = ReadinessSettings()
        var valid = true
        let keys: [(String, WritableKeyPath<ReadinessSettings, Duration>)] = [
            ("interval", \.interval), ("timeout", \.timeout), ("max_age", \.maximumAge),
        ]
        for (key, keyPath) in keys {
            guard let node = fields[key] else { continue }
            if let value = self.duration(node, at: path.key(key)) {
                settings[keyPath: keyPath] = value
            } else {
                valid = false
            }
        }
        guard valid else { return nil }
        if settings.maximumAge <= settings.interval {
            self.report(
                "max_age (\(DurationText.short(settings.maximumAge))) must be longer than interval "
                    + "(\(DurationText.short(settings.interval))), or routes turn unready between probes",
                at: path.key(fields["max_age"] != nil ? "max_age" : "interval"),
                node: fields["max_age"] ?? fields["interval"] ?? node
            )
            return nil
        }
        return settings
    }

    /// `logging: {format: text|logfmt|json, level: LEVEL}`.
    private mutating func decodeLogging(_ node: Node, at path: ConfigPath, into logging: inout LoggingSettings) {
        guard let fields = self.fields(of: node, at: path, known: Self.loggingKeys) else { return }
        if let node = fields["format"],
            let text = self.string(node, at: path.key("format"), what: "text, logfmt or json")
        {
            if let format = LoggingSettings.Format(rawValue: text.lowercased()) {
                logging.format = format
            } else {
                let known = LoggingSettings.Format.allCases.map(\.rawValue)
                var message = "unknown log format \"\(text)\""
                if let hint = Suggestions.didYouMean(text, among: known) {
                    message += "; \(hint)"
                } else {
                    message += " (expected \(Suggestions.list(known, conjunction: "or")))"
                }
                self.report(message, at: path.key("format"), node: node)
            }
        }
        if let node = fields["level"], let text = self.string(node, at: path.key("level"), what: "a log level") {
            if let level = Logger.Level(rawValue: text.lowercased()) {
                logging.level = level
            } else {
                let known = Logger.Level.allCases.map(\.rawValue)
                var message = "unknown log level \"\(text)\""
                if let hint = Suggestions.didYouMean(text, among: known, matchingSubstrings: true) {
                    message += "; \(hint)"
                } else {
                    message += " (expected \(Suggestions.list(known, conjunction: "or")))"
                }
                self.report(message, at: path.key("level"), node: node)
            }
        }
    }

    private mutating func decodeLimits(_ node: Node, at path: ConfigPath, into limits: inout ConnectionLimits) {
        guard let fields = self.fields(of: node, at: path, known: Self.limitKeys) else { return }
        if let node = fields["max_connections"],
            let value = self.integer(
                node,
                at: path.key("max_connections"),
                in: 1...Self.maximumConnectionCap,
                what: "a number of connections"
            )
        {
            limits.maximumConnections = value
        }
        if let node = fields["max_connections_per_source"],
            let value = self.integer(
                node,
                at: path.key("max_connections_per_source"),
                in: 1...Self.maximumConnectionCap,
                what: "a number of connections"
            )
        {
            limits.perSource.maximumConnections = value
        }
        if let node = fields["new_connections_per_second_per_source"],
            let value = self.integer(
                node,
                at: path.key("new_connections_per_second_per_source"),
                in: 1...Self.maximumConnectionRate,
                what: "a number of connections per second"
            )
        {
            limits.perSource.newConnectionsPerSecond = value
        }
        if let node = fields["source_prefix_ipv4"],
            let value = self.integer(
                node,
                at: path.key("source_prefix_ipv4"),
                in: 8...32,
                what: "an IPv4 prefix length (8 to 32)"
            )
        {
            limits.perSource.ipv4PrefixLength = value
        }
        if let node = fields["source_prefix_ipv6"],
            let value = self.integer(
                node,
                at: path.key("source_prefix_ipv6"),
                in: 16...128,
                what: "an IPv6 prefix length (16 to 128)"
            )
        {
            limits.perSource.ipv6PrefixLength = value
        }
    }

    private mutating func decodeTimeouts(_ node: Node, at path: ConfigPath, into timeouts: inout Timeouts) {
        guard let fields = self.fields(of: node, at: path, known: Self.timeoutKeys) else { return }
        if let node = fields["connect"], let value = self.duration(node, at: path.key("connect")) {
            timeouts.connectDuration = value
        }
        if let node = fields["idle"], let value = self.duration(node, at: path.key("idle")) {
            timeouts.idleDuration = value
        }
        if let node = fields["bind"], let value = self.duration(node, at: path.key("bind")) {
            timeouts.bindDuration = value
        }
        if let node = fields["half_close"], let value = self.duration(node, at: path.key("half_close")) {
            timeouts.halfCloseDuration = value
        }
        if let node = fields["drain"], let value = self.duration(node, at: path.key("drain")) {
            timeouts.drainDuration = value
        }
    }

    /// `audit: {file, buffer_lines}`. The file's directory must exist (the file is created at
    /// start); `-` is standard output.
    private mutating func decodeAudit(_ node: Node, at path: ConfigPath) -> AuditSettings? {
        guard let fields = self.fields(of: node, at: path, known: Self.auditKeys, required: ["file"]),
            let fileNode = fields["file"],
            let file = self.string(fileNode, at: path.key("file"), what: "a file path, or - for standard output")
        else { return nil }
        var settings = AuditSettings(file: file)
        var valid = self.checkAuditFile(file, at: path.key("file"), node: fileNode)
        if let node = fields["buffer_lines"] {
            if let lines = self.integer(
                node,
                at: path.key("buffer_lines"),
                in: 1...Self.maximumAuditBufferLines,
                what: "a number of lines"
            ) {
                settings.bufferLines = lines
            } else {
                valid = false
            }
        }
        if let node = fields["syslog"] {
            if let syslog = self.decodeSyslog(node, at: path.key("syslog")) {
                settings.syslog = syslog
            } else {
                valid = false
            }
        }
        return valid ? settings : nil
    }

    /// `audit.syslog: {address: HOST:PORT, transport: udp|tcp, facility: local0, app_name: rpcgate}`.
    /// The host must be an IP address: a name would be resolved on every reconnect, on the audit
    /// writer's thread.
    private mutating func decodeSyslog(_ node: Node, at path: ConfigPath) -> SyslogSettings? {
        guard let fields = self.fields(of: node, at: path, known: Self.syslogKeys, required: ["address"]),
            let addressNode = fields["address"],
            let address = self.string(addressNode, at: path.key("address"), what: "HOST:PORT of a syslog receiver")
        else { return nil }
        var valid = true
        var settings = SyslogSettings(host: "")
        switch ValueParsers.hostAndPort(address) {
        case .success(let parsed):
            if IPAddress(parsed.host) == nil {
                self.report(
                    "\"\(parsed.host)\" is not an IP address; give the syslog receiver's address",
                    at: path.key("address"),
                    node: addressNode
                )
                valid = false
            }
            settings.host = parsed.host
            settings.port = UInt16(parsed.port)
        case .failure(let failure):
            self.report(failure.message(for: address), at: path.key("address"), node: addressNode)
            valid = false
        }
        if let node = fields["transport"], let text = self.string(node, at: path.key("transport")) {
            if let transport = SyslogSettings.Transport(rawValue: text.lowercased()) {
                settings.transport = transport
            } else {
                self.report("\"\(text)\" is not a syslog transport (udp or tcp)", at: path.key("transport"), node: node)
                valid = false
            }
        }
        if let node = fields["facility"], let text = self.string(node, at: path.key("facility")) {
            if let facility = SyslogSettings.facilities[text.lowercased()] {
                settings.facility = facility
            } else {
                let known = SyslogSettings.facilities.sorted { $0.value < $1.value }.map(\.key).joined(separator: ", ")
                self.report("\"\(text)\" is not a syslog facility (\(known))", at: path.key("facility"), node: node)
                valid = false
            }
        }
        if let node = fields["app_name"], let text = self.string(node, at: path.key("app_name")) {
            // RFC 5424 6.2.5: 1-48 printable US-ASCII characters, no space.
            if !text.isEmpty, text.utf8.count <= 48, text.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) {
                settings.appName = text
            } else {
                self.report(
                    "app_name must be 1-48 printable ASCII characters without spaces",
                    at: path.key("app_name"),
                    node: node
                )
                valid = false
            }
        }
        return valid ? settings : nil
    }

    private mutating func checkAuditFile(_ file: String, at path: ConfigPath, node: Node) -> Bool {
        if file == AuditSettings.standardOutput { return true }
        if file.trimmingASCIISpaces.isEmpty {
            self.report("the audit file must not be empty (use - for standard output)", at: path, node: node)
            return false
        }
        var isDirectory: ObjCBool = false
        let existsAsDirectory =
            FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) && isDirectory.boolValue
        if file.hasSuffix("/") || existsAsDirectory {
            self.report("\"\(file)\" is a directory; give the path of the audit file", at: path, node: node)
            return false
        }
        let parent = Self.parentDirectory(of: file)
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory) else {
            self.report(
                "the directory \(parent) does not exist; create it or choose another audit file",
                at: path,
                node: node
            )
            return false
        }
        guard isDirectory.boolValue else {
            self.report("\(parent) is not a directory", at: path, node: node)
            return false
        }
        return true
    }

    /// The directory part of a path: `/var/log/rpcgate` for `/var/log/rpcgate/audit.jsonl`, `.`
    /// for a bare file name, `/` for a file at the root.
    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = path[..<slash]
        return parent.isEmpty ? "/" : String(parent)
    }
}

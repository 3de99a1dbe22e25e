import Foundation
import RPCGateway
import RPCPolicy
import Yams

extension ConfigurationDecoder {
    static let topLevelKeys = ["routes", "policies", "admin", "limits", "timeouts", "audit", "peers", "core"]
    static let adminKeys = ["listen"]
    static let limitKeys = ["max_connections"]
    static let timeoutKeys = ["connect", "idle", "bind", "half_close", "drain"]
    static let auditKeys = ["file", "buffer_lines"]
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
        guard let top = self.fields(of: root, at: .root, known: Self.topLevelKeys, required: isCore ? [] : ["routes"]) else {
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
            return AdminSettings(host: host, port: port)
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
        return valid ? settings : nil
    }

    private mutating func checkAuditFile(_ file: String, at path: ConfigPath, node: Node) -> Bool {
        if file == AuditSettings.standardOutput { return true }
        if file.trimmingASCIISpaces.isEmpty {
            self.report("the audit file must not be empty (use - for standard output)", at: path, node: node)
            return false
        }
        var isDirectory: ObjCBool = false
        let existsAsDirectory = FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) && isDirectory.boolValue
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

import RPCGateway
import RPCPolicy
import RPCWire
import Yams

/// A route as far as it could be read; `nil` fields were missing or invalid (and reported).
struct RouteDraft {
    var path: ConfigPath
    var fields: Fields
    var name: String?
    var listenText: String?
    var listenAddress: IPAddress?
    var epmPort: UInt16?
    var advertise: IPv4Address?
    var upstream: String?
    var upstreamEPMPort: UInt16?
    var ports: ClosedRange<UInt16>?
    var policyName: String?
    var maximumConnections: Int?
    var allowedServerPorts: [ClosedRange<UInt16>]?
    var maximumConnectionsPerSource: Int?
    var newConnectionsPerSecondPerSource: Int?
    var mappingIdle: Duration?
    var mode: RouteMode?
    var via: String?
    var portMapping: PortMappingMode = .pool
    var serverPortsListen: UInt16?
    var pinholes: PinholeMode = .any

    /// Where problems about the EPM port point: the `epm_port` value, or `listen` when defaulted.
    var epmPortNode: Node { self.fields["epm_port"] ?? self.fields["listen"] ?? self.fields.node }

    /// `route "dc1" (routes[0])`, for messages about another route.
    var label: String {
        if let name = self.name { return "route \"\(name)\" (\(self.path))" }
        return "\(self.path)"
    }
}

extension ConfigurationDecoder {
    static let routeKeys = [
        "name", "listen", "epm_port", "advertise", "upstream", "upstream_epm_port", "ports", "policy",
        "max_connections", "mapping_idle_timeout", "mode", "port", "servers", "via",
        "max_connections_per_source", "new_connections_per_second_per_source", "server_ports",
        "port_mapping", "server_ports_listen", "pinholes",
    ]
    static let requiredRouteKeys = ["name", "listen", "policy"]
    static let routeModes = ["mapped", "single-port", "transparent"]
    /// Most gateway-owned ports one route may reserve.
    static let maximumPortsPerRoute = 10_000
    /// Upper bound for connection caps: catches a stray digit, not a tuning limit.
    static let maximumConnectionCap = 10_000_000
    static let defaultEPMPort: UInt16 = 135

    // MARK: - One route

    mutating func decodeRoute(_ node: Node, at path: ConfigPath) -> RouteDraft? {
        guard
            let fields = self.fields(
                of: node,
                at: path,
                known: Self.routeKeys,
                required: ["name", "listen"] + Self.requiredKeys(forMode: Self.peekMode(node)) + ["policy"],
                what: "a route (a mapping with name, listen, upstream, ports, policy)"
            )
        else { return nil }
        var draft = RouteDraft(path: path, fields: fields)
        self.decodeMode(fields, at: path, into: &draft)

        if let node = fields["name"], let name = self.string(node, at: path.key("name"), what: "a route name") {
            if name.trimmingASCIISpaces.isEmpty {
                self.report("the route name must not be empty", at: path.key("name"), node: node)
            } else {
                draft.name = name
            }
        }
        if let node = fields["listen"] {
            self.decodeListen(node, at: path.key("listen"), into: &draft)
        }
        if let node = fields["epm_port"] {
            draft.epmPort = self.port(node, at: path.key("epm_port"))
        } else {
            draft.epmPort = Self.defaultEPMPort
        }
        if let node = fields["advertise"],
            let text = self.string(node, at: path.key("advertise"), what: "an IPv4 address")
        {
            if let address = IPv4Address(text) {
                draft.advertise = address
            } else if case .v6 = IPAddress(text) {
                self.report(
                    "\"\(text)\" is IPv6; advertise must be an IPv4 address (towers carry IPv4 only)",
                    at: path.key("advertise"),
                    node: node
                )
            } else {
                self.report("\"\(text)\" is not an IPv4 address", at: path.key("advertise"), node: node)
            }
        }
        if let node = fields["upstream"] {
            draft.upstream = self.upstream(node, at: path.key("upstream"))
        }
        if let node = fields["upstream_epm_port"] {
            draft.upstreamEPMPort = self.port(node, at: path.key("upstream_epm_port"))
        } else {
            draft.upstreamEPMPort = Self.defaultEPMPort
        }
        if let node = fields["ports"] {
            draft.ports = self.portRange(node, at: path.key("ports"))
        }
        if let node = fields["port"], let port = self.port(node, at: path.key("port")) {
            draft.ports = port...port
        }
        if let node = fields["policy"], let name = self.string(node, at: path.key("policy"), what: "a policy name") {
            draft.policyName = name
        }
        if let node = fields["max_connections"] {
            draft.maximumConnections = self.integer(
                node,
                at: path.key("max_connections"),
                in: 1...Self.maximumConnectionCap,
                what: "a number of connections"
            )
        } else {
            draft.maximumConnections = 1024
        }
        if let node = fields["server_ports"] {
            draft.allowedServerPorts = self.serverPorts(node, at: path.key("server_ports"))
        }
        if let node = fields["max_connections_per_source"] {
            draft.maximumConnectionsPerSource = self.integer(
                node,
                at: path.key("max_connections_per_source"),
                in: 1...Self.maximumConnectionCap,
                what: "a number of connections"
            )
        }
        if let node = fields["new_connections_per_second_per_source"] {
            draft.newConnectionsPerSecondPerSource = self.integer(
                node,
                at: path.key("new_connections_per_second_per_source"),
                in: 1...Self.maximumConnectionRate,
                what: "a number of connections per second"
            )
        }
        if let node = fields["mapping_idle_timeout"] {
            draft.mappingIdle = self.duration(node, at: path.key("mapping_idle_timeout"))
        } else {
            draft.mappingIdle = .seconds(600)
        }

        if let node = fields["via"], let name = self.string(node, at: path.key("via"), what: "a peer name") {
            draft.via = name
        }
        self.decodeProtectedLookupKeys(fields, at: path, into: &draft)

        self.checkOwnPorts(of: draft)
        return draft
    }

    /// `mode` and the keys each mode forbids: mapped (default) needs `upstream` and
    /// `ports`; single-port needs `upstream` and `port`; transparent needs `ports` and `servers`.
    private mutating func decodeMode(_ fields: Fields, at path: ConfigPath, into draft: inout RouteDraft) {
        var modeName = "mapped"
        if let node = fields["mode"] {
            guard let text = self.string(node, at: path.key("mode"), what: "a route mode") else { return }
            guard Self.routeModes.contains(text) else {
                var message = "unknown mode \"\(text)\""
                if let hint = Suggestions.didYouMean(text, among: Self.routeModes) {
                    message += "; \(hint)"
                } else {
                    message += " (expected \(Suggestions.list(Self.routeModes, conjunction: "or")))"
                }
                self.report(message, at: path.key("mode"), node: node)
                return
            }
            modeName = text
        }
        // Required keys were checked with the mapping (``requiredKeys(forMode:)``).
        let forbidden: [String] =
            switch modeName {
            case "single-port": ["ports", "servers", "port_mapping", "server_ports_listen", "pinholes"]
            case "transparent": ["upstream", "port", "advertise", "port_mapping"]
            default: ["port", "servers", "server_ports_listen", "pinholes"]
            }
        for key in forbidden {
            if let node = fields[key] {
                self.report(
                    "\"\(key)\" does not apply to mode \(modeName)",
                    at: path.key(key),
                    node: fields.keyNode(key) ?? node
                )
            }
        }
        switch modeName {
        case "single-port":
            draft.mode = .singlePort
        case "transparent":
            guard let node = fields["servers"],
                let items = self.list(node, at: path.key("servers"), allowingSingle: true, what: "a list of networks")
            else { return }
            var servers: [IPNetwork] = []
            for (item, itemPath) in items {
                guard let text = self.string(item, at: itemPath, what: "an IPv4 network") else { continue }
                if let network = IPNetwork(text), case .v4 = network.address {
                    servers.append(network)
                } else {
                    self.report(
                        "\"\(text)\" is not an IPv4 network (ADDRESS/PREFIX, host bits zero)",
                        at: itemPath,
                        node: item
                    )
                }
            }
            if servers.isEmpty, items.isEmpty {
                self.report("servers must name at least one network", at: path.key("servers"), node: node)
            }
            if servers.count == items.count, !servers.isEmpty {
                draft.mode = .transparent(servers: servers)
                draft.upstream = "0.0.0.0"
            }
        default:
            draft.mode = .mapped
        }
    }

    /// The `mode` scalar of a route mapping, read before the route is decoded (to know which
    /// keys are required).
    static func peekMode(_ node: Node) -> String? {
        guard case .mapping(let mapping) = node else { return nil }
        for (key, value) in mapping {
            if case .scalar(let k) = key, k.string == "mode", case .scalar(let v) = value { return v.string }
        }
        return nil
    }

    static func requiredKeys(forMode mode: String?) -> [String] {
        switch mode {
        case "single-port": ["upstream", "port"]
        // `ports`, or `server_ports_listen` instead (checked in ``decodeProtectedLookupKeys``).
        case "transparent": ["servers"]
        default: ["upstream", "ports"]
        }
    }

    /// `port_mapping` (mapped), `server_ports_listen` and `pinholes` (transparent): the keys that
    /// make signed and sealed endpoint-mapper lookups work (docs/DEPLOYMENT.md, "Hardened Windows
    /// clients and DCOM"). Keys a mode does not take were reported by ``decodeMode``.
    private mutating func decodeProtectedLookupKeys(_ fields: Fields, at path: ConfigPath, into draft: inout RouteDraft)
    {
        let transparent = Self.isTransparent(draft)
        if let node = fields["port_mapping"], draft.mode == .mapped,
            let text = self.string(node, at: path.key("port_mapping"), what: "pool or preserve")
        {
            if let mapping = PortMappingMode(rawValue: text) {
                draft.portMapping = mapping
            } else {
                let names = PortMappingMode.allCases.map(\.rawValue)
                var message = "unknown port_mapping \"\(text)\""
                if let hint = Suggestions.didYouMean(text, among: names) {
                    message += "; \(hint)"
                } else {
                    message += " (expected \(Suggestions.list(names, conjunction: "or")))"
                }
                self.report(message, at: path.key("port_mapping"), node: node)
            }
        }
        guard transparent else { return }
        if let node = fields["server_ports_listen"], let port = self.port(node, at: path.key("server_ports_listen")) {
            draft.serverPortsListen = port
            if fields["ports"] != nil {
                self.report(
                    "\"ports\" does not apply with server_ports_listen: towers keep the servers' own ports, "
                        + "which nftables redirects to server_ports_listen",
                    at: path.key("ports"),
                    node: fields.keyNode("ports") ?? fields["ports"]
                )
            }
            if fields["server_ports"] == nil {
                self.report(
                    "server_ports_listen needs server_ports: the servers' dynamic port range (LOW-HIGH) "
                        + "that nftables redirects to it",
                    at: path.key("server_ports_listen"),
                    node: node
                )
            }
            draft.ports = port...port
        } else if fields["server_ports_listen"] == nil, fields["ports"] == nil {
            self.report(
                "missing required key \"ports\" (or server_ports_listen)",
                at: path,
                node: fields.node
            )
        }
        if let node = fields["pinholes"], let text = self.string(node, at: path.key("pinholes"), what: "any or learned")
        {
            if fields["server_ports_listen"] == nil {
                self.report("pinholes applies only with server_ports_listen", at: path.key("pinholes"), node: node)
            } else if let mode = PinholeMode(rawValue: text) {
                draft.pinholes = mode
            } else {
                self.report(
                    "unknown pinholes \"\(text)\" (expected any or learned)",
                    at: path.key("pinholes"),
                    node: node
                )
            }
        }
    }

    private mutating func decodeListen(_ node: Node, at path: ConfigPath, into draft: inout RouteDraft) {
        guard let text = self.string(node, at: path, what: "an IP address") else { return }
        if let address = IPAddress(text) {
            draft.listenText = text
            draft.listenAddress = address
            return
        }
        let message: String
        if text.hasPrefix("["), text.hasSuffix("]") {
            message = "\"\(text)\": write the IPv6 address without brackets"
        } else if case .success = ValueParsers.hostAndPort(text) {
            message = "\"\(text)\": listen takes an address only; give the port as epm_port"
        } else {
            message = "\"\(text)\" is not an IPv4 or IPv6 address"
        }
        self.report(message, at: path, node: node)
    }

    private mutating func upstream(_ node: Node, at path: ConfigPath) -> String? {
        guard let text = self.string(node, at: path, what: "a host name or IP address") else { return nil }
        if text.trimmingASCIISpaces.isEmpty {
            self.report("the upstream must not be empty", at: path, node: node)
            return nil
        }
        if ValueParsers.isHost(text) { return text }
        if case .success = ValueParsers.hostAndPort(text) {
            self.report(
                "\"\(text)\": upstream takes a host only; give the port as upstream_epm_port",
                at: path,
                node: node
            )
        } else {
            self.report("\"\(text)\" is not an IP address or host name", at: path, node: node)
        }
        return nil
    }

    /// `server_ports`: a port, a `LOW-HIGH` range, or a list of them.
    private mutating func serverPorts(_ node: Node, at path: ConfigPath) -> [ClosedRange<UInt16>]? {
        guard let items = self.list(node, at: path, allowingSingle: true, what: "a list of ports or port ranges") else {
            return nil
        }
        var ranges: [ClosedRange<UInt16>] = []
        for (item, itemPath) in items {
            guard let text = self.string(item, at: itemPath, what: "a port or a port range such as 49152-65535") else {
                continue
            }
            if let port = UInt16(text), port > 0 {
                ranges.append(port...port)
            } else if let range = ValueParsers.portRange(text) {
                ranges.append(range)
            } else {
                self.report("\"\(text)\" is not a port or a port range (LOW-HIGH, 1-65535)", at: itemPath, node: item)
            }
        }
        if items.isEmpty {
            self.report(
                "an empty list allows no server port; leave server_ports out to allow any",
                at: path,
                node: node
            )
        }
        return ranges
    }

    private mutating func portRange(_ node: Node, at path: ConfigPath) -> ClosedRange<UInt16>? {
        guard let text = self.string(node, at: path, what: "a port range such as 50000-50099") else { return nil }
        guard let range = ValueParsers.portRange(text) else {
            self.report("\"\(text)\" is not a port range (LOW-HIGH, LOW <= HIGH, 1-65535)", at: path, node: node)
            return nil
        }
        guard range.count <= Self.maximumPortsPerRoute else {
            self.report(
                "\"\(text)\" has \(range.count) ports; a route may have at most \(Self.maximumPortsPerRoute)",
                at: path,
                node: node
            )
            return nil
        }
        return range
    }

    /// The EPM port must not be one of the route's own mapped ports, and the route must not
    /// forward to itself.
    private mutating func checkOwnPorts(of draft: RouteDraft) {
        if let epmPort = draft.epmPort, let ports = draft.ports, ports.contains(epmPort), draft.mode != .singlePort {
            self.report(
                "EPM port \(epmPort) is inside this route's ports \(Self.describe(ports))",
                at: draft.fields["epm_port"] != nil ? draft.path.key("epm_port") : draft.path.key("ports"),
                node: draft.fields["epm_port"] ?? draft.fields["ports"]
            )
        }
        if case .transparent = draft.mode { return }
        if let listen = draft.listenAddress, let upstream = draft.upstream, IPAddress(upstream) == listen,
            let epmPort = draft.epmPort, draft.upstreamEPMPort == epmPort
        {
            self.report(
                "upstream \(upstream) port \(epmPort) is this route's own EPM listener; "
                    + "the gateway would forward to itself",
                at: draft.path.key("upstream"),
                node: draft.fields["upstream"]
            )
        }
    }

    // MARK: - Between routes

    /// Unique names, no shared ports on overlapping listen addresses, and policy references that
    /// resolve.
    mutating func checkRoutes(_ routes: [RouteDraft], policies: DecodedPolicies) {
        var seenNames: [String: RouteDraft] = [:]
        for (position, route) in routes.enumerated() {
            if let name = route.name {
                if let first = seenNames[name] {
                    self.report(
                        "duplicate route name \"\(name)\" (also \(first.path))",
                        at: route.path.key("name"),
                        node: route.fields["name"]
                    )
                } else {
                    seenNames[name] = route
                }
            }
            for earlier in routes[..<position] {
                self.checkOverlap(route, with: earlier)
            }
            if let policyName = route.policyName, !policies.defined.contains(policyName) {
                var message = "unknown policy \"\(policyName)\""
                if policies.defined.isEmpty {
                    message += " (no policies are defined)"
                } else if let hint = Suggestions.didYouMean(policyName, among: policies.defined) {
                    message += "; \(hint)"
                } else {
                    message += " (defined: \(Suggestions.list(policies.defined, conjunction: "and")))"
                }
                self.report(message, at: route.path.key("policy"), node: route.fields["policy"])
            }
        }
    }

    /// Reports, on `route`, every port it shares with `earlier` when their listen addresses
    /// overlap (equal, or one is the wildcard of the same family).
    private mutating func checkOverlap(_ route: RouteDraft, with earlier: RouteDraft) {
        guard let address = route.listenAddress, let other = earlier.listenAddress,
            Self.addressesOverlap(address, other)
        else { return }
        // A transparent route on the wildcard and a route on a specific address may share ports:
        // the gateway binds both with SO_REUSEPORT and the kernel prefers the specific address.
        if address != other, Self.isTransparent(route) != Self.isTransparent(earlier) { return }
        let listenNote = route.listenText == earlier.listenText ? "" : " (listening on \(earlier.listenText ?? ""))"
        if let ports = route.ports, let otherPorts = earlier.ports, ports.overlaps(otherPorts) {
            let other = "the ports \(Self.describe(otherPorts)) of \(earlier.label)\(listenNote)"
            self.report(
                "ports \(Self.describe(ports)) overlap \(other)",
                at: route.path.key("ports"),
                node: route.fields["ports"]
            )
        }
        if let ports = route.ports, let otherEPM = earlier.epmPort, ports.contains(otherEPM) {
            self.report(
                "ports \(Self.describe(ports)) include the EPM port \(otherEPM) of \(earlier.label)\(listenNote)",
                at: route.path.key("ports"),
                node: route.fields["ports"]
            )
        }
        guard let epmPort = route.epmPort else { return }
        let epmPath = route.fields["epm_port"] != nil ? route.path.key("epm_port") : route.path.key("listen")
        if epmPort == earlier.epmPort {
            self.report(
                "EPM port \(epmPort) is also the EPM port of \(earlier.label)\(listenNote)",
                at: epmPath,
                node: route.epmPortNode
            )
        }
        if let otherPorts = earlier.ports, otherPorts.contains(epmPort) {
            self.report(
                "EPM port \(epmPort) is inside the ports \(Self.describe(otherPorts)) of \(earlier.label)\(listenNote)",
                at: epmPath,
                node: route.epmPortNode
            )
        }
    }

    static func isTransparent(_ draft: RouteDraft) -> Bool {
        if case .transparent = draft.mode { return true }
        return false
    }

    /// Equal addresses, or a wildcard (`0.0.0.0`, `::`) and any address of its family.
    static func addressesOverlap(_ a: IPAddress, _ b: IPAddress) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)):
            return x == y || x == 0 || y == 0
        case (.v6(let xHigh, let xLow), .v6(let yHigh, let yLow)):
            return (xHigh == yHigh && xLow == yLow) || (xHigh == 0 && xLow == 0) || (yHigh == 0 && yLow == 0)
        default:
            return false
        }
    }

    static func describe(_ ports: ClosedRange<UInt16>) -> String {
        ports.lowerBound == ports.upperBound ? "\(ports.lowerBound)" : "\(ports.lowerBound)-\(ports.upperBound)"
    }

    // MARK: - Building

    /// The runtime settings of a route whose every field decoded.
    static func settings(of draft: RouteDraft, policies: DecodedPolicies) -> RouteSettings? {
        guard let name = draft.name, let listen = draft.listenText, let epmPort = draft.epmPort,
            let upstream = draft.upstream, let upstreamEPMPort = draft.upstreamEPMPort, let ports = draft.ports,
            let policyName = draft.policyName, let policy = policies.valid[policyName],
            let maximumConnections = draft.maximumConnections, let mappingIdle = draft.mappingIdle,
            let mode = draft.mode
        else { return nil }
        var route = RouteSettings(
            name: name,
            listenAddress: listen,
            epmPort: epmPort,
            advertiseAddress: draft.advertise,
            upstreamHost: upstream,
            upstreamEPMPort: upstreamEPMPort,
            ports: ports,
            policy: policy,
            maximumConnections: maximumConnections
        )
        route.mappingIdleTimeout = mappingIdle
        route.mode = mode
        route.via = draft.via
        route.allowedServerPorts = draft.allowedServerPorts
        route.portMapping = draft.portMapping
        route.serverPortsListen = draft.serverPortsListen
        route.pinholes = draft.pinholes
        route.maximumConnectionsPerSource = draft.maximumConnectionsPerSource
        route.newConnectionsPerSecondPerSource = draft.newConnectionsPerSecondPerSource
        return route
    }
}

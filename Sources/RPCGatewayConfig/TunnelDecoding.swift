import Foundation
import RPCGateway
import RPCPolicy
import RPCWire
import Yams

/// `peers:` (edge) and `core:` (core): the mutual-TLS hop between two gateways.
extension ConfigurationDecoder {
    static let peerKeys = ["address", "tls"]
    static let peerTLSKeys = ["cert", "key", "ca", "server_name"]
    static let coreKeys = [
        "listen", "tls", "upstreams", "policy", "upstream_epm_port", "header_timeout", "max_connections",
    ]
    static let coreTLSKeys = ["cert", "key", "ca", "allow"]

    /// `peers: {NAME: {address: HOST:PORT, tls: {cert, key, ca, server_name}}}`.
    mutating func decodePeers(_ node: Node, at path: ConfigPath) -> [String: PeerSettings] {
        guard case .mapping(let mapping) = node else {
            self.report("expected a mapping of peer names to peers, found \(Self.describe(node))", at: path, node: node)
            return [:]
        }
        var peers: [String: PeerSettings] = [:]
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key, !Self.isNull(key) else {
                self.report("peer names must be plain names, found \(Self.describe(key))", at: path, node: key)
                continue
            }
            let name = scalar.string
            let peerPath = path.key(name)
            guard
                let fields = self.fields(
                    of: value,
                    at: peerPath,
                    known: Self.peerKeys,
                    required: Self.peerKeys,
                    what: "a peer (a mapping with address and tls)"
                )
            else { continue }
            var host: String?
            var port: Int?
            if let node = fields["address"],
                let text = self.string(node, at: peerPath.key("address"), what: "HOST:PORT")
            {
                switch ValueParsers.hostAndPort(text) {
                case .success(let (parsedHost, parsedPort)):
                    host = parsedHost
                    port = parsedPort
                case .failure(let failure):
                    self.report(failure.message(for: text), at: peerPath.key("address"), node: node)
                }
            }
            var tls: TLSFiles?
            var serverName: String?
            if let node = fields["tls"],
                let tlsFields = self.fields(
                    of: node,
                    at: peerPath.key("tls"),
                    known: Self.peerTLSKeys,
                    required: Self.peerTLSKeys,
                    what: "a mapping with cert, key, ca and server_name"
                )
            {
                tls = self.tlsFiles(tlsFields)
                if let node = tlsFields["server_name"],
                    let text = self.string(node, at: peerPath.key("tls").key("server_name"), what: "a DNS name")
                {
                    if text.trimmingASCIISpaces.isEmpty || text.contains(" ") {
                        self.report(
                            "\"\(text)\" is not a DNS name",
                            at: peerPath.key("tls").key("server_name"),
                            node: node
                        )
                    } else {
                        serverName = text
                    }
                }
            }
            if let host, let port, let tls, let serverName {
                peers[name] = PeerSettings(name: name, host: host, port: port, tls: tls, serverName: serverName)
            }
        }
        return peers
    }

    /// `core: {listen, tls: {cert, key, ca, allow}, upstreams, policy, ...}`.
    mutating func decodeCore(_ node: Node, at path: ConfigPath, policies: DecodedPolicies) -> CoreSettings? {
        guard
            let fields = self.fields(
                of: node,
                at: path,
                known: Self.coreKeys,
                required: ["listen", "tls", "upstreams", "policy"],
                what: "a mapping with listen, tls, upstreams and policy"
            )
        else { return nil }
        var listen: (host: String, port: Int)?
        if let node = fields["listen"], let text = self.string(node, at: path.key("listen"), what: "HOST:PORT") {
            switch ValueParsers.hostAndPort(text) {
            case .success(let parsed):
                if IPAddress(parsed.host) == nil {
                    self.report("\"\(parsed.host)\" is not an IPv4 or IPv6 address", at: path.key("listen"), node: node)
                } else {
                    listen = parsed
                }
            case .failure(let failure):
                self.report(failure.message(for: text), at: path.key("listen"), node: node)
            }
        }
        var tls: TLSFiles?
        var allow: [String]?
        if let node = fields["tls"],
            let tlsFields = self.fields(
                of: node,
                at: path.key("tls"),
                known: Self.coreTLSKeys,
                required: Self.coreTLSKeys,
                what: "a mapping with cert, key, ca and allow"
            )
        {
            tls = self.tlsFiles(tlsFields)
            if let node = tlsFields["allow"] {
                allow = self.allowList(node, at: path.key("tls").key("allow"))
            }
        }
        var upstreams: [IPv4Address]?
        if let node = fields["upstreams"],
            let items = self.list(
                node,
                at: path.key("upstreams"),
                allowingSingle: true,
                what: "a list of IPv4 addresses"
            )
        {
            var addresses: [IPv4Address] = []
            for item in items {
                guard let text = self.string(item.node, at: item.path, what: "an IPv4 address") else { continue }
                if let address = IPv4Address(text) {
                    addresses.append(address)
                } else {
                    self.report(
                        "\"\(text)\" is not an IPv4 address (tunnel targets are IPv4, like tower floors)",
                        at: item.path,
                        node: item.node
                    )
                }
            }
            if items.isEmpty {
                self.report("at least one upstream is required", at: path.key("upstreams"), node: node)
            } else if addresses.count == items.count {
                upstreams = addresses
            }
        }
        var policy: Policy?
        if let node = fields["policy"], let name = self.string(node, at: path.key("policy"), what: "a policy name") {
            if let valid = policies.valid[name] {
                policy = valid
            } else if !policies.defined.contains(name) {
                var message = "unknown policy \"\(name)\""
                if let hint = Suggestions.didYouMean(name, among: policies.defined) { message += "; \(hint)" }
                self.report(message, at: path.key("policy"), node: node)
            }
        }
        var epmPort: UInt16? = 135
        if let node = fields["upstream_epm_port"] {
            epmPort = self.port(node, at: path.key("upstream_epm_port"))
        }
        var headerTimeout: Duration? = .seconds(5)
        if let node = fields["header_timeout"] {
            headerTimeout = self.duration(node, at: path.key("header_timeout"))
        }
        var maximumConnections: Int? = 4096
        if let node = fields["max_connections"] {
            maximumConnections = self.integer(
                node,
                at: path.key("max_connections"),
                in: 1...Self.maximumConnectionCap,
                what: "a number of connections"
            )
        }
        guard let listen, let tls, let allow, let upstreams, let policy, let epmPort, let headerTimeout,
            let maximumConnections
        else { return nil }
        return CoreSettings(
            listenHost: listen.host,
            listenPort: listen.port,
            tls: tls,
            allowedPeers: allow,
            upstreams: upstreams,
            policy: policy,
            upstreamEPMPort: epmPort,
            headerTimeout: headerTimeout,
            maximumConnections: maximumConnections
        )
    }

    /// Every route's `via` must name a peer.
    mutating func checkVia(_ routes: [RouteDraft], peers: [String: PeerSettings], peersNode: Node?) {
        for route in routes {
            guard let node = route.fields["via"], let name = route.via else { continue }
            // The target TLV carries an IPv4 address, and the edge may not resolve the server's name.
            if let upstream = route.upstream, IPv4Address(upstream) == nil {
                self.report(
                    "\"\(upstream)\": a route with via needs the server's IPv4 address as the core reaches it",
                    at: route.path.key("upstream"),
                    node: route.fields["upstream"]
                )
            }
            if peers[name] == nil {
                var message = "unknown peer \"\(name)\""
                let defined = peersNode.map(Self.mappingKeys) ?? []
                // Defined but invalid: its own problems are reported where it is.
                if defined.contains(name) { continue }
                if defined.isEmpty {
                    message += " (no peers are defined)"
                } else if let hint = Suggestions.didYouMean(name, among: defined) {
                    message += "; \(hint)"
                } else if !defined.contains(name) {
                    message += " (defined: \(Suggestions.list(defined, conjunction: "and")))"
                } else {
                    continue  // defined but invalid: already reported where it is
                }
                self.report(message, at: route.path.key("via"), node: node)
            }
        }
    }

    private static func mappingKeys(_ node: Node) -> [String] {
        guard case .mapping(let mapping) = node else { return [] }
        return mapping.compactMap { key, _ in
            if case .scalar(let scalar) = key { return scalar.string }
            return nil
        }
    }

    // MARK: - TLS

    /// `cert`, `key` and `ca`: PEM files that must exist. A relative path is relative to the
    /// configuration file's directory.
    private mutating func tlsFiles(_ fields: Fields) -> TLSFiles? {
        var paths: [String: String] = [:]
        for key in ["cert", "key", "ca"] {
            guard let node = fields[key],
                let text = self.string(node, at: fields.path.key(key), what: "a PEM file path")
            else {
                continue
            }
            let path = self.resolvedPath(text)
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                self.report("the file \(path) does not exist", at: fields.path.key(key), node: node)
            } else if isDirectory.boolValue {
                self.report("\(path) is a directory; give a PEM file", at: fields.path.key(key), node: node)
            } else {
                paths[key] = path
            }
        }
        guard let cert = paths["cert"], let key = paths["key"], let ca = paths["ca"] else { return nil }
        return TLSFiles(certificate: cert, privateKey: key, certificateAuthority: ca)
    }

    func resolvedPath(_ path: String) -> String {
        guard !path.hasPrefix("/"), !self.fileName.hasPrefix("<") else { return path }
        let directory = Self.parentDirectory(of: self.fileName)
        return directory == "." ? path : "\(directory)/\(path)"
    }

    /// `allow`: DNS names or URIs (`spiffe://trust-domain/path`); at least one.
    private mutating func allowList(_ node: Node, at path: ConfigPath) -> [String]? {
        guard let items = self.list(node, at: path, allowingSingle: true, what: "a list of DNS names or URIs") else {
            return nil
        }
        if items.isEmpty {
            self.report("at least one allowed peer name is required", at: path, node: node)
            return nil
        }
        var names: [String] = []
        for item in items {
            guard let text = self.string(item.node, at: item.path, what: "a DNS name or URI") else { continue }
            if text.trimmingASCIISpaces.isEmpty || text.contains(" ") {
                self.report("\"\(text)\" is not a DNS name or URI", at: item.path, node: item.node)
            } else if text.contains("*") {
                self.report(
                    "\"\(text)\": wildcards are not supported; list each peer name",
                    at: item.path,
                    node: item.node
                )
            } else {
                names.append(text)
            }
        }
        return names.count == items.count ? names : nil
    }
}

public import Logging
public import RPCPolicy
public import RPCWire

/// Everything the runtime needs, already validated. Built by `RPCGatewayConfig` from YAML, or by
/// tests directly.
public struct GatewaySettings: Sendable, Hashable {
    public var routes: [RouteSettings]
    public var admin: AdminSettings?
    public var limits: ConnectionLimits
    public var timeouts: Timeouts
    public var wireLimits: WireLimits
    /// The audit log; `nil`: none.
    public var audit: AuditSettings?
    /// Log format and level (the CLI's `--log-level` overrides the level).
    public var logging: LoggingSettings
    /// Core gateways that routes with `via` tunnel to, by name.
    public var peers: [String: PeerSettings]
    /// The core role: terminate mutual TLS from edge gateways; `nil`: not a core.
    public var core: CoreSettings?

    public init(
        routes: [RouteSettings],
        admin: AdminSettings? = nil,
        limits: ConnectionLimits = ConnectionLimits(),
        timeouts: Timeouts = Timeouts(),
        wireLimits: WireLimits = WireLimits(),
        audit: AuditSettings? = nil,
        logging: LoggingSettings = LoggingSettings(),
        peers: [String: PeerSettings] = [:],
        core: CoreSettings? = nil
    ) {
        self.routes = routes
        self.admin = admin
        self.limits = limits
        self.timeouts = timeouts
        self.wireLimits = wireLimits
        self.audit = audit
        self.logging = logging
        self.peers = peers
        self.core = core
    }
}

/// PEM files for a TLS identity and the CA that peers must chain to.
public struct TLSFiles: Sendable, Hashable {
    /// Certificate chain (leaf first).
    public var certificate: String
    public var privateKey: String
    /// CA certificates that the other side's certificate must chain to.
    public var certificateAuthority: String

    public init(certificate: String, privateKey: String, certificateAuthority: String) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.certificateAuthority = certificateAuthority
    }
}

/// A core gateway an edge tunnels to (`peers.NAME`).
public struct PeerSettings: Sendable, Hashable {
    public var name: String
    public var host: String
    public var port: Int
    public var tls: TLSFiles
    /// The name the core's certificate must carry (SNI and hostname verification).
    public var serverName: String

    public init(name: String, host: String, port: Int, tls: TLSFiles, serverName: String) {
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.serverName = serverName
    }
}

/// The core role (`core:`): one TLS listener for edge gateways, the servers they may reach, and
/// the policy applied with the real client address from each connection's PROXY header.
public struct CoreSettings: Sendable, Hashable {
    public var listenHost: String
    public var listenPort: Int
    public var tls: TLSFiles
    /// Subject alternative names (DNS names or URIs such as SPIFFE IDs) an edge certificate must
    /// carry one of.
    public var allowedPeers: [String]
    /// The only servers tunnelled connections may reach: anything else is refused.
    public var upstreams: [IPv4Address]
    public var policy: Policy
    /// The upstream endpoint-mapper port tunnelled EPM connections must name.
    public var upstreamEPMPort: UInt16
    /// The TLS handshake and PROXY header must complete within this long.
    public var headerTimeout: Duration
    public var maximumConnections: Int
    /// What one client (the address in the edge's PROXY header) may open through the core.
    public var perSource = SourceLimits()

    public init(
        listenHost: String,
        listenPort: Int,
        tls: TLSFiles,
        allowedPeers: [String],
        upstreams: [IPv4Address],
        policy: Policy,
        upstreamEPMPort: UInt16 = 135,
        headerTimeout: Duration = .seconds(5),
        maximumConnections: Int = 4096
    ) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.tls = tls
        self.allowedPeers = allowedPeers
        self.upstreams = upstreams
        self.policy = policy
        self.upstreamEPMPort = upstreamEPMPort
        self.headerTimeout = headerTimeout
        self.maximumConnections = maximumConnections
    }
}

/// How a route finds the server a connection goes to.
public enum RouteMode: Sendable, Hashable {
    /// One configured server; each dynamic endpoint gets a gateway port of the range (default).
    case mapped
    /// One configured server; every rewritten tower points at one gateway port, and each
    /// connection there is routed by the interface of its first bind (resolved at the server's
    /// endpoint mapper).
    case singlePort
    /// No configured server: nftables redirects clients' connections to servers in these networks
    /// to the gateway, which recovers the original destination (`SO_ORIGINAL_DST`). Destinations
    /// outside them are refused.
    case transparent(servers: [IPNetwork])

    /// The configuration keyword.
    public var name: String {
        switch self {
        case .mapped: "mapped"
        case .singlePort: "single-port"
        case .transparent: "transparent"
        }
    }
}

/// How a mapped route gives server endpoints gateway ports (`port_mapping`).
public enum PortMappingMode: String, Sendable, Hashable, CaseIterable {
    /// Each server endpoint gets a free port of the range, handed out while used (default).
    case pool
    /// The range is the server's own RPC port range: server endpoint `P` is served on gateway
    /// port `P`. A signed or sealed endpoint-mapper reply then names the right port already, so it
    /// is forwarded byte for byte.
    case preserve
}

/// Which server ports a transparent route's `server_ports_listen` admits (`pinholes`).
public enum PinholeMode: String, Sendable, Hashable, CaseIterable {
    /// Any port in `server_ports` (default): each connection is still decided by its first bind.
    case any
    /// Only a (client, server, port) that a readable reply told that client about (an
    /// endpoint-mapper tower; DCOM replies later), for `mapping_idle_timeout`.
    case learned
}

/// One protected server: an endpoint-mapper listener and a range of gateway-owned ports.
public struct RouteSettings: Sendable, Hashable {
    public var name: String
    /// How connections find their server. In ``RouteMode/singlePort`` mode ``ports`` is the one
    /// port (which may equal ``epmPort``); in ``RouteMode/transparent`` mode ``upstreamHost`` is
    /// unused.
    public var mode: RouteMode = .mapped
    /// Address the EPM listener and the mapped ports bind to.
    public var listenAddress: String
    public var epmPort: UInt16
    /// IPv4 address written into rewritten towers; `nil`: the address the client connected to.
    public var advertiseAddress: IPv4Address?
    /// The real RPC server (IPv4 literal or host name resolved at start).
    public var upstreamHost: String
    public var upstreamEPMPort: UInt16
    /// Gateway-owned ports that dynamic server endpoints are mapped into.
    public var ports: ClosedRange<UInt16>
    public var policy: Policy
    /// Most concurrent client connections on this route (EPM and mapped together).
    public var maximumConnections: Int
    /// A port mapping with no connection for this long is released.
    public var mappingIdleTimeout: Duration
    /// The peer (core gateway) connections are tunnelled to; `nil`: connect to the upstream directly.
    public var via: String?
    /// The server ports an endpoint-mapper reply may name (`server_ports`); a tower naming another
    /// is redacted, so a hostile upstream endpoint mapper cannot make the gateway map ports
    /// anywhere on the server. `nil`: any port of that server.
    public var allowedServerPorts: [ClosedRange<UInt16>]?
    /// Mapped mode: pool (default) or preserve (``PortMappingMode``).
    public var portMapping: PortMappingMode = .pool
    /// Transparent mode: the one gateway port that nftables redirects client connections to the
    /// servers' dynamic range (``allowedServerPorts``) to; each is sent to its original
    /// destination once its first bind is allowed. Then ``ports`` is this one port. `nil`: none.
    public var serverPortsListen: UInt16?
    /// Which connections ``serverPortsListen`` admits.
    public var pinholes: PinholeMode = .any
    /// Overrides of the global per-source limits (`nil`: the global value).
    public var maximumConnectionsPerSource: Int?
    public var newConnectionsPerSecondPerSource: Int?

    /// ``mappingIdleTimeout`` in whole seconds, rounded up.
    public var mappingIdleSeconds: Int64 {
        get { self.mappingIdleTimeout.wholeSecondsRoundedUp }
        set { self.mappingIdleTimeout = .seconds(newValue) }
    }

    public init(
        name: String,
        listenAddress: String,
        epmPort: UInt16 = 135,
        advertiseAddress: IPv4Address? = nil,
        upstreamHost: String,
        upstreamEPMPort: UInt16 = 135,
        ports: ClosedRange<UInt16>,
        policy: Policy,
        maximumConnections: Int = 1024,
        mappingIdleSeconds: Int64 = 600
    ) {
        self.name = name
        self.listenAddress = listenAddress
        self.epmPort = epmPort
        self.advertiseAddress = advertiseAddress
        self.upstreamHost = upstreamHost
        self.upstreamEPMPort = upstreamEPMPort
        self.ports = ports
        self.policy = policy
        self.maximumConnections = maximumConnections
        self.mappingIdleTimeout = .seconds(mappingIdleSeconds)
    }

    /// Whether an endpoint-mapper reply may name `port` of the server (``allowedServerPorts``).
    public func allowsServerPort(_ port: UInt16) -> Bool {
        self.allowedServerPorts?.contains { $0.contains(port) } ?? true
    }

    /// Whether an endpoint-mapper reply carrying an auth verifier (signed or sealed) is forwarded
    /// byte for byte: the client's follow-up connection to the port it names must reach this
    /// gateway unchanged (preserve mapping, or a transparent route's ``serverPortsListen``).
    /// Otherwise such lookups are refused (`authenticated_epm`).
    public var passesProtectedEndpointMapper: Bool { self.preservesServerPorts || self.learnsPinholes }

    /// A mapped route with `port_mapping: preserve`: server port `P` is served on gateway port `P`.
    public var preservesServerPorts: Bool { self.mode == .mapped && self.portMapping == .preserve }

    /// A transparent route with ``serverPortsListen``: the server endpoints named in readable
    /// replies open pinholes for the client (what `pinholes: learned` admits).
    public var learnsPinholes: Bool {
        guard case .transparent = self.mode else { return false }
        return self.serverPortsListen != nil
    }

    /// In single-port mode, the one gateway port.
    public var singlePort: UInt16? { self.mode == .singlePort ? self.ports.lowerBound : nil }

    /// Whether a connection to `address` may be relayed in transparent mode.
    public func admitsServer(_ address: IPv4Address) -> Bool {
        guard case .transparent(let servers) = self.mode else { return false }
        return servers.contains { $0.contains(.v4(address.value)) }
    }
}

/// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, the status page `/` and
/// `/status.json`.
public struct AdminSettings: Sendable, Hashable {
    public var host: String
    public var port: Int
    /// When set, every path except `/healthz` requires `Authorization: Bearer <token>`.
    public var token: BearerToken?
    /// Where ``token`` was read from (`admin.token_file`), for messages.
    public var tokenFile: String?
    /// The upstream probes behind `/readyz`.
    public var readiness: ReadinessSettings

    public init(
        host: String,
        port: Int,
        token: BearerToken? = nil,
        tokenFile: String? = nil,
        readiness: ReadinessSettings = ReadinessSettings()
    ) {
        self.host = host
        self.port = port
        self.token = token
        self.tokenFile = tokenFile
        self.readiness = readiness
    }

    /// Whether a reload from `self` to `other` needs a restart: only the token is applied live.
    public func needsRestart(toApply other: AdminSettings?) -> Bool {
        guard let other else { return true }
        return self.host != other.host || self.port != other.port || self.readiness != other.readiness
    }
}

/// `logging: {format, level}`.
public struct LoggingSettings: Sendable, Hashable {
    public enum Format: String, Sendable, Hashable, CaseIterable {
        /// swift-log's `StreamLogHandler`: `2024-05-01T12:00:00+0000 info rpcgate: key=value [module] message`.
        case text
        /// One logfmt line per message: `time=… level=info label=rpcgate msg="…" key=value`.
        case logfmt
        /// One JSON object per line: `{"time":…,"level":…,"label":…,"message":…, metadata…}`.
        case json
    }

    public var format: Format
    /// `nil`: `info`, unless `--log-level` says otherwise.
    public var level: Logger.Level?

    public init(format: Format = .text, level: Logger.Level? = nil) {
        self.format = format
        self.level = level
    }
}

/// The audit log: one JSON line per bind decision and per denied or audited call.
public struct AuditSettings: Sendable, Hashable {
    /// The file lines are appended to, or ``standardOutput``.
    public var file: String
    /// Most lines buffered while the writer is behind; more are dropped and counted.
    public var bufferLines: Int
    /// Also send every line to this syslog receiver (RFC 5424); `nil`: the file only.
    public var syslog: SyslogSettings?

    /// The `file` value that means standard output.
    public static let standardOutput = "-"
    public static let defaultBufferLines = 10_000

    public init(file: String, bufferLines: Int = AuditSettings.defaultBufferLines, syslog: SyslogSettings? = nil) {
        self.file = file
        self.bufferLines = bufferLines
        self.syslog = syslog
    }
}

/// A syslog receiver for the audit lines (`audit.syslog`).
public struct SyslogSettings: Sendable, Hashable {
    public enum Transport: String, Sendable, Hashable, CaseIterable {
        /// RFC 5426: one datagram per message.
        case udp
        /// RFC 6587: octet-counted messages on one connection.
        case tcp
    }

    /// A numeric IPv4 or IPv6 address.
    public var host: String
    public var port: UInt16
    public var transport: Transport
    /// The syslog facility number (RFC 5424 6.2.1): 16 (`local0`) to 23 (`local7`), or any 0-23.
    public var facility: Int
    /// APP-NAME of every message.
    public var appName: String

    public static let defaultPort: UInt16 = 514
    /// `local0`.
    public static let defaultFacility = 16
    /// Facility names and numbers (RFC 5424 table 1).
    public static let facilities: [String: Int] = [
        "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
        "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
        "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
    ]

    public init(
        host: String,
        port: UInt16 = SyslogSettings.defaultPort,
        transport: Transport = .udp,
        facility: Int = SyslogSettings.defaultFacility,
        appName: String = "rpcgate"
    ) {
        self.host = host
        self.port = port
        self.transport = transport
        self.facility = facility
        self.appName = appName
    }
}

/// Connection caps.
public struct ConnectionLimits: Sendable, Hashable {
    /// Most concurrent client connections over all routes.
    public var maximumConnections: Int
    /// What one client source may open on a route, unless the route overrides it.
    public var perSource: SourceLimits

    public init(maximumConnections: Int = 4096, perSource: SourceLimits = SourceLimits()) {
        self.maximumConnections = maximumConnections
        self.perSource = perSource
    }
}

/// Fair admission: what one client source (an address, or an IPv6 /64 by default) may open, so
/// that one host cannot take a route's whole connection cap. The defaults are far above what a
/// Windows client opens (docs/SECURITY.md, "Fair admission"): a segment's real clients never meet
/// them; a NAT gateway or a terminal server in front of many users may need a route override.
public struct SourceLimits: Sendable, Hashable {
    /// Most concurrent connections from one source on one route.
    public var maximumConnections: Int
    /// New connections per second from one source on one route (a token bucket refilled at this
    /// rate), with bursts of up to ``burst`` at once.
    public var newConnectionsPerSecond: Int
    /// Connections a source may open at once after being quiet: twice the rate.
    public var burst: Int { self.newConnectionsPerSecond * 2 }
    /// Leading bits of an IPv4 client address that name its source (32: each address).
    public var ipv4PrefixLength: Int
    /// Leading bits of an IPv6 client address that name its source (64: one subnet, as a host
    /// can pick any address in its /64).
    public var ipv6PrefixLength: Int

    public static let defaultMaximumConnections = 256
    public static let defaultNewConnectionsPerSecond = 100

    public init(
        maximumConnections: Int = SourceLimits.defaultMaximumConnections,
        newConnectionsPerSecond: Int = SourceLimits.defaultNewConnectionsPerSecond,
        ipv4PrefixLength: Int = 32,
        ipv6PrefixLength: Int = 64
    ) {
        self.maximumConnections = maximumConnections
        self.newConnectionsPerSecond = newConnectionsPerSecond
        self.ipv4PrefixLength = ipv4PrefixLength
        self.ipv6PrefixLength = ipv6PrefixLength
    }

    /// These limits with a route's overrides applied.
    public func overridden(maximumConnections: Int?, newConnectionsPerSecond: Int?) -> SourceLimits {
        var limits = self
        if let maximumConnections { limits.maximumConnections = maximumConnections }
        if let newConnectionsPerSecond { limits.newConnectionsPerSecond = newConnectionsPerSecond }
        return limits
    }
}

/// Timeouts. Each is held as a `Duration` (the configuration accepts `500ms`); the `Int64`
/// accessors give whole seconds, rounded up so a sub-second timeout never reads as zero.
public struct Timeouts: Sendable, Hashable {
    /// Connecting to the upstream server.
    public var connectDuration: Duration
    /// No bytes in either direction for this long closes the connection.
    public var idleDuration: Duration
    /// A client must complete a bind (get a bind_ack) within this long after connecting.
    public var bindDuration: Duration
    /// After one side half-closes, the other has this long to finish.
    public var halfCloseDuration: Duration
    /// On SIGTERM, calls in flight have this long to finish before their connections are closed.
    public var drainDuration: Duration = .seconds(30)

    public init(connect: Int64 = 5, idle: Int64 = 900, bind: Int64 = 10, halfClose: Int64 = 30) {
        self.init(
            connect: .seconds(connect),
            idle: .seconds(idle),
            bind: .seconds(bind),
            halfClose: .seconds(halfClose)
        )
    }

    public init(connect: Duration, idle: Duration, bind: Duration, halfClose: Duration) {
        self.connectDuration = connect
        self.idleDuration = idle
        self.bindDuration = bind
        self.halfCloseDuration = halfClose
    }

    /// ``connectDuration`` in seconds, rounded up.
    public var connect: Int64 {
        get { self.connectDuration.wholeSecondsRoundedUp }
        set { self.connectDuration = .seconds(newValue) }
    }

    /// ``idleDuration`` in seconds, rounded up.
    public var idle: Int64 {
        get { self.idleDuration.wholeSecondsRoundedUp }
        set { self.idleDuration = .seconds(newValue) }
    }

    /// ``bindDuration`` in seconds, rounded up.
    public var bind: Int64 {
        get { self.bindDuration.wholeSecondsRoundedUp }
        set { self.bindDuration = .seconds(newValue) }
    }

    /// ``halfCloseDuration`` in seconds, rounded up.
    public var halfClose: Int64 {
        get { self.halfCloseDuration.wholeSecondsRoundedUp }
        set { self.halfCloseDuration = .seconds(newValue) }
    }
}

extension Duration {
    /// Whole seconds, rounded up (`500ms` is 1).
    var wholeSecondsRoundedUp: Int64 {
        let (seconds, attoseconds) = self.components
        return attoseconds > 0 ? seconds + 1 : seconds
    }
}

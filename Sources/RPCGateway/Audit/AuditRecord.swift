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
/// Field names follow the Elastic Common Schema (ECS 8) where ECS has a field for the value
/// (`@timestamp`, `source.ip`, `event.outcome`, `rule.name`, `user.name`, `threat.technique.id`,
/// ...); the rest are in the custom `rpc.*` namespace. Keys are flat and dotted, which
/// Elasticsearch, Vector and jq all read. `docs/AUDIT.md` lists every field.
///
/// Endpoint-mapper binds on the endpoint-mapper listener are decided by the listener itself (below
/// packet level), not by a policy rule: their `rule.id` is `null` and `rpc.listener` is `epm`. The
/// DCOM SCM interfaces there (activation, OXID resolution) are decided by the policy, and their
/// lines carry `rpc.dcom.*` (``DCOM``).
package struct AuditRecord: Hashable, Sendable {
    package enum Event: String, Hashable, Sendable {
        case bind
        case call
        /// A DCOM activation request on the SCM (MS-DCOM 3.1.2.5.2.3), whatever its decision.
        case activation
        /// A readable activation reply: the object exporter's OXID and ports.
        case activationReply = "activation_reply"
        /// A readable ResolveOxid/ResolveOxid2 reply: the exporter's ports.
        case oxidResolution = "oxid_resolution"
    }

    /// What a DCOM line adds (`rpc.dcom.*`).
    package struct DCOM: Hashable, Sendable {
        /// Activation lines: the class created, or `sealed`/`unreadable`.
        package var activation: ActivationClass?
        /// Replies: the CLSID of the readable request they answer.
        package var classID: DCEUUID?
        package var oxid: UInt64?
        package var ports: [UInt16]
        package var bindings: [String]
        /// Calls: the request's object UUID (IPID); replies: the returned interfaces' IPIDs.
        package var ipids: [DCEUUID]

        package init(
            activation: ActivationClass? = nil,
            classID: DCEUUID? = nil,
            oxid: UInt64? = nil,
            ports: [UInt16] = [],
            bindings: [String] = [],
            ipids: [DCEUUID] = []
        ) {
            self.activation = activation
            self.classID = classID
            self.oxid = oxid
            self.ports = ports
            self.bindings = bindings
            self.ipids = ipids
        }

        /// `0x053773507f213667`: 16 hex digits, as Wireshark shows OXIDs.
        static func hex(_ value: UInt64) -> String {
            let digits = String(value, radix: 16)
            return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
        }
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
    /// Who the client said it was in the connection's last authentication token that named
    /// someone; `nil` when none did (no authentication, or not yet).
    package var identity: AuthIdentity?
    package var decision: PolicyDecision
    /// The name of the route's policy.
    package var policy: String
    /// DCOM details: activation lines, DCOM replies, and calls that name an object (IPID).
    package var dcom: DCOM?

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
        identity: AuthIdentity? = nil,
        decision: PolicyDecision,
        policy: String,
        dcom: DCOM? = nil
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
        self.identity = identity
        self.decision = decision
        self.policy = policy
        self.dcom = dcom
    }

    /// The ATT&CK techniques of the built-in profile rule that made the decision; empty when no
    /// profile did.
    package var techniques: [AttackTechnique] {
        guard let profile = self.decision.origin?.profile else { return [] }
        guard self.event != .activationReply, self.event != .oxidResolution else { return [] }
        return BuiltInProfiles.techniques(profile: profile, interface: self.interface, opnum: self.opnum)
    }

    /// Who the client said it was, for a person: `DOMAIN\user` (NTLM), `ticket for
    /// SERVICE@REALM` (Kerberos), or `-`.
    package var identityText: String {
        switch self.identity {
        case .ntlm(let ntlm):
            if ntlm.isAnonymous { return "anonymous" }
            return ntlm.domain.isEmpty ? ntlm.user : "\(ntlm.domain)\\\(ntlm.user)"
        case .kerberos(let service):
            return "ticket for \(service.servicePrincipal)@\(service.realm)"
        case nil:
            return "-"
        }
    }

    /// `rule 3 (profile block-dcsync)`, or `default` when the policy's default decided.
    package var ruleName: String { self.decision.origin?.description ?? "default" }

    /// Appends the record as one line of JSON, newline included. Key order is fixed (see
    /// `docs/AUDIT.md`); the identity keys appear only when an identity is known, the `threat.*`
    /// keys only when a built-in profile decided.
    package func writeJSONLine(into buffer: inout ByteBuffer) {
        var object = JSONObjectWriter()
        object.begin(&buffer)
        object.key("@timestamp", &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
        self.time.writeRFC3339(into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
        object.field("event.kind", "event", &buffer)
        object.field("event.category", strings: ["network"], &buffer)
        object.field("event.type", strings: [self.decision.permits ? "allowed" : "denied"], &buffer)
        object.field("event.action", self.event.rawValue, &buffer)
        object.field("event.outcome", self.decision.permits ? "success" : "failure", &buffer)
        object.field("event.dataset", "rpcgate.audit", &buffer)
        let address = self.client?.ipAddress
        object.field("source.ip", address, &buffer)
        object.field("source.port", address == nil ? nil : self.client?.port.map(Int64.init), &buffer)
        object.field("destination.ip", self.server.address.description, &buffer)
        // Port 0: the server endpoint is not known yet (a first bind is decided before the
        // connection it routes is placed); `null` rather than a port that does not exist.
        object.field("destination.port", self.server.port == 0 ? nil : Int64(self.server.port), &buffer)
        object.field("network.transport", "tcp", &buffer)
        object.field("network.protocol", "dcerpc", &buffer)
        object.field("rule.id", self.decision.origin.map { Int64($0.index) }, &buffer)
        object.field("rule.name", self.ruleName, &buffer)
        object.field("rule.category", self.decision.origin?.profile, &buffer)
        object.field("rule.ruleset", self.policy, &buffer)
        object.field("rpc.route", self.route, &buffer)
        object.field("rpc.listener", self.listener.rawValue, &buffer)
        object.field("rpc.interface", InterfaceCatalog.name(of: self.interface) ?? "unknown", &buffer)
        object.field("rpc.interface_uuid", self.interface.uuid.description, &buffer)
        object.field("rpc.interface_version", "\(self.interface.majorVersion).\(self.interface.minorVersion)", &buffer)
        if let opnum = self.opnum {
            object.field("rpc.opnum", Int64(opnum), &buffer)
        }
        object.field("rpc.auth_type", self.authType.description, &buffer)
        object.field("rpc.auth_level", self.authLevel.description, &buffer)
        object.field("rpc.decision", self.decision.action.rawValue, &buffer)
        switch self.identity {
        case .ntlm(let ntlm):
            object.field("rpc.auth.identity", "ntlm", &buffer)
            object.field("user.name", ntlm.user.isEmpty ? nil : ntlm.user, &buffer)
            object.field("user.domain", ntlm.domain.isEmpty ? nil : ntlm.domain, &buffer)
            object.field("rpc.auth.workstation", ntlm.workstation.isEmpty ? nil : ntlm.workstation, &buffer)
            object.field("rpc.auth.anonymous", ntlm.isAnonymous, &buffer)
        case .kerberos(let service):
            // The client's name is encrypted in the AP-REQ: only the service asked for is known.
            object.field("rpc.auth.identity", "kerberos_ticket", &buffer)
            object.field("rpc.auth.service_principal", service.servicePrincipal, &buffer)
            object.field("rpc.auth.realm", service.realm, &buffer)
        case nil:
            break
        }
        if let dcom = self.dcom {
            self.writeDCOM(dcom, into: &object, &buffer)
        }
        let techniques = self.techniques
        if !techniques.isEmpty {
            object.field("threat.framework", "MITRE ATT&CK", &buffer)
            var parents: [String] = []
            for technique in techniques where !parents.contains(technique.parentID) {
                parents.append(technique.parentID)
            }
            object.field("threat.technique.id", strings: parents, &buffer)
            object.field(
                "threat.technique.subtechnique.id",
                strings: techniques.filter(\.isSubtechnique).map(\.id),
                &buffer
            )
            object.field("threat.technique.name", strings: techniques.map(\.name), &buffer)
        }
        object.end(&buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// The `rpc.dcom.*` fields, in a fixed order; each only when known.
    private func writeDCOM(_ dcom: DCOM, into object: inout JSONObjectWriter, _ buffer: inout ByteBuffer) {
        switch dcom.activation {
        case .known(let classID):
            object.field("rpc.dcom.clsid", classID.description, &buffer)
            object.field("rpc.dcom.class", ClassCatalog.name(of: classID), &buffer)
            object.field("rpc.dcom.sealed", false, &buffer)
        case .sealed, .unreadable:
            object.field("rpc.dcom.clsid", dcom.activation?.description, &buffer)
            object.field("rpc.dcom.sealed", dcom.activation == .sealed, &buffer)
        case nil:
            if let classID = dcom.classID {
                object.field("rpc.dcom.clsid", classID.description, &buffer)
                object.field("rpc.dcom.class", ClassCatalog.name(of: classID), &buffer)
            }
        }
        if let oxid = dcom.oxid {
            object.field("rpc.dcom.oxid", DCOM.hex(oxid), &buffer)
        }
        if !dcom.ports.isEmpty || self.event == .activationReply || self.event == .oxidResolution {
            object.field("rpc.dcom.ports", integers: dcom.ports.map(Int64.init), &buffer)
            object.field("rpc.dcom.bindings", strings: dcom.bindings, &buffer)
        }
        if !dcom.ipids.isEmpty {
            object.field("rpc.dcom.ipid", strings: dcom.ipids.map(\.description), &buffer)
        }
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

    mutating func field(_ key: StaticString, _ value: Bool, _ buffer: inout ByteBuffer) {
        self.key(key, &buffer)
        buffer.writeStaticString(value ? "true" : "false")
    }

    /// A JSON array of integers.
    mutating func field(_ key: StaticString, integers values: [Int64], _ buffer: inout ByteBuffer) {
        self.key(key, &buffer)
        buffer.writeInteger(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeString(String(value))
        }
        buffer.writeInteger(UInt8(ascii: "]"))
    }

    /// A JSON array of strings (ECS fields such as `event.type` are arrays).
    mutating func field(_ key: StaticString, strings values: [String], _ buffer: inout ByteBuffer) {
        self.key(key, &buffer)
        buffer.writeInteger(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeJSONString(value)
        }
        buffer.writeInteger(UInt8(ascii: "]"))
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

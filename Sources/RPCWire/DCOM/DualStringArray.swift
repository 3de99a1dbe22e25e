import NIOCore

/// One string binding of a `DUALSTRINGARRAY` (MS-DCOM 2.2.19.3): a protocol tower id and a network
/// address such as `172.16.66.36[49670]` (host and, for `ncacn_ip_tcp`, the port in brackets).
public struct StringBinding: Hashable, Sendable, CustomStringConvertible {
    /// The RPC protocol sequence (MS-DCOM 2.2.19.3 refers to C706 Appendix I): 7 is `ncacn_ip_tcp`.
    public var towerID: UInt16
    public var networkAddress: String

    public init(towerID: UInt16, networkAddress: String) {
        self.towerID = towerID
        self.networkAddress = networkAddress
    }

    /// `ncacn_ip_tcp`.
    public static let tcpTowerID: UInt16 = 0x07

    /// The host part: the address up to `[`, or all of it.
    public var host: Substring {
        guard let bracket = self.networkAddress.firstIndex(of: "[") else { return self.networkAddress[...] }
        return self.networkAddress[..<bracket]
    }

    /// The port of a TCP binding `HOST[PORT]`, or `nil` when the binding is not TCP or names no
    /// valid port (MS-DCOM 2.2.19.3: "the port number is enclosed in square brackets").
    public var port: UInt16? {
        guard self.towerID == Self.tcpTowerID,
            let open = self.networkAddress.firstIndex(of: "["),
            self.networkAddress.last == "]"
        else { return nil }
        let digits = self.networkAddress[
            self.networkAddress.index(after: open)..<self.networkAddress.index(before: self.networkAddress.endIndex)
        ]
        guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
            let port = UInt16(digits), port > 0
        else { return nil }
        return port
    }

    public var description: String { "\(self.towerID):\(self.networkAddress)" }
}

/// One security binding of a `DUALSTRINGARRAY` (MS-DCOM 2.2.19.4): an authentication service
/// (`RPC_C_AUTHN_*`), the authorization service (0xffff "default" in practice) and a principal name.
public struct SecurityBinding: Hashable, Sendable {
    public var authenticationService: UInt16
    public var authorizationService: UInt16
    public var principalName: String

    public init(authenticationService: UInt16, authorizationService: UInt16, principalName: String) {
        self.authenticationService = authenticationService
        self.authorizationService = authorizationService
        self.principalName = principalName
    }
}

/// `DUALSTRINGARRAY` (MS-DCOM 2.2.19.1): where an object exporter listens and which security
/// services it offers.
///
/// `aStringArray` holds `wNumEntries` 16-bit units: string bindings (tower id, NUL-terminated
/// UTF-16 address), ended by an empty one, from unit 0; security bindings (authn service, authz
/// service, NUL-terminated principal), ended by an empty one, from unit `wSecurityOffset`.
public struct DualStringArray: Hashable, Sendable {
    public var stringBindings: [StringBinding]
    public var securityBindings: [SecurityBinding]

    public init(stringBindings: [StringBinding], securityBindings: [SecurityBinding]) {
        self.stringBindings = stringBindings
        self.securityBindings = securityBindings
    }

    /// The TCP ports the bindings announce, without repeats, in order of appearance.
    public var tcpPorts: [UInt16] {
        var ports: [UInt16] = []
        for binding in self.stringBindings {
            if let port = binding.port, !ports.contains(port) {
                ports.append(port)
            }
        }
        return ports
    }

    /// Decodes the 16-bit units of `aStringArray`. Every string must end with a NUL inside its
    /// section; the string section must end before `securityOffset`.
    static func decode(units: [UInt16], securityOffset: Int) throws -> DualStringArray {
        guard securityOffset <= units.count else {
            throw RPCWireError(
                .invalidDCOM,
                "DUALSTRINGARRAY wSecurityOffset \(securityOffset) > wNumEntries \(units.count)"
            )
        }
        // An empty array (wNumEntries 0) carries neither section: Windows sends it for an
        // exporter with no bindings to announce.
        guard !units.isEmpty else { return DualStringArray(stringBindings: [], securityBindings: []) }
        var strings: [StringBinding] = []
        var index = 0
        while index < securityOffset, units[index] != 0 {
            let tower = units[index]
            let (text, next) = try Self.string(in: units, from: index + 1, end: securityOffset, what: "string binding")
            strings.append(StringBinding(towerID: tower, networkAddress: text))
            index = next
        }
        var security: [SecurityBinding] = []
        index = securityOffset
        while index < units.count, units[index] != 0 {
            guard index + 1 < units.count else {
                throw RPCWireError(
                    .invalidDCOM,
                    "DUALSTRINGARRAY security binding at unit \(index) has no authz service"
                )
            }
            let authn = units[index]
            let authz = units[index + 1]
            let (text, next) = try Self.string(in: units, from: index + 2, end: units.count, what: "security binding")
            security.append(
                SecurityBinding(authenticationService: authn, authorizationService: authz, principalName: text)
            )
            index = next
        }
        return DualStringArray(stringBindings: strings, securityBindings: security)
    }

    /// The NUL-terminated UTF-16 string starting at `start`; returns it and the unit after its NUL.
    private static func string(
        in units: [UInt16],
        from start: Int,
        end: Int,
        what: String
    ) throws -> (String, Int) {
        var index = start
        while index < end, units[index] != 0 {
            index += 1
        }
        guard index < end else {
            throw RPCWireError(.invalidDCOM, "DUALSTRINGARRAY \(what) at unit \(start) has no NUL before unit \(end)")
        }
        return (String(decoding: units[start..<index], as: UTF16.self), index + 1)
    }
}

// MARK: - Encodings

extension NDRReader {
    /// A `DUALSTRINGARRAY` as an NDR conformant structure (MS-DCOM 2.2.19.1): max_count (hoisted),
    /// `wNumEntries`, `wSecurityOffset`, then `max_count` u16 units.
    mutating func readDualStringArray() throws -> DualStringArray {
        let conformance = try self.readCount(
            "DUALSTRINGARRAY max_count",
            limit: self.limits.maximumDualStringArrayEntries
        )
        let entries = try self.readUInt16("wNumEntries")
        let securityOffset = try self.readUInt16("wSecurityOffset")
        guard Int(entries) == conformance else {
            throw RPCWireError(.invalidDCOM, "DUALSTRINGARRAY max_count \(conformance) != wNumEntries \(entries)")
        }
        guard conformance * 2 <= self.remaining else {
            throw RPCWireError(.invalidNDR, "DUALSTRINGARRAY of \(conformance) units runs past the stub end")
        }
        var units: [UInt16] = []
        units.reserveCapacity(conformance)
        for _ in 0..<conformance {
            units.append(try self.readUInt16("DUALSTRINGARRAY unit"))
        }
        return try DualStringArray.decode(units: units, securityOffset: Int(securityOffset))
    }
}

extension ByteBuffer {
    /// A `DUALSTRINGARRAY` as marshaled inside an OBJREF (MS-DCOM 2.2.18.4 `saResAddr`): no NDR
    /// conformance, little-endian, `wNumEntries` units after the two counts.
    mutating func readPackedDualStringArray(limits: WireLimits) throws -> DualStringArray {
        guard let entries = self.readInteger(endianness: .little, as: UInt16.self),
            let securityOffset = self.readInteger(endianness: .little, as: UInt16.self)
        else {
            throw RPCWireError(.invalidDCOM, "OBJREF resolver address shorter than its 4-byte header")
        }
        guard Int(entries) <= limits.maximumDualStringArrayEntries else {
            throw RPCWireError(
                .invalidDCOM,
                "DUALSTRINGARRAY wNumEntries \(entries) > limit \(limits.maximumDualStringArrayEntries)"
            )
        }
        guard Int(entries) * 2 <= self.readableBytes else {
            throw RPCWireError(
                .invalidDCOM,
                "DUALSTRINGARRAY of \(entries) units runs past the \(self.readableBytes) bytes left"
            )
        }
        var units: [UInt16] = []
        units.reserveCapacity(Int(entries))
        for _ in 0..<entries {
            if let unit = self.readInteger(endianness: .little, as: UInt16.self) {
                units.append(unit)
            }
        }
        return try DualStringArray.decode(units: units, securityOffset: Int(securityOffset))
    }
}

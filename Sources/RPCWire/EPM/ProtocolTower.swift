public import NIOCore

/// One floor of a protocol tower (C706 Appendix L): a left-hand side that starts with the
/// protocol identifier, and a right-hand side with that protocol's address data.
///
/// Both sides are kept verbatim, so floors this module does not interpret survive a round trip.
public struct TowerFloor: Hashable, Sendable {
    /// The left-hand side, protocol identifier byte included.
    public var lhs: [UInt8]
    /// The right-hand side (related or addressing information).
    public var rhs: [UInt8]

    public init(lhs: [UInt8], rhs: [UInt8]) {
        self.lhs = lhs
        self.rhs = rhs
    }

    /// The protocol identifier: the first byte of the left-hand side, `nil` if it is empty.
    public var protocolIdentifier: UInt8? { self.lhs.first }

    /// Encoded size: two 16-bit lengths and both sides.
    public var encodedLength: Int { 4 + self.lhs.count + self.rhs.count }

    /// Whether the right-hand side may say where the server is reached: a port, an address, a pipe,
    /// host or local endpoint name, or the data of any protocol not listed here.
    ///
    /// Only three kinds of floor are known to carry none: UUID floors (interface and transfer
    /// syntax; their right-hand side is the minor version) and the connection-oriented and
    /// connectionless RPC floors (minor version). 0x0c is ncalrpc in Samba but SPX, whose right-hand
    /// side is a port, in Wireshark's and impacket's tables (after the DCOM specification), so it
    /// counts as revealing.
    public var revealsEndpoint: Bool {
        switch self.protocolIdentifier {
        case TowerProtocol.uuid, TowerProtocol.rpcConnectionOriented, TowerProtocol.rpcConnectionless:
            return false
        default:
            return true
        }
    }
}

/// Protocol identifiers of tower floors (C706 Appendix I and L; MS-RPCE 2.1.1.2).
public enum TowerProtocol {
    /// DOD TCP; the right-hand side is the port, big-endian.
    public static let tcp: UInt8 = 0x07
    /// DOD UDP; the right-hand side is the port, big-endian.
    public static let udp: UInt8 = 0x08
    /// DOD IP; the right-hand side is the IPv4 address in network order.
    public static let ip: UInt8 = 0x09
    /// Connectionless RPC (ncadg).
    public static let rpcConnectionless: UInt8 = 0x0a
    /// Connection-oriented RPC (ncacn); the right-hand side is the minor version, u16 little-endian.
    public static let rpcConnectionOriented: UInt8 = 0x0b
    /// Local RPC (ncalrpc).
    public static let localRPC: UInt8 = 0x0c
    /// An interface or transfer syntax identifier.
    public static let uuid: UInt8 = 0x0d
    /// SMB named pipe, `\PIPE\name` (ncacn_np).
    public static let namedPipe: UInt8 = 0x0f
    /// Local endpoint name (ncalrpc port name).
    public static let localEndpoint: UInt8 = 0x10
    /// NetBIOS host name.
    public static let netbios: UInt8 = 0x11
    /// RPC over HTTP (ncacn_http); the right-hand side is the port, big-endian.
    public static let http: UInt8 = 0x1f
}

/// A protocol tower (C706 Appendix L): the binding of an interface to a transport endpoint, as
/// carried in endpoint-mapper requests and replies.
///
/// The tower octet string is always little-endian for counts and lengths, whatever the PDU's
/// `drep`; ports inside it are big-endian and IPv4 addresses are in network order.
public struct ProtocolTower: Hashable, Sendable {
    public var floors: [TowerFloor]

    public init(floors: [TowerFloor]) {
        self.floors = floors
    }

    /// Size of the tower octet string: the floor count and every floor.
    public var encodedLength: Int {
        self.floors.reduce(2) { $0 + $1.encodedLength }
    }

    // MARK: - Accessors

    /// The first floor with protocol identifier `protocolIdentifier`.
    public func floor(protocol protocolIdentifier: UInt8) -> TowerFloor? {
        self.floors.first { $0.protocolIdentifier == protocolIdentifier }
    }

    /// The interface (first UUID floor): UUID little-endian and major version (u16 LE) in the
    /// left-hand side, minor version (u16 LE) in the right-hand side.
    public var interface: SyntaxID? {
        self.uuidFloors.first.flatMap(Self.syntax(from:))
    }

    /// The transfer syntax (second UUID floor), normally NDR 2.0.
    public var transferSyntax: SyntaxID? {
        let floors = self.uuidFloors
        guard floors.count >= 2 else { return nil }
        return Self.syntax(from: floors[1])
    }

    /// The TCP port (first TCP floor), when its right-hand side is exactly two bytes.
    public var tcpPort: UInt16? { self.port(protocol: TowerProtocol.tcp) }

    /// The UDP port (first UDP floor), when its right-hand side is exactly two bytes.
    public var udpPort: UInt16? { self.port(protocol: TowerProtocol.udp) }

    /// The HTTP port (first ncacn_http floor), when its right-hand side is exactly two bytes.
    public var httpPort: UInt16? { self.port(protocol: TowerProtocol.http) }

    /// The IPv4 address (first IP floor), when its right-hand side is exactly four bytes.
    public var ipv4Address: IPv4Address? {
        guard let rhs = self.floor(protocol: TowerProtocol.ip)?.rhs, rhs.count == 4 else { return nil }
        return IPv4Address(rhs[0], rhs[1], rhs[2], rhs[3])
    }

    /// Whether this tower names an ncacn_ip_tcp endpoint: it has a connection-oriented RPC floor and
    /// a TCP floor.
    public var isNCACNIPTCP: Bool {
        self.floor(protocol: TowerProtocol.rpcConnectionOriented) != nil
            && self.floor(protocol: TowerProtocol.tcp) != nil
    }

    /// The named pipe of an ncacn_np tower (`\PIPE\lsass`), trailing NUL removed.
    public var namedPipe: String? { self.text(protocol: TowerProtocol.namedPipe) }

    /// The NetBIOS host name of an ncacn_np tower, trailing NUL removed.
    public var netbiosName: String? { self.text(protocol: TowerProtocol.netbios) }

    /// The local endpoint name of an ncalrpc tower, trailing NUL removed.
    public var localEndpoint: String? { self.text(protocol: TowerProtocol.localEndpoint) }

    private var uuidFloors: [TowerFloor] {
        self.floors.filter { $0.protocolIdentifier == TowerProtocol.uuid }
    }

    private func port(protocol protocolIdentifier: UInt8) -> UInt16? {
        guard let rhs = self.floor(protocol: protocolIdentifier)?.rhs, rhs.count == 2 else { return nil }
        return UInt16(rhs[0]) << 8 | UInt16(rhs[1])
    }

    private func text(protocol protocolIdentifier: UInt8) -> String? {
        guard var rhs = self.floor(protocol: protocolIdentifier)?.rhs else { return nil }
        while rhs.last == 0 { rhs.removeLast() }
        return String(decoding: rhs, as: UTF8.self)
    }

    private static func syntax(from floor: TowerFloor) -> SyntaxID? {
        guard floor.lhs.count == 19, floor.rhs.count == 2 else { return nil }
        let buffer = ByteBuffer(bytes: floor.lhs)
        guard let uuid = buffer.getDCEUUID(at: 1, endianness: .little),
            let major = buffer.getInteger(at: 17, endianness: .little, as: UInt16.self)
        else { return nil }
        let minor = UInt16(floor.rhs[0]) | UInt16(floor.rhs[1]) << 8
        return SyntaxID(uuid: uuid, majorVersion: major, minorVersion: minor)
    }

    /// Offset of each floor's right-hand side from the start of the tower octet string.
    var rightHandSideOffsets: [Int] {
        var offsets: [Int] = []
        offsets.reserveCapacity(self.floors.count)
        var offset = 2
        for floor in self.floors {
            offsets.append(offset + 4 + floor.lhs.count)
            offset += floor.encodedLength
        }
        return offsets
    }

    // MARK: - Builders

    /// A UUID floor for `syntax`: `0x0d`, UUID and major version in the left-hand side, minor
    /// version in the right-hand side, all little-endian.
    public static func uuidFloor(_ syntax: SyntaxID) -> TowerFloor {
        var lhs = ByteBuffer()
        lhs.writeInteger(TowerProtocol.uuid)
        lhs.writeDCEUUID(syntax.uuid, endianness: .little)
        lhs.writeInteger(syntax.majorVersion, endianness: .little)
        let minor = syntax.minorVersion
        return TowerFloor(
            lhs: Array(lhs.readableBytesView),
            rhs: [UInt8(truncatingIfNeeded: minor), UInt8(truncatingIfNeeded: minor >> 8)]
        )
    }

    /// The standard five-floor ncacn_ip_tcp tower (75 bytes): interface, transfer syntax,
    /// connection-oriented RPC v5 minor 0, TCP port, IPv4 address.
    public static func ncacnIPTCP(
        interface: SyntaxID,
        transferSyntax: SyntaxID = .ndr,
        endpoint: TCPEndpoint
    ) -> ProtocolTower {
        ProtocolTower(floors: [
            Self.uuidFloor(interface),
            Self.uuidFloor(transferSyntax),
            TowerFloor(lhs: [TowerProtocol.rpcConnectionOriented], rhs: [0, 0]),
            TowerFloor(
                lhs: [TowerProtocol.tcp],
                rhs: [UInt8(truncatingIfNeeded: endpoint.port >> 8), UInt8(truncatingIfNeeded: endpoint.port)]
            ),
            TowerFloor(lhs: [TowerProtocol.ip], rhs: endpoint.address.octets),
        ])
    }
}

// MARK: - Codec

extension ByteBuffer {
    /// Reads a tower octet string of exactly `length` bytes (C706 Appendix L).
    ///
    /// Throws ``RPCWireError/Code/invalidTower`` when `length` is over
    /// ``WireLimits/maximumTowerLength`` or more than is readable, when the floor count is over
    /// ``WireLimits/maximumFloors``, when a floor runs past `length`, or when bytes are left after
    /// the last floor. The reader index moves only on success.
    public mutating func readProtocolTower(length: Int, limits: WireLimits) throws -> ProtocolTower {
        let tower = try self.getProtocolTower(at: self.readerIndex, length: length, limits: limits)
        self.moveReaderIndex(forwardBy: length)
        return tower
    }

    /// Parses the tower octet string of `length` bytes at `index` without moving the reader index.
    public func getProtocolTower(at index: Int, length: Int, limits: WireLimits) throws -> ProtocolTower {
        guard length >= 2 else {
            throw RPCWireError(.invalidTower, "tower_length \(length) is shorter than the floor count")
        }
        guard length <= limits.maximumTowerLength else {
            throw RPCWireError(.invalidTower, "tower_length \(length) > limit \(limits.maximumTowerLength)")
        }
        guard index >= self.readerIndex, length <= self.writerIndex - index else {
            throw RPCWireError(
                .invalidTower,
                "tower_length \(length) runs past the \(self.writerIndex - index) bytes left"
            )
        }
        let end = index + length
        guard let floorCount = self.getInteger(at: index, endianness: .little, as: UInt16.self) else {
            throw RPCWireError(.invalidTower, "no floor count")
        }
        guard Int(floorCount) <= limits.maximumFloors else {
            throw RPCWireError(.invalidTower, "floor count \(floorCount) > limit \(limits.maximumFloors)")
        }
        var position = index + 2
        // One side of a floor: a u16 little-endian length, then that many bytes, within the tower.
        func readSide(_ side: String, ofFloor floorNumber: Int) throws -> [UInt8] {
            guard end - position >= 2,
                let length = self.getInteger(at: position, endianness: .little, as: UInt16.self)
            else {
                throw RPCWireError(
                    .invalidTower,
                    "floor \(floorNumber) of \(floorCount): \(side) length past the tower end"
                )
            }
            position += 2
            guard Int(length) <= end - position, let bytes = self.getBytes(at: position, length: Int(length)) else {
                throw RPCWireError(.invalidTower, "floor \(floorNumber): \(side) of \(length) bytes past the tower end")
            }
            position += Int(length)
            return bytes
        }
        var floors: [TowerFloor] = []
        floors.reserveCapacity(Int(floorCount))
        for floorIndex in 0..<Int(floorCount) {
            let lhs = try readSide("lhs", ofFloor: floorIndex + 1)
            let rhs = try readSide("rhs", ofFloor: floorIndex + 1)
            floors.append(TowerFloor(lhs: lhs, rhs: rhs))
        }
        guard position == end else {
            throw RPCWireError(.invalidTower, "\(end - position) bytes after the last of \(floorCount) floors")
        }
        return ProtocolTower(floors: floors)
    }

    /// Writes the tower octet string and returns its length.
    ///
    /// Counts and lengths are 16-bit on the wire; a tower built with more than 65535 floors or a
    /// side longer than 65535 bytes is not representable and is written truncated.
    @discardableResult
    public mutating func writeProtocolTower(_ tower: ProtocolTower) -> Int {
        var written = self.writeInteger(UInt16(truncatingIfNeeded: tower.floors.count), endianness: .little)
        for floor in tower.floors {
            written += self.writeInteger(UInt16(truncatingIfNeeded: floor.lhs.count), endianness: .little)
            written += self.writeBytes(floor.lhs)
            written += self.writeInteger(UInt16(truncatingIfNeeded: floor.rhs.count), endianness: .little)
            written += self.writeBytes(floor.rhs)
        }
        return written
    }
}

import NIOCore

/// What a server's tower says about one ncacn_ip_tcp endpoint, handed to the closure of
/// ``EPMReplyRewriter/rewrite(fragments:operation:syntax:limits:endpointFor:)``.
public struct EPMTowerEndpoint: Hashable, Sendable {
    /// The interface the tower binds (its first UUID floor), if readable.
    public var interface: SyntaxID?
    /// The tower's TCP port and IPv4 address; the address is ``IPv4Address/any`` when the tower has
    /// no IP floor.
    public var endpoint: TCPEndpoint

    public init(interface: SyntaxID?, endpoint: TCPEndpoint) {
        self.interface = interface
        self.endpoint = endpoint
    }
}

/// One tower of a server's endpoint-mapper reply, of any protocol, handed to the closure of
/// ``EPMReplyRewriter/rewriteTowers(fragments:operation:syntax:limits:decide:)``.
public struct EPMReplyTower: Hashable, Sendable {
    /// The tower as the server sent it.
    public var tower: ProtocolTower
    /// For an ncacn_ip_tcp tower, its TCP port and IPv4 address (``IPv4Address/any`` when it has
    /// no IP floor); `nil` for every other protocol.
    public var tcpEndpoint: TCPEndpoint?

    public init(tower: ProtocolTower, tcpEndpoint: TCPEndpoint?) {
        self.tower = tower
        self.tcpEndpoint = tcpEndpoint
    }

    /// The interface the tower binds (its first UUID floor), if readable.
    public var interface: SyntaxID? { self.tower.interface }
}

/// What the rewriter does with one tower.
public enum EPMTowerDecision: Hashable, Sendable {
    /// Leave the tower as the server sent it.
    case keep
    /// Point an ncacn_ip_tcp tower at `endpoint`: every TCP floor gets its port, every IP floor its
    /// address. Only for a tower with an ``EPMReplyTower/tcpEndpoint``; for any other the rewrite
    /// throws.
    case rewrite(TCPEndpoint)
    /// Hide every endpoint the tower names, whatever its protocol: each floor that
    /// ``TowerFloor/revealsEndpoint`` gets a right-hand side of zeros of the same length (port 0,
    /// `0.0.0.0`, a pipe, host or local endpoint name of NULs). The interface, transfer syntax and
    /// RPC protocol floors stay, so the reply keeps its shape and every length.
    case redact
}

/// The rewritten fragments of one endpoint-mapper reply.
public struct EPMRewriteResult: Hashable, Sendable {
    /// The fragments, same count and lengths as the input, with endpoints patched.
    public var fragments: [RawPDU]
    /// ncacn_ip_tcp towers given the endpoint the closure returned.
    public var rewrittenTowers: Int
    /// Towers whose endpoints were zeroed (``EPMTowerDecision/redact``): ncacn_ip_tcp towers the
    /// closure refused and, through ``EPMReplyRewriter/rewriteTowers(fragments:operation:syntax:limits:decide:)``,
    /// towers of any protocol.
    public var redactedTowers: Int
    /// The status the server returned (0 on success, `ept_s_not_registered` when nothing matched).
    public var status: RPCStatus

    public init(fragments: [RawPDU], rewrittenTowers: Int, redactedTowers: Int, status: RPCStatus) {
        self.fragments = fragments
        self.rewrittenTowers = rewrittenTowers
        self.redactedTowers = redactedTowers
        self.status = status
    }
}

/// Rewrites the endpoints in an `ept_map` or `ept_lookup` reply, in place.
///
/// A large reply comes in several response fragments (Samba's `ept_lookup` of its 53 entries takes
/// four at 2248 bytes), and a tower, even its 2-byte port, may straddle a boundary. So the stub
/// bytes of all fragments are concatenated into a virtual stub and parsed as the reply of
/// `operation` (C706 Appendix O; the tower octet strings of C706 Appendix L). For every tower the
/// caller decides what the client should see; ports (2 bytes, big-endian), IPv4 addresses (4 bytes)
/// and redacted names keep their size, so no length, hint or fragment boundary changes, and a
/// patch that straddles two fragments is written byte by byte.
///
/// Only the stub is touched. A caller must not pass replies protected at `packet` level or above:
/// any change breaks their verifier, and at `privacy` the stub is encrypted and fails to parse.
public struct EPMReplyRewriter: Sendable {
    /// The response header before the stub: common header, alloc_hint, p_cont_id, cancel_count,
    /// reserved (C706 12.6.4.10).
    static let responseHeaderLength = WireLimits.commonHeaderLength + 8

    /// Rewrites the ncacn_ip_tcp towers of the response fragments of one call; towers of every
    /// other protocol pass unchanged.
    ///
    /// - Parameters:
    ///   - fragments: every response PDU of the call, FIRST_FRAG through LAST_FRAG.
    ///   - operation: `.map` or `.lookup`.
    ///   - syntax: the transfer syntax negotiated for the presentation context.
    ///   - limits: caps on the reassembled stub, tower and entry counts, tower sizes.
    ///   - endpointFor: the endpoint to advertise for a server tower, or `nil` to redact it (as
    ///     ``EPMTowerDecision/redact``: port 0, address `0.0.0.0`). Called once per ncacn_ip_tcp
    ///     tower, in stub order, and not at all when parsing fails.
    /// - Throws: as ``rewriteTowers(fragments:operation:syntax:limits:decide:)``.
    public static func rewrite(
        fragments: [RawPDU],
        operation: EPMOperation,
        syntax: NDRSyntax,
        limits: WireLimits,
        endpointFor: (EPMTowerEndpoint) throws -> TCPEndpoint?
    ) throws -> EPMRewriteResult {
        try Self.rewriteTowers(fragments: fragments, operation: operation, syntax: syntax, limits: limits) { tower in
            guard let endpoint = tower.tcpEndpoint else { return .keep }
            guard let replacement = try endpointFor(EPMTowerEndpoint(interface: tower.interface, endpoint: endpoint))
            else { return .redact }
            return .rewrite(replacement)
        }
    }

    /// Rewrites or redacts the towers, of every protocol, of the response fragments of one call.
    ///
    /// - Parameters:
    ///   - fragments: every response PDU of the call, FIRST_FRAG through LAST_FRAG.
    ///   - operation: `.map` or `.lookup`.
    ///   - syntax: the transfer syntax negotiated for the presentation context.
    ///   - limits: caps on the reassembled stub, tower and entry counts, tower sizes.
    ///   - decide: what to do with each tower. Called once per tower (null tower pointers have
    ///     none), in stub order, and not at all when parsing fails or an ncacn_ip_tcp tower has a
    ///     port that is not 2 bytes or an address that is not 4.
    /// - Throws: ``RPCWireError`` for an empty list, non-response PDUs, a broken FIRST/LAST
    ///   sequence, mixed call ids or data representations, a stub over
    ///   ``WireLimits/maximumReassembledStubLength``, malformed NDR or towers, an operation other
    ///   than map or lookup, or ``EPMTowerDecision/rewrite(_:)`` for a tower that is not
    ///   ncacn_ip_tcp; and whatever `decide` throws. Nothing is rewritten then.
    public static func rewriteTowers(
        fragments: [RawPDU],
        operation: EPMOperation,
        syntax: NDRSyntax,
        limits: WireLimits,
        decide: (EPMReplyTower) throws -> EPMTowerDecision
    ) throws -> EPMRewriteResult {
        let segments = try Self.stubSegments(of: fragments, limits: limits)
        let endianness = fragments.first?.header.endianness ?? .little

        var stub = ByteBuffer()
        stub.reserveCapacity(segments.last.map { $0.virtualStart + $0.length } ?? 0)
        for (segment, fragment) in zip(segments, fragments) {
            guard let view = fragment.bytes.getSlice(at: segment.start, length: segment.length) else {
                throw RPCWireError(.truncatedBody, "fragment stub of \(segment.length) bytes")
            }
            var slice = view
            stub.writeBuffer(&slice)
        }

        var reader = try NDRReader(buffer: stub, syntax: syntax, endianness: endianness, limits: limits)
        let located: [LocatedTower]
        let status: RPCStatus
        switch operation {
        case .map:
            let (response, towers) = try EPMMapResponse.read(from: &reader)
            located = towers
            status = response.status
        case .lookup:
            let (response, towers) = try EPMLookupResponse.read(from: &reader)
            located = towers
            status = response.status
        default:
            throw RPCWireError(.invalidNDR, "ept \(operation) replies carry no towers to rewrite")
        }
        try reader.finish("ept_\(operation) response")

        // Validate every TCP tower before the closure runs: it may allocate ports.
        let towers = try located.map(Self.replyTower(_:))

        // Decide every patch before touching any byte. Every TCP and IP floor of a tower is
        // patched, so a tower with repeated floors cannot leak one.
        var patches: [(offset: Int, bytes: [UInt8])] = []
        var rewritten = 0
        var redacted = 0
        for (entry, tower) in zip(located, towers) {
            let floors = zip(tower.tower.floors, tower.tower.rightHandSideOffsets)
            switch try decide(tower) {
            case .keep:
                continue
            case .rewrite(let replacement):
                guard tower.tcpEndpoint != nil else {
                    throw RPCWireError(
                        .invalidTower,
                        "tower at stub offset \(entry.offset) is not ncacn_ip_tcp and has no TCP endpoint to rewrite"
                    )
                }
                let portBytes = [
                    UInt8(truncatingIfNeeded: replacement.port >> 8), UInt8(truncatingIfNeeded: replacement.port),
                ]
                for (floor, rhsOffset) in floors {
                    switch floor.protocolIdentifier {
                    case TowerProtocol.tcp: patches.append((entry.offset + rhsOffset, portBytes))
                    case TowerProtocol.ip: patches.append((entry.offset + rhsOffset, replacement.address.octets))
                    default: break
                    }
                }
                rewritten += 1
            case .redact:
                for (floor, rhsOffset) in floors where floor.revealsEndpoint {
                    patches.append((entry.offset + rhsOffset, [UInt8](repeating: 0, count: floor.rhs.count)))
                }
                redacted += 1
            }
        }

        var output = fragments
        var segmentIndex = 0
        for patch in patches.sorted(by: { $0.offset < $1.offset }) {
            for (delta, byte) in patch.bytes.enumerated() {
                let virtualOffset = patch.offset + delta
                while segmentIndex < segments.count,
                    virtualOffset >= segments[segmentIndex].virtualStart + segments[segmentIndex].length
                {
                    segmentIndex += 1
                }
                guard segmentIndex < segments.count, virtualOffset >= segments[segmentIndex].virtualStart else {
                    throw RPCWireError(.invalidNDR, "patch at stub offset \(virtualOffset) outside the fragments")
                }
                let segment = segments[segmentIndex]
                output[segmentIndex].bytes.setInteger(byte, at: segment.start + virtualOffset - segment.virtualStart)
            }
        }
        return EPMRewriteResult(fragments: output, rewrittenTowers: rewritten, redactedTowers: redacted, status: status)
    }

    /// The closure's view of a tower; throws for an ncacn_ip_tcp tower whose port is not 2 bytes
    /// or whose address is not 4, which could not be patched in place.
    private static func replyTower(_ entry: LocatedTower) throws -> EPMReplyTower {
        let tower = entry.tower
        guard tower.isNCACNIPTCP else { return EPMReplyTower(tower: tower, tcpEndpoint: nil) }
        for floor in tower.floors {
            switch floor.protocolIdentifier {
            case TowerProtocol.tcp where floor.rhs.count != 2:
                throw RPCWireError(
                    .invalidTower,
                    "TCP floor at stub offset \(entry.offset) has a \(floor.rhs.count)-byte port"
                )
            case TowerProtocol.ip where floor.rhs.count != 4:
                throw RPCWireError(
                    .invalidTower,
                    "IP floor at stub offset \(entry.offset) has a \(floor.rhs.count)-byte address"
                )
            default:
                break
            }
        }
        guard let port = tower.tcpPort else {
            throw RPCWireError(.invalidTower, "ncacn_ip_tcp tower at stub offset \(entry.offset) has no port")
        }
        return EPMReplyTower(tower: tower, tcpEndpoint: TCPEndpoint(address: tower.ipv4Address ?? .any, port: port))
    }

    /// Where each fragment's stub lies: `start` is a buffer index in the fragment, `virtualStart`
    /// the offset in the concatenated stub.
    struct StubSegment {
        var start: Int
        var length: Int
        var virtualStart: Int
    }

    /// Validates the fragment sequence and locates each stub.
    static func stubSegments(of fragments: [RawPDU], limits: WireLimits) throws -> [StubSegment] {
        guard let first = fragments.first, let last = fragments.last else {
            throw RPCWireError(.fragmentSequence, "no fragments")
        }
        guard fragments.count <= limits.maximumFragmentsPerCall else {
            throw RPCWireError(
                .reassemblyTooLarge,
                "\(fragments.count) fragments > limit \(limits.maximumFragmentsPerCall)"
            )
        }
        guard first.header.flags.contains(.firstFragment) else {
            throw RPCWireError(.fragmentSequence, "first fragment lacks FIRST_FRAG")
        }
        guard last.header.flags.contains(.lastFragment) else {
            throw RPCWireError(.fragmentSequence, "last fragment lacks LAST_FRAG")
        }
        var segments: [StubSegment] = []
        segments.reserveCapacity(fragments.count)
        var total = 0
        for (index, fragment) in fragments.enumerated() {
            let header = fragment.header
            guard header.packetType == .response else {
                throw RPCWireError(.unexpectedPacketType, "fragment \(index) is a \(header.packetType), not a response")
            }
            guard header.callID == first.header.callID else {
                throw RPCWireError(
                    .fragmentSequence,
                    "fragment \(index) has call_id \(header.callID), expected \(first.header.callID)"
                )
            }
            guard header.dataRepresentation == first.header.dataRepresentation else {
                throw RPCWireError(.fragmentSequence, "fragment \(index) changes the data representation")
            }
            if index > 0, header.flags.contains(.firstFragment) {
                throw RPCWireError(.fragmentSequence, "fragment \(index) repeats FIRST_FRAG")
            }
            if index < fragments.count - 1, header.flags.contains(.lastFragment) {
                throw RPCWireError(.fragmentSequence, "fragment \(index) of \(fragments.count) has LAST_FRAG")
            }
            let (offset, length) = try fragment.callStubRange()
            guard length <= limits.maximumReassembledStubLength - total else {
                throw RPCWireError(
                    .reassemblyTooLarge,
                    "stub exceeds \(limits.maximumReassembledStubLength) bytes at fragment \(index)"
                )
            }
            segments.append(
                StubSegment(start: fragment.bytes.readerIndex + offset, length: length, virtualStart: total)
            )
            total += length
        }
        return segments
    }
}

extension RawPDU {
    /// The stub of a request, response or fault: its offset from the PDU start and its length,
    /// auth padding and verifier excluded.
    func callStubRange() throws -> (offset: Int, length: Int) {
        let (body, _) = try self.splitAuthVerifier()
        var headerLength = EPMReplyRewriter.responseHeaderLength
        if self.header.packetType == .request, self.header.flags.contains(.objectUUID) {
            headerLength += DCEUUID.wireSize
        }
        let bodyHeader = headerLength - WireLimits.commonHeaderLength
        guard body.readableBytes >= bodyHeader else {
            throw RPCWireError.truncated("\(self.header.packetType) header", need: bodyHeader, have: body.readableBytes)
        }
        return (headerLength, body.readableBytes - bodyHeader)
    }
}

import NIOCore

/// What a server's tower says about one ncacn_ip_tcp endpoint, handed to the rewriter's closure.
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

/// The rewritten fragments of one endpoint-mapper reply.
public struct EPMRewriteResult: Hashable, Sendable {
    /// The fragments, same count and lengths as the input, with endpoints patched.
    public var fragments: [RawPDU]
    /// ncacn_ip_tcp towers given the endpoint the closure returned.
    public var rewrittenTowers: Int
    /// ncacn_ip_tcp towers the closure refused, written as port 0 and `0.0.0.0`.
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

/// Rewrites the TCP endpoints in an `ept_map` or `ept_lookup` reply, in place.
///
/// A large reply comes in several response fragments (Samba's `ept_lookup` of its 53 entries takes
/// four at 2248 bytes), and a tower, even its 2-byte port, may straddle a boundary. So the stub
/// bytes of all fragments are concatenated into a virtual stub and parsed as the reply of
/// `operation` (C706 Appendix O; towers as in C706 Appendix L). For every ncacn_ip_tcp tower the
/// caller decides the endpoint the client should see; ports (2 bytes, big-endian) and IPv4
/// addresses (4 bytes) keep their size, so no length, hint or fragment boundary changes, and a
/// patch that straddles two fragments is written byte by byte.
///
/// Only the stub is touched. A caller must not pass replies protected at `packet` level or above:
/// any change breaks their verifier, and at `privacy` the stub is encrypted and fails to parse.
public struct EPMReplyRewriter: Sendable {
    /// The response header before the stub: common header, alloc_hint, p_cont_id, cancel_count,
    /// reserved (C706 12.6.4.10).
    static let responseHeaderLength = WireLimits.commonHeaderLength + 8

    /// Rewrites the response fragments of one call.
    ///
    /// - Parameters:
    ///   - fragments: every response PDU of the call, FIRST_FRAG through LAST_FRAG.
    ///   - operation: `.map` or `.lookup`.
    ///   - syntax: the transfer syntax negotiated for the presentation context.
    ///   - limits: caps on the reassembled stub, tower and entry counts, tower sizes.
    ///   - endpointFor: the endpoint to advertise for a server tower, or `nil` to redact it (port 0,
    ///     address `0.0.0.0`). Called once per ncacn_ip_tcp tower, in stub order, and not at all
    ///     when parsing fails.
    /// - Throws: ``RPCWireError`` for an empty list, non-response PDUs, a broken FIRST/LAST
    ///   sequence, mixed call ids or data representations, a stub over
    ///   ``WireLimits/maximumReassembledStubLength``, malformed NDR or towers, an operation other
    ///   than map or lookup; and whatever `endpointFor` throws. Nothing is rewritten then.
    public static func rewrite(
        fragments: [RawPDU],
        operation: EPMOperation,
        syntax: NDRSyntax,
        limits: WireLimits,
        endpointFor: (EPMTowerEndpoint) throws -> TCPEndpoint?
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
        var targets: [(offset: Int, original: EPMTowerEndpoint, ports: [Int], addresses: [Int])] = []
        for entry in located where entry.tower.isNCACNIPTCP {
            let tower = entry.tower
            var ports: [Int] = []
            var addresses: [Int] = []
            for (floor, rhsOffset) in zip(tower.floors, tower.rightHandSideOffsets) {
                switch floor.protocolIdentifier {
                case TowerProtocol.tcp:
                    guard floor.rhs.count == 2 else {
                        throw RPCWireError(
                            .invalidTower,
                            "TCP floor at stub offset \(entry.offset) has a \(floor.rhs.count)-byte port"
                        )
                    }
                    ports.append(entry.offset + rhsOffset)
                case TowerProtocol.ip:
                    guard floor.rhs.count == 4 else {
                        throw RPCWireError(
                            .invalidTower,
                            "IP floor at stub offset \(entry.offset) has a \(floor.rhs.count)-byte address"
                        )
                    }
                    addresses.append(entry.offset + rhsOffset)
                default:
                    break
                }
            }
            guard let port = tower.tcpPort else {
                throw RPCWireError(.invalidTower, "ncacn_ip_tcp tower at stub offset \(entry.offset) has no port")
            }
            let original = EPMTowerEndpoint(
                interface: tower.interface,
                endpoint: TCPEndpoint(address: tower.ipv4Address ?? .any, port: port)
            )
            targets.append((entry.offset, original, ports, addresses))
        }

        // Decide every patch before touching any byte. Every TCP and IP floor of a tower is
        // patched, so a tower with repeated floors cannot leak one.
        var patches: [(offset: Int, bytes: [UInt8])] = []
        var rewritten = 0
        var redacted = 0
        for target in targets {
            let replacement: TCPEndpoint
            if let chosen = try endpointFor(target.original) {
                replacement = chosen
                rewritten += 1
            } else {
                replacement = TCPEndpoint(address: .any, port: 0)
                redacted += 1
            }
            let portBytes = [
                UInt8(truncatingIfNeeded: replacement.port >> 8), UInt8(truncatingIfNeeded: replacement.port),
            ]
            for offset in target.ports {
                patches.append((offset, portBytes))
            }
            for offset in target.addresses {
                patches.append((offset, replacement.address.octets))
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

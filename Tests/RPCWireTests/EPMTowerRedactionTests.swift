import Foundation
import NIOCore
import RPCWire
import Testing

@Suite("Endpoint-mapper replies: towers of every protocol kept, rewritten or redacted")
struct EPMTowerRedactionTests {
    /// `tower` as ``EPMTowerDecision/redact`` should leave it: every right-hand side that may
    /// reveal an endpoint zeroed, nothing else touched.
    static func redacted(_ tower: ProtocolTower) -> ProtocolTower {
        var tower = tower
        for index in tower.floors.indices where tower.floors[index].revealsEndpoint {
            tower.floors[index].rhs = [UInt8](repeating: 0, count: tower.floors[index].rhs.count)
        }
        return tower
    }

    /// `tower` pointed at `endpoint`, as ``EPMTowerDecision/rewrite(_:)`` should leave it.
    static func rewritten(_ tower: ProtocolTower, to endpoint: TCPEndpoint) -> ProtocolTower {
        var tower = tower
        for index in tower.floors.indices {
            switch tower.floors[index].protocolIdentifier {
            case TowerProtocol.tcp: tower.floors[index].rhs = [UInt8(endpoint.port >> 8), UInt8(endpoint.port & 0xff)]
            case TowerProtocol.ip: tower.floors[index].rhs = endpoint.address.octets
            default: break
            }
        }
        return tower
    }

    /// Stub bytes per fragment to try: every size from 8 to 512, where each field straddles
    /// boundaries at every offset, and above that every multiple of 16 (Samba cuts response stubs
    /// at multiples of 16). `RPCGATE_EVERY_FRAGMENT_SIZE=1` tries every size up to the whole stub
    /// (about 6,700 rewrites, over half a minute in a debug build).
    static func fragmentSizes(upTo length: Int) -> [Int] {
        if ProcessInfo.processInfo.environment["RPCGATE_EVERY_FRAGMENT_SIZE"] != nil { return Array(8...length) }
        return Array(8...512) + Array(stride(from: 528, to: length, by: 16)) + [length]
    }

    /// `stub` as the response fragments of one call, `stubBytesPerFragment` stub bytes each (the last
    /// one shorter), built directly: the loop over every size calls this thousands of times.
    static func responseFragments(of stub: [UInt8], stubBytesPerFragment size: Int) -> [RawPDU] {
        var fragments: [RawPDU] = []
        var start = 0
        while start < stub.count {
            let end = min(start + size, stub.count)
            var flags: PFCFlags = []
            if start == 0 { flags.insert(.firstFragment) }
            if end == stub.count { flags.insert(.lastFragment) }
            let header = PDUHeader(
                packetType: .response,
                flags: flags,
                fragmentLength: UInt16(24 + end - start),
                callID: 7
            )
            var bytes = ByteBuffer()
            bytes.writePDUHeader(header)
            bytes.writeInteger(UInt32(stub.count - start), endianness: .little)  // alloc_hint
            bytes.writeInteger(UInt32(0))  // p_cont_id, cancel_count, reserved
            bytes.writeBytes(stub[start..<end])
            fragments.append(RawPDU(header: header, bytes: bytes))
            start = end
        }
        return fragments
    }

    static func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        let pattern = Array(needle.lowercased().utf8)
        let lowered = haystack.map { (65...90).contains($0) ? $0 + 32 : $0 }
        guard lowered.count >= pattern.count else { return false }
        return (0...(lowered.count - pattern.count)).contains {
            lowered[$0..<($0 + pattern.count)].elementsEqual(pattern)
        }
    }

    @Test func everyFloorThatNamesAnEndpointIsZeroedAndNoOtherByteChanges() throws {
        let response = EPMTestData.mixedLookupResponse()
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr32) }
        var asked: [EPMReplyTower] = []
        let result = try EPMReplyRewriter.rewriteTowers(
            fragments: try EPMTestData.responseFragments(stub: stub, cuts: [77, 78, 200]),
            operation: .lookup,
            syntax: .ndr32,
            limits: WireLimits()
        ) {
            asked.append($0)
            return .redact
        }
        let towers = response.entries.compactMap(\.tower)
        #expect(asked.map(\.tower) == towers, "every tower, in stub order, null pointers skipped")
        #expect(asked.map { $0.tcpEndpoint != nil } == towers.map(\.isNCACNIPTCP))
        #expect(result.redactedTowers == towers.count)
        #expect(result.rewrittenTowers == 0)

        var expected = response
        for index in expected.entries.indices {
            expected.entries[index].tower = expected.entries[index].tower.map(Self.redacted)
        }
        var patched = try EPMTestData.concatenatedStub(result.fragments)
        #expect(patched == EPMTestData.stub { $0.writeEPMLookupResponse(expected, syntax: .ndr32) })
        let bytes = Array(patched.readableBytesView)
        for name in ["lsass", "DC1"] {
            #expect(!Self.contains(bytes, name), "\(name) left in the redacted reply")
        }
        let parsed = try patched.readEPMLookupResponse(syntax: .ndr32)
        let pipe = try #require(parsed.entries[1].tower)
        #expect(pipe.floors.count == 5)
        #expect(pipe.interface == EPMTestData.lsarpc, "the interface stays: the client asked for it")
        #expect(pipe.floors[3].rhs == [UInt8](repeating: 0, count: "\\PIPE\\lsass".utf8.count + 1))
        let local = try #require(parsed.entries[5].tower)
        #expect(local.localEndpoint == "", "an ncalrpc endpoint name becomes NULs")
    }

    @Test func keepLeavesTheReplyUntouched() throws {
        let fragments = try EPMTestData.pdus(fromFixture: "ept_lookup_response_stream")
        let result = try EPMReplyRewriter.rewriteTowers(
            fragments: fragments,
            operation: .lookup,
            syntax: .ndr32,
            limits: WireLimits()
        ) { _ in .keep }
        #expect(result.fragments == fragments)
        #expect(result.rewrittenTowers == 0 && result.redactedTowers == 0)
    }

    @Test func onlyNCACNIPTCPTowersCanBeRewritten() throws {
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(EPMTestData.mixedLookupResponse(), syntax: .ndr32) }
        let fragments = try EPMTestData.responseFragments(stub: stub)
        EPMMessagesTests.expectCode(.invalidTower) {
            _ = try EPMReplyRewriter.rewriteTowers(
                fragments: fragments,
                operation: .lookup,
                syntax: .ndr32,
                limits: WireLimits()
            ) { _ in .rewrite(TCPEndpoint(address: EPMTestData.proxyAddress, port: 40000)) }
        }
    }

    @Test func oldEntryPointStillSeesOnlyTCPTowersAndLeavesTheOthers() throws {
        let response = EPMTestData.mixedLookupResponse()
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr32) }
        var seen = 0
        let result = try EPMReplyRewriter.rewrite(
            fragments: try EPMTestData.responseFragments(stub: stub),
            operation: .lookup,
            syntax: .ndr32,
            limits: WireLimits()
        ) { _ in
            seen += 1
            return nil
        }
        #expect(seen == response.entries.compactMap(\.tower).filter(\.isNCACNIPTCP).count)
        var patched = try EPMTestData.concatenatedStub(result.fragments)
        let parsed = try patched.readEPMLookupResponse(syntax: .ndr32)
        for (after, before) in zip(parsed.entries, response.entries) {
            guard let tower = before.tower else { continue }
            #expect(after.tower == (tower.isNCACNIPTCP ? Self.redacted(tower) : tower))
        }
    }

    // MARK: - Samba's captured reply at every fragment size

    /// The captured `ept_lookup` reply (53 entries from Samba: ncacn_ip_tcp, ncacn_np, ncalrpc and
    /// ncacn_http towers) re-cut into response fragments of many stub sizes (``fragmentSizes(upTo:)``;
    /// every size with `RPCGATE_EVERY_FRAGMENT_SIZE=1`), the way a gateway would treat it: the interfaces behind `\pipe\lsass`,
    /// `\pipe\browser` and `\pipe\unixinfo` denied (every tower of theirs redacted), the other
    /// ncacn_ip_tcp towers rewritten, the rest kept.
    @Test func capturedLookupIsRedactedAndRewrittenWhateverTheFragmentSize() throws {
        let stub = try EPMTestData.stub(ofFixture: "ept_lookup_response_stream")
        var reader = stub
        let response = try reader.readEPMLookupResponse(syntax: .ndr32)
        #expect(EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr32) } == stub)
        let towers = response.entries.compactMap(\.tower)

        let deniedPipes = ["\\pipe\\lsass", "\\pipe\\browser", "\\pipe\\unixinfo"]
        let denied = Set(
            towers.filter { deniedPipes.contains($0.namedPipe?.lowercased() ?? "") }.compactMap(\.interface)
        )
        #expect(denied.count >= 3)
        #expect(towers.contains { $0.floor(protocol: TowerProtocol.localEndpoint) != nil })
        #expect(towers.contains { $0.httpPort != nil })
        let proxied = TCPEndpoint(address: EPMTestData.proxyAddress, port: 40001)
        func decide(_ tower: EPMReplyTower) -> EPMTowerDecision {
            if let interface = tower.interface, denied.contains(interface) { return .redact }
            return tower.tcpEndpoint == nil ? .keep : .rewrite(proxied)
        }

        var expected = response
        var redactions = 0
        var rewrites = 0
        for index in expected.entries.indices {
            guard let tower = expected.entries[index].tower else { continue }
            switch decide(EPMReplyTower(tower: tower, tcpEndpoint: tower.isNCACNIPTCP ? proxied : nil)) {
            case .redact:
                expected.entries[index].tower = Self.redacted(tower)
                redactions += 1
            case .rewrite(let endpoint):
                expected.entries[index].tower = Self.rewritten(tower, to: endpoint)
                rewrites += 1
            case .keep:
                break
            }
        }
        // Denied interfaces have towers of several protocols, and some of their towers are not TCP.
        #expect(redactions > denied.count)
        #expect(expected.entries.compactMap(\.tower).contains { $0.namedPipe == "" })
        let expectedStub = EPMTestData.stub { $0.writeEPMLookupResponse(expected, syntax: .ndr32) }
        #expect(expectedStub != stub)

        let stubBytes = Array(stub.readableBytesView)
        let expectedBytes = Array(expectedStub.readableBytesView)
        for size in Self.fragmentSizes(upTo: stubBytes.count) {
            let fragments = Self.responseFragments(of: stubBytes, stubBytesPerFragment: size)
            let result = try EPMReplyRewriter.rewriteTowers(
                fragments: fragments,
                operation: .lookup,
                syntax: .ndr32,
                limits: WireLimits(),
                decide: decide
            )
            #expect(result.redactedTowers == redactions && result.rewrittenTowers == rewrites, "size \(size)")
            #expect(result.fragments.count == fragments.count)
            // Each fragment keeps its header and length and carries its slice of the expected stub.
            for (index, (patched, original)) in zip(result.fragments, fragments).enumerated() {
                let start = index * size
                let piece = patched.bytes.getBytes(
                    at: patched.bytes.readerIndex + 24,
                    length: patched.bytes.readableBytes - 24
                )
                guard patched.header == original.header,
                    patched.bytes.getBytes(at: patched.bytes.readerIndex, length: 24)
                        == original.bytes.getBytes(at: original.bytes.readerIndex, length: 24),
                    let piece, piece[...] == expectedBytes[start..<min(start + size, expectedBytes.count)]
                else {
                    Issue.record("size \(size): fragment \(index) differs from the expected one")
                    return
                }
            }
        }

        // What a client reads: no name, port or host of a denied interface.
        var patched = expectedStub
        let parsed = try patched.readEPMLookupResponse(syntax: .ndr32)
        for tower in parsed.entries.compactMap(\.tower) {
            guard let interface = tower.interface, denied.contains(interface) else { continue }
            #expect(tower.floors.filter(\.revealsEndpoint).allSatisfy { $0.rhs.allSatisfy { $0 == 0 } })
        }
        let bytes = Array(expectedStub.readableBytesView)
        for pipe in deniedPipes {
            #expect(!Self.contains(bytes, pipe), "\(pipe) left in the reply")
        }
    }
}

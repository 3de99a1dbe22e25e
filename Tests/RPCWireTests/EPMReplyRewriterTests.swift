import NIOCore
import RPCWire
import Testing

@Suite("Endpoint-mapper reply rewriting")
struct EPMReplyRewriterTests {
    /// The gateway's answer in these tests: each server port maps to a proxy port on the proxy's
    /// address, except 49153 (drsuapi), which policy refuses.
    static func proxyEndpoint(_ tower: EPMTowerEndpoint) -> TCPEndpoint? {
        switch tower.endpoint.port {
        case 49152: return TCPEndpoint(address: EPMTestData.proxyAddress, port: 40001)
        case 49154: return TCPEndpoint(address: EPMTestData.proxyAddress, port: 40002)
        case 135: return TCPEndpoint(address: EPMTestData.proxyAddress, port: 135)
        default: return nil
        }
    }

    /// `response` with every ncacn_ip_tcp tower's endpoint replaced the way `rewrite` should.
    static func expectedRewrite(of response: EPMLookupResponse) -> EPMLookupResponse {
        var expected = response
        for index in expected.entries.indices {
            guard var tower = expected.entries[index].tower, tower.isNCACNIPTCP, let port = tower.tcpPort else {
                continue
            }
            let address = tower.ipv4Address ?? .any
            let replacement =
                proxyEndpoint(
                    EPMTowerEndpoint(interface: tower.interface, endpoint: TCPEndpoint(address: address, port: port))
                )
                ?? TCPEndpoint(address: .any, port: 0)
            for floorIndex in tower.floors.indices {
                switch tower.floors[floorIndex].protocolIdentifier {
                case 0x07:
                    tower.floors[floorIndex].rhs = [UInt8(replacement.port >> 8), UInt8(replacement.port & 0xff)]
                case 0x09: tower.floors[floorIndex].rhs = replacement.address.octets
                default: break
                }
            }
            expected.entries[index].tower = tower
        }
        return expected
    }

    // MARK: - ept_map

    @Test func singleFragmentCapturedMapReplyIsRewritten() throws {
        let fragments = try EPMTestData.pdus(fromFixture: "ept_map_response")
        var seen: [EPMTowerEndpoint] = []
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr32,
            limits: WireLimits()
        ) {
            seen.append($0)
            return TCPEndpoint(address: EPMTestData.proxyAddress, port: 40001)
        }
        #expect(
            seen == [EPMTowerEndpoint(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 49154))]
        )
        #expect(result.rewrittenTowers == 1)
        #expect(result.redactedTowers == 0)
        #expect(result.status.rawValue == 0)
        #expect(result.fragments.count == 1)
        let original = Array(fragments[0].bytes.readableBytesView)
        let patched = Array(result.fragments[0].bytes.readableBytesView)
        #expect(patched.count == original.count)
        #expect(result.fragments[0].header == fragments[0].header)
        // Port at stub 48+64 = PDU 136; IPv4 at stub 48+71 = PDU 143. Nothing else changes.
        #expect(patched[136...137] == [0x9c, 0x41])
        #expect(patched[143...146] == [192, 0, 2, 1])
        for index in original.indices where !(136...137).contains(index) && !(143...146).contains(index) {
            #expect(patched[index] == original[index], "byte \(index) changed")
        }
        var stub = try EPMTestData.concatenatedStub(result.fragments)
        let reparsed = try stub.readEPMMapResponse(syntax: .ndr32)
        #expect(reparsed.towers.first??.tcpPort == 40001)
        #expect(reparsed.towers.first??.ipv4Address == EPMTestData.proxyAddress)
        // The input fragments are not modified.
        #expect(Array(fragments[0].bytes.readableBytesView) == original)
    }

    @Test func redactionWritesPortZeroAndAnyAddress() throws {
        let response = EPMMapResponse(
            maxTowers: 4,
            towers: [
                .ncacnIPTCP(
                    interface: EPMTestData.samr,
                    endpoint: TCPEndpoint(address: EPMTestData.serverAddress, port: 49152)
                )
            ],
            status: RPCStatus(rawValue: 0)
        )
        let stub = EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr32) }
        let fragments = try EPMTestData.responseFragments(stub: stub)
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr32,
            limits: WireLimits()
        ) { _ in
            nil
        }
        #expect(result.rewrittenTowers == 0)
        #expect(result.redactedTowers == 1)
        var patched = try EPMTestData.concatenatedStub(result.fragments)
        let parsed = try patched.readEPMMapResponse(syntax: .ndr32)
        let tower = try #require(parsed.towers.first ?? nil)
        #expect(tower.tcpPort == 0)
        #expect(tower.ipv4Address == .any)
        #expect(tower.interface == EPMTestData.samr)
    }

    @Test func ndr64FixtureMapReplyIsRewritten() throws {
        let fragments = try EPMTestData.pdus(fromFixture: "ndr64_ept_map_response")
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr64,
            limits: WireLimits()
        ) {
            #expect($0.endpoint == TCPEndpoint(address: EPMTestData.serverAddress, port: 49154))
            #expect($0.interface == EPMTestData.samr)
            return TCPEndpoint(address: EPMTestData.proxyAddress, port: 40002)
        }
        #expect(result.rewrittenTowers == 1)
        let patched = Array(result.fragments[0].bytes.readableBytesView)
        // Port at stub 132-133 and IPv4 at stub 139-142 (see the fixture's comments); stub starts at 24.
        #expect(patched[156...157] == [0x9c, 0x42])
        #expect(patched[163...166] == [192, 0, 2, 1])
        var stub = try EPMTestData.concatenatedStub(result.fragments)
        let parsed = try stub.readEPMMapResponse(syntax: .ndr64)
        #expect(parsed.towers.first??.tcpPort == 40002)
        // Read as NDR32, the same bytes are malformed: the syntax matters.
        #expect(throws: RPCWireError.self) {
            try EPMReplyRewriter.rewrite(fragments: fragments, operation: .map, syntax: .ndr32, limits: WireLimits()) {
                _ in nil
            }
        }
    }

    @Test func notRegisteredReplyPassesUntouched() throws {
        let fragments = try EPMTestData.pdus(fromFixture: "ept_map_not_registered_response")
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr32,
            limits: WireLimits()
        ) { _ in
            Issue.record("no tower to ask about")
            return nil
        }
        #expect(result.status == .endpointNotRegistered)
        #expect(result.fragments == fragments)
        #expect(result.rewrittenTowers == 0 && result.redactedTowers == 0)
    }

    // MARK: - ept_lookup, fragmented

    @Test(arguments: [NDRSyntax.ndr32, .ndr64])
    func lookupReplySplitAtEveryPointIsRewrittenIdentically(syntax: NDRSyntax) throws {
        let response = EPMTestData.mixedLookupResponse()
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: syntax) }
        let expectedStub = EPMTestData.stub {
            $0.writeEPMLookupResponse(Self.expectedRewrite(of: response), syntax: syntax)
        }

        let whole = try EPMReplyRewriter.rewrite(
            fragments: try EPMTestData.responseFragments(stub: stub),
            operation: .lookup,
            syntax: syntax,
            limits: WireLimits(),
            endpointFor: Self.proxyEndpoint
        )
        // samr 49152, EPM 135, lsarpc 49154 rewritten; drsuapi 49153 (no IP floor) redacted.
        #expect(whole.rewrittenTowers == 3)
        #expect(whole.redactedTowers == 1)
        let wholeStub = try EPMTestData.concatenatedStub(whole.fragments)
        #expect(wholeStub == expectedStub)

        let length = stub.readableBytes
        for cut in 0...length {
            for cuts in [[cut], cut + 1 <= length ? [cut, cut + 1] : [cut]] {
                let fragments = try EPMTestData.responseFragments(stub: stub, cuts: cuts)
                let result = try EPMReplyRewriter.rewrite(
                    fragments: fragments,
                    operation: .lookup,
                    syntax: syntax,
                    limits: WireLimits(),
                    endpointFor: Self.proxyEndpoint
                )
                #expect(result.rewrittenTowers == 3 && result.redactedTowers == 1)
                #expect(result.fragments.count == fragments.count)
                for (patched, original) in zip(result.fragments, fragments) {
                    #expect(patched.header == original.header)
                    #expect(patched.bytes.readableBytes == original.bytes.readableBytes)
                }
                let patchedStub = try EPMTestData.concatenatedStub(result.fragments)
                #expect(patchedStub == expectedStub, "cuts \(cuts)")
            }
        }
    }

    @Test func epmOwnTowerIsDecidedByTheClosure() throws {
        let response = EPMMapResponse(
            maxTowers: 1,
            towers: [
                .ncacnIPTCP(
                    interface: .endpointMapper,
                    endpoint: TCPEndpoint(address: EPMTestData.serverAddress, port: 135)
                )
            ],
            status: RPCStatus(rawValue: 0)
        )
        let fragments = try EPMTestData.responseFragments(
            stub: EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr32) }
        )
        var asked: [EPMTowerEndpoint] = []
        let kept = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr32,
            limits: WireLimits()
        ) {
            asked.append($0)
            return $0.endpoint
        }
        #expect(
            asked == [
                EPMTowerEndpoint(
                    interface: .endpointMapper,
                    endpoint: TCPEndpoint(address: EPMTestData.serverAddress, port: 135)
                )
            ]
        )
        #expect(kept.fragments == fragments)
        #expect(kept.rewrittenTowers == 1)
        let hidden = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr32,
            limits: WireLimits()
        ) { _ in nil }
        var stub = try EPMTestData.concatenatedStub(hidden.fragments)
        #expect(try stub.readEPMMapResponse(syntax: .ndr32).towers.first??.tcpPort == 0)
    }

    @Test func repeatedTCPAndIPFloorsAreAllPatched() throws {
        var tower = ProtocolTower.ncacnIPTCP(
            interface: EPMTestData.samr,
            endpoint: TCPEndpoint(address: EPMTestData.serverAddress, port: 49152)
        )
        tower.floors.append(TowerFloor(lhs: [0x07], rhs: [0xc0, 0x01]))
        tower.floors.append(TowerFloor(lhs: [0x09], rhs: [10, 99, 0, 3]))
        let response = EPMMapResponse(maxTowers: 1, towers: [tower], status: RPCStatus(rawValue: 0))
        let fragments = try EPMTestData.responseFragments(
            stub: EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr32) }
        )
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr32,
            limits: WireLimits()
        ) { _ in
            TCPEndpoint(address: EPMTestData.proxyAddress, port: 40001)
        }
        var stub = try EPMTestData.concatenatedStub(result.fragments)
        let patched = try #require(try stub.readEPMMapResponse(syntax: .ndr32).towers.first ?? nil)
        let ports = patched.floors.filter { $0.protocolIdentifier == 0x07 }.map(\.rhs)
        let addresses = patched.floors.filter { $0.protocolIdentifier == 0x09 }.map(\.rhs)
        #expect(ports == [[0x9c, 0x41], [0x9c, 0x41]])
        #expect(addresses == [[192, 0, 2, 1], [192, 0, 2, 1]])
    }

    @Test func bigEndianNDR32ReplyIsRewritten() throws {
        let response = EPMTestData.mixedLookupResponse()
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr32, endianness: .big) }
        let fragments = try EPMTestData.responseFragments(stub: stub, cuts: [101], drep: .bigEndian)
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .lookup,
            syntax: .ndr32,
            limits: WireLimits(),
            endpointFor: Self.proxyEndpoint
        )
        #expect(result.rewrittenTowers == 3 && result.redactedTowers == 1)
        let expected = EPMTestData.stub {
            $0.writeEPMLookupResponse(Self.expectedRewrite(of: response), syntax: .ndr32, endianness: .big)
        }
        #expect(try EPMTestData.concatenatedStub(result.fragments) == expected)
    }

    // MARK: - Captured multi-fragment lookup

    @Test(arguments: ["ept_lookup_response_stream", "ept_lookup_4280_response_stream"])
    func capturedMultiFragmentLookupIsRewrittenCompletely(name: String) throws {
        let fragments = try EPMTestData.pdus(fromFixture: name)
        #expect(fragments.count > 1)
        var originalStub = try EPMTestData.concatenatedStub(fragments)
        let original = try originalStub.readEPMLookupResponse(syntax: .ndr32)
        let tcpCount = original.entries.compactMap(\.tower).filter(\.isNCACNIPTCP).count
        #expect(tcpCount > 0)

        var next: UInt16 = 40000
        var mapping: [UInt16: UInt16] = [:]
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .lookup,
            syntax: .ndr32,
            limits: WireLimits()
        ) {
            tower in
            #expect((49152...49154).contains(tower.endpoint.port) || tower.endpoint.port == 135)
            if let port = mapping[tower.endpoint.port] {
                return TCPEndpoint(address: EPMTestData.proxyAddress, port: port)
            }
            next += 1
            mapping[tower.endpoint.port] = next
            return TCPEndpoint(address: EPMTestData.proxyAddress, port: next)
        }
        #expect(result.rewrittenTowers == tcpCount)
        #expect(result.redactedTowers == 0)
        #expect(result.status.rawValue == 0)
        #expect(
            zip(result.fragments, fragments).allSatisfy {
                $0.header == $1.header && $0.bytes.readableBytes == $1.bytes.readableBytes
            }
        )

        var patchedStub = try EPMTestData.concatenatedStub(result.fragments)
        let stubBytes = Array(patchedStub.readableBytesView)
        let patched = try patchedStub.readEPMLookupResponse(syntax: .ndr32)
        #expect(patched.entries.count == original.entries.count)
        for (after, before) in zip(patched.entries, original.entries) {
            #expect(after.annotation == before.annotation)
            #expect(after.object == before.object)
            guard let beforeTower = before.tower, let afterTower = after.tower else {
                #expect(after.tower == nil && before.tower == nil)
                continue
            }
            if beforeTower.isNCACNIPTCP {
                let port = try #require(beforeTower.tcpPort)
                #expect(afterTower.tcpPort == mapping[port])
                #expect(afterTower.ipv4Address == EPMTestData.proxyAddress)
                #expect(afterTower.interface == beforeTower.interface)
            } else {
                #expect(afterTower == beforeTower)
            }
        }
        // No original Samba port remains at any tower port position of the patched stub.
        for portOffset in Self.tcpPortOffsets(in: stubBytes) {
            let value = UInt16(stubBytes[portOffset]) << 8 | UInt16(stubBytes[portOffset + 1])
            #expect(!(49152...49154).contains(value), "port \(value) left at stub offset \(portOffset)")
        }
        #expect(Self.tcpPortOffsets(in: stubBytes).count == tcpCount)
    }

    /// Stub offsets of TCP floor ports, found by the floor pattern `01 00 07 02 00`.
    static func tcpPortOffsets(in bytes: [UInt8]) -> [Int] {
        guard bytes.count >= 7 else { return [] }
        return (0...(bytes.count - 7)).filter { bytes[$0..<($0 + 5)] == [1, 0, 7, 2, 0] }.map { $0 + 5 }
    }

    // MARK: - Malformed input

    private func expectRewriteError(
        _ code: RPCWireError.Code,
        fragments: [RawPDU],
        operation: EPMOperation = .lookup,
        syntax: NDRSyntax = .ndr32,
        limits: WireLimits = WireLimits(),
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        var called = false
        EPMMessagesTests.expectCode(code, sourceLocation: sourceLocation) {
            _ = try EPMReplyRewriter.rewrite(fragments: fragments, operation: operation, syntax: syntax, limits: limits)
            { _ in
                called = true
                return nil
            }
        }
        #expect(!called, "the closure must not run for a malformed reply", sourceLocation: sourceLocation)
    }

    @Test func sequenceErrorsAreRefused() throws {
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(EPMTestData.mixedLookupResponse(), syntax: .ndr32) }
        let good = try EPMTestData.responseFragments(stub: stub, cuts: [100, 200])
        expectRewriteError(.fragmentSequence, fragments: [])
        // Missing FIRST_FRAG, missing LAST_FRAG.
        expectRewriteError(.fragmentSequence, fragments: Array(good.dropFirst()))
        expectRewriteError(.fragmentSequence, fragments: Array(good.dropLast()))
        // LAST_FRAG or FIRST_FRAG in the middle.
        var middleLast = good
        middleLast[1] = try EPMTestData.rawPDU(stub: Self.stubBytes(good[1]), flags: .lastFragment)
        expectRewriteError(.fragmentSequence, fragments: middleLast)
        var middleFirst = good
        middleFirst[1] = try EPMTestData.rawPDU(stub: Self.stubBytes(good[1]), flags: .firstFragment)
        expectRewriteError(.fragmentSequence, fragments: middleFirst)
        // Mixed call ids and data representations.
        var mixed = good
        mixed[2] = try EPMTestData.rawPDU(stub: Self.stubBytes(good[2]), flags: .lastFragment, callID: 8)
        expectRewriteError(.fragmentSequence, fragments: mixed)
        var mixedDrep = good
        mixedDrep[2] = try EPMTestData.rawPDU(stub: Self.stubBytes(good[2]), flags: .lastFragment, drep: .bigEndian)
        expectRewriteError(.fragmentSequence, fragments: mixedDrep)
        // Wrong packet type.
        let request = try EPMTestData.rawPDU(stub: Array(stub.readableBytesView), packetType: .request)
        expectRewriteError(.unexpectedPacketType, fragments: [request])
        let fault = try EPMTestData.rawPDU(stub: [], packetType: .fault)
        expectRewriteError(.unexpectedPacketType, fragments: [fault])
        // An operation with no towers.
        expectRewriteError(.invalidNDR, fragments: good, operation: .lookupHandleFree)
        // The good sequence passes.
        _ = try EPMReplyRewriter.rewrite(fragments: good, operation: .lookup, syntax: .ndr32, limits: WireLimits()) {
            _ in nil
        }
    }

    @Test func reassemblyCapIsEnforced() throws {
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(EPMTestData.mixedLookupResponse(), syntax: .ndr32) }
        let fragments = try EPMTestData.responseFragments(stub: stub, cuts: [300])
        expectRewriteError(
            .reassemblyTooLarge,
            fragments: fragments,
            limits: WireLimits(maximumReassembledStubLength: stub.readableBytes - 1)
        )
        _ = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .lookup,
            syntax: .ndr32,
            limits: WireLimits(maximumReassembledStubLength: stub.readableBytes)
        ) { _ in nil }
        expectRewriteError(.reassemblyTooLarge, fragments: fragments, limits: WireLimits(maximumFragmentsPerCall: 1))
    }

    @Test func towersPastThePDUEndAreRefused() throws {
        let response = EPMMapResponse(
            maxTowers: 1,
            towers: [.ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 49152))],
            status: RPCStatus(rawValue: 0)
        )
        let stub = Array(EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr32) }.readableBytesView)
        // Cut inside the tower: tower_length now runs past the end of the (last) PDU.
        expectRewriteError(
            .invalidNDR,
            fragments: try EPMTestData.responseFragments(stub: ByteBuffer(bytes: stub.prefix(100))),
            operation: .map
        )
        // A floor whose rhs length runs past the tower end (rhs_len of the IP floor patched to 9).
        var corrupt = stub
        corrupt[48 + 69] = 9
        expectRewriteError(
            .invalidTower,
            fragments: try EPMTestData.responseFragments(stub: ByteBuffer(bytes: corrupt)),
            operation: .map
        )
        // A TCP floor whose port is not two bytes.
        var tower = ProtocolTower.ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 1))
        tower.floors[3].rhs = [1, 2, 3]
        // A valid tower first: the closure must not run for it either, since it may allocate ports.
        let good = ProtocolTower.ncacnIPTCP(
            interface: EPMTestData.lsarpc,
            endpoint: TCPEndpoint(address: .any, port: 2)
        )
        let odd = EPMMapResponse(maxTowers: 2, towers: [good, tower], status: RPCStatus(rawValue: 0))
        expectRewriteError(
            .invalidTower,
            fragments: try EPMTestData.responseFragments(
                stub: EPMTestData.stub { $0.writeEPMMapResponse(odd, syntax: .ndr32) }
            ),
            operation: .map
        )
    }

    @Test func tenThousandTowersAreRefused() throws {
        let tower = ProtocolTower.ncacnIPTCP(
            interface: EPMTestData.samr,
            endpoint: TCPEndpoint(address: .any, port: 49152)
        )
        let response = EPMMapResponse(
            maxTowers: 10_000,
            towers: Array(repeating: tower, count: 10_000),
            status: RPCStatus(rawValue: 0)
        )
        let stub = EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr32) }
        let cuts = Array(stride(from: 5000, to: stub.readableBytes, by: 5000))
        let fragments = try EPMTestData.responseFragments(stub: stub, cuts: cuts)
        expectRewriteError(.invalidNDR, fragments: fragments, operation: .map)
        // Within raised limits the same reply is accepted and all towers are rewritten.
        let result = try EPMReplyRewriter.rewrite(
            fragments: fragments,
            operation: .map,
            syntax: .ndr32,
            limits: WireLimits(maximumTowers: 10_000)
        ) { _ in TCPEndpoint(address: .any, port: 1) }
        #expect(result.rewrittenTowers == 10_000)
    }

    @Test func closureErrorsPropagateWithoutOutput() throws {
        struct Refused: Error {}
        let fragments = try EPMTestData.pdus(fromFixture: "ept_map_response")
        #expect(throws: Refused.self) {
            try EPMReplyRewriter.rewrite(fragments: fragments, operation: .map, syntax: .ndr32, limits: WireLimits()) {
                _ in
                throw Refused()
            }
        }
    }

    @Test func mutatedCapturedRepliesNeverTrapAndNeverLeak() throws {
        let fragments = try EPMTestData.pdus(fromFixture: "ept_lookup_response_stream")
        let stubStart = 24
        var random = SplitMix64(seed: 0x5eed_e9a3)
        var accepted = 0
        for round in 0..<1000 {
            var mutated = fragments
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let index = Int(random.next() % UInt64(mutated.count))
                let length = mutated[index].bytes.readableBytes - stubStart
                guard length > 0 else { continue }
                let offset = stubStart + Int(random.next() % UInt64(length))
                mutated[index].bytes.setInteger(UInt8(truncatingIfNeeded: random.next()), at: offset)
            }
            do {
                let result = try EPMReplyRewriter.rewrite(
                    fragments: mutated,
                    operation: .lookup,
                    syntax: .ndr32,
                    limits: WireLimits()
                ) { _ in TCPEndpoint(address: EPMTestData.proxyAddress, port: 40000) }
                accepted += 1
                var stub = try EPMTestData.concatenatedStub(result.fragments)
                let parsed = try stub.readEPMLookupResponse(syntax: .ndr32)
                for tower in parsed.entries.compactMap(\.tower) where tower.isNCACNIPTCP {
                    for floor in tower.floors where floor.protocolIdentifier == 0x07 {
                        #expect(floor.rhs == [0x9c, 0x40], "round \(round): TCP floor left unpatched")
                    }
                    for floor in tower.floors where floor.protocolIdentifier == 0x09 {
                        #expect(floor.rhs == [192, 0, 2, 1], "round \(round): IP floor left unpatched")
                    }
                }
            } catch is RPCWireError {
                continue
            }
        }
        // Most single-byte changes land in UUIDs, annotations or padding and keep the reply valid.
        #expect(accepted > 0)
    }

    static func stubBytes(_ pdu: RawPDU) throws -> [UInt8] {
        Array(try EPMTestData.concatenatedStub([pdu]).readableBytesView)
    }

    // MARK: - FragmentAssembler

    @Test func assemblerCollectsCapturedFragments() throws {
        let fragments = try EPMTestData.pdus(fromFixture: "ept_lookup_response_stream")
        var assembler = FragmentAssembler(limits: WireLimits())
        for fragment in fragments.dropLast() {
            #expect(try assembler.append(fragment) == nil)
            #expect(assembler.isCollecting)
            #expect(assembler.callID == 1)
        }
        let complete = try assembler.append(try #require(fragments.last))
        #expect(complete == fragments)
        #expect(!assembler.isCollecting)
        #expect(assembler.bufferedStubBytes == 0)
        // A single-fragment call comes straight back.
        let single = try EPMTestData.pdus(fromFixture: "ept_map_response")
        #expect(try assembler.append(single[0]) == single)
    }

    @Test func assemblerEnforcesSequenceRules() throws {
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(EPMTestData.mixedLookupResponse(), syntax: .ndr32) }
        let good = try EPMTestData.responseFragments(stub: stub, cuts: [100, 200])

        var assembler = FragmentAssembler()
        // No FIRST_FRAG at the start.
        EPMMessagesTests.expectCode(.fragmentSequence) { _ = try assembler.append(good[1]) }
        #expect(!assembler.isCollecting)
        // Interleaved call id.
        #expect(try assembler.append(good[0]) == nil)
        let other = try EPMTestData.rawPDU(stub: [1, 2, 3, 4], flags: .lastFragment, callID: 99)
        EPMMessagesTests.expectCode(.fragmentSequence) { _ = try assembler.append(other) }
        #expect(!assembler.isCollecting, "an error drops the partial call")
        // FIRST_FRAG repeated.
        #expect(try assembler.append(good[0]) == nil)
        EPMMessagesTests.expectCode(.fragmentSequence) { _ = try assembler.append(good[0]) }
        // Packet type change within a call.
        #expect(try assembler.append(good[0]) == nil)
        let request = try EPMTestData.rawPDU(stub: [0], flags: .lastFragment, packetType: .request)
        EPMMessagesTests.expectCode(.fragmentSequence) { _ = try assembler.append(request) }
        // Non-call PDUs.
        var bindBytes = try TestPDUs.windowsBind().serialized()
        let bind = try #require(try bindBytes.readRawPDU(limits: WireLimits()))
        EPMMessagesTests.expectCode(.unexpectedPacketType) { _ = try assembler.append(bind) }
        // After errors, a clean sequence still works.
        #expect(try assembler.append(good[0]) == nil)
        #expect(try assembler.append(good[1]) == nil)
        #expect(try assembler.append(good[2]) == good)
        // Reset drops a partial call.
        #expect(try assembler.append(good[0]) == nil)
        assembler.reset()
        EPMMessagesTests.expectCode(.fragmentSequence) { _ = try assembler.append(good[1]) }
    }

    @Test func assemblerEnforcesCaps() throws {
        let stub = EPMTestData.stub { $0.writeEPMLookupResponse(EPMTestData.mixedLookupResponse(), syntax: .ndr32) }
        let good = try EPMTestData.responseFragments(stub: stub, cuts: [100, 200])

        var small = FragmentAssembler(limits: WireLimits(maximumReassembledStubLength: 199))
        #expect(try small.append(good[0]) == nil)
        EPMMessagesTests.expectCode(.reassemblyTooLarge) { _ = try small.append(good[1]) }
        #expect(!small.isCollecting)

        var exact = FragmentAssembler(limits: WireLimits(maximumReassembledStubLength: stub.readableBytes))
        #expect(try exact.append(good[0]) == nil)
        #expect(try exact.append(good[1]) == nil)
        #expect(try exact.append(good[2]) == good)

        // Empty fragments still count against the fragment cap.
        var few = FragmentAssembler(limits: WireLimits(maximumFragmentsPerCall: 3))
        let empty = try EPMTestData.rawPDU(stub: [], flags: [])
        #expect(try few.append(good[0]) == nil)
        #expect(try few.append(empty) == nil)
        #expect(try few.append(empty) == nil)
        EPMMessagesTests.expectCode(.reassemblyTooLarge) { _ = try few.append(empty) }

        // Auth padding and verifier do not count as stub.
        let signed = try EPMTestData.rawPDU(
            stub: Array(repeating: 7, count: 10),
            auth: TestPDUs.ntlmVerifier(padding: 6)
        )
        var tight = FragmentAssembler(limits: WireLimits(maximumReassembledStubLength: 10))
        #expect(try tight.append(signed)?.count == 1)
    }
}

/// A small deterministic generator for mutation tests (SplitMix64).
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9e37_79b9_7f4a_7c15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

import NIOCore
import RPCWire
import Testing

/// Shared builders for the endpoint-mapper tests.
enum EPMTestData {
    static let samr = SyntaxID(uuid: DCEUUID("12345778-1234-abcd-ef00-0123456789ac")!, majorVersion: 1, minorVersion: 0)
    static let lsarpc = SyntaxID(
        uuid: DCEUUID("12345778-1234-abcd-ef00-0123456789ab")!,
        majorVersion: 0,
        minorVersion: 0
    )
    static let drsuapi = SyntaxID(
        uuid: DCEUUID("e3514235-4b06-11d1-ab04-00c04fc2dcd2")!,
        majorVersion: 4,
        minorVersion: 0
    )
    static let serverAddress = IPv4Address(10, 99, 0, 2)
    static let proxyAddress = IPv4Address(192, 0, 2, 1)
    static let handle = EPMContextHandle(attributes: 0, uuid: DCEUUID("3bac5a62-9e54-4baf-8c4c-0683ec76b2f5")!)

    /// An ncacn_np tower: interface, NDR, RPC-CO, named pipe, NetBIOS host.
    static func namedPipeTower(_ interface: SyntaxID, pipe: String, host: String) -> ProtocolTower {
        ProtocolTower(floors: [
            ProtocolTower.uuidFloor(interface),
            ProtocolTower.uuidFloor(.ndr),
            TowerFloor(lhs: [0x0b], rhs: [0, 0]),
            TowerFloor(lhs: [0x0f], rhs: Array(pipe.utf8) + [0]),
            TowerFloor(lhs: [0x11], rhs: Array(host.utf8) + [0]),
        ])
    }

    /// An ncalrpc tower: interface, NDR, local RPC, endpoint name.
    static func localTower(_ interface: SyntaxID, name: String) -> ProtocolTower {
        ProtocolTower(floors: [
            ProtocolTower.uuidFloor(interface),
            ProtocolTower.uuidFloor(.ndr),
            TowerFloor(lhs: [0x0c], rhs: [0, 0]),
            TowerFloor(lhs: [0x10], rhs: Array(name.utf8) + [0]),
        ])
    }

    /// A TCP tower without an IP floor.
    static func tcpTowerWithoutIP(_ interface: SyntaxID, port: UInt16) -> ProtocolTower {
        var tower = ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: .any, port: port))
        tower.floors.removeLast()
        return tower
    }

    static func annotation(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }

    /// A lookup reply mixing every tower kind: TCP with IP, named pipe, the EPM's own 135 tower, a
    /// null tower, TCP without IP floor, ncalrpc, and a second TCP tower.
    static func mixedLookupResponse() -> EPMLookupResponse {
        EPMLookupResponse(
            entryHandle: handle,
            maxEntries: 500,
            entries: [
                EPMEntry(
                    object: .zero,
                    tower: .ncacnIPTCP(interface: samr, endpoint: TCPEndpoint(address: serverAddress, port: 49152)),
                    annotation: annotation("samr")
                ),
                EPMEntry(
                    object: .zero,
                    tower: namedPipeTower(lsarpc, pipe: "\\PIPE\\lsass", host: "\\\\DC1"),
                    annotation: annotation("lsarpc")
                ),
                EPMEntry(
                    object: .zero,
                    tower: .ncacnIPTCP(
                        interface: .endpointMapper,
                        endpoint: TCPEndpoint(address: serverAddress, port: 135)
                    ),
                    annotation: annotation("epmapper")
                ),
                EPMEntry(
                    object: DCEUUID("00000000-0000-0000-0000-000000000001")!,
                    tower: nil,
                    annotation: annotation("")
                ),
                EPMEntry(
                    object: .zero,
                    tower: tcpTowerWithoutIP(drsuapi, port: 49153),
                    annotation: annotation("drsuapi")
                ),
                EPMEntry(
                    object: .zero,
                    tower: localTower(samr, name: "LRPC-0123456789abcdef"),
                    annotation: annotation("samr lrpc")
                ),
                EPMEntry(
                    object: .zero,
                    tower: .ncacnIPTCP(interface: lsarpc, endpoint: TCPEndpoint(address: serverAddress, port: 49154)),
                    annotation: []
                ),
            ],
            status: RPCStatus(rawValue: 0)
        )
    }

    static func stub(_ write: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var buffer = ByteBuffer()
        write(&buffer)
        return buffer
    }

    /// Response PDUs carrying `stub`, cut at `cuts` (stub offsets, ascending).
    static func responseFragments(
        stub: ByteBuffer,
        cuts: [Int] = [],
        callID: UInt32 = 7,
        drep: DataRepresentation = .littleEndian
    ) throws -> [RawPDU] {
        let bytes = Array(stub.readableBytesView)
        let bounds = [0] + cuts + [bytes.count]
        var pdus: [RawPDU] = []
        for index in 0..<(bounds.count - 1) {
            var flags: PFCFlags = []
            if index == 0 { flags.insert(.firstFragment) }
            if index == bounds.count - 2 { flags.insert(.lastFragment) }
            let piece = Array(bytes[bounds[index]..<bounds[index + 1]])
            pdus.append(
                try rawPDU(
                    stub: piece,
                    flags: flags,
                    callID: callID,
                    allocationHint: UInt32(bytes.count - bounds[index]),
                    drep: drep
                )
            )
        }
        return pdus
    }

    static func rawPDU(
        stub: [UInt8],
        flags: PFCFlags = .singleFragment,
        callID: UInt32 = 7,
        allocationHint: UInt32 = 0,
        drep: DataRepresentation = .littleEndian,
        packetType: PacketType = .response,
        auth: AuthVerifier? = nil
    ) throws -> RawPDU {
        let body: PDU.Body
        switch packetType {
        case .request:
            body = .request(
                RequestPDU(allocationHint: allocationHint, contextID: 0, opnum: 3, stub: ByteBuffer(bytes: stub))
            )
        case .fault:
            body = .fault(FaultPDU(contextID: 0, status: .operationRangeError))
        default:
            body = .response(ResponsePDU(allocationHint: allocationHint, contextID: 0, stub: ByteBuffer(bytes: stub)))
        }
        let pdu = PDU(
            header: PDUHeader(packetType: packetType, flags: flags, dataRepresentation: drep, callID: callID),
            body: body,
            authVerifier: auth
        )
        var buffer = try pdu.serialized()
        return try #require(try buffer.readRawPDU(limits: WireLimits(maximumFragmentLength: 65535)))
    }

    /// The stub bytes of `fragments`, concatenated (no auth verifier expected).
    static func concatenatedStub(_ fragments: [RawPDU]) throws -> ByteBuffer {
        var stub = ByteBuffer()
        for fragment in fragments {
            guard
                case .response(let response) = try fragment.parse(limits: WireLimits(maximumFragmentLength: 65535)).body
            else {
                throw HexError()
            }
            var piece = response.stub
            stub.writeBuffer(&piece)
        }
        return stub
    }

    /// The PDUs of a fixture holding several back to back.
    static func pdus(fromFixture name: String) throws -> [RawPDU] {
        var buffer = try Fixture.buffer(name)
        var pdus: [RawPDU] = []
        while let pdu = try buffer.readRawPDU(limits: WireLimits()) {
            pdus.append(pdu)
        }
        #expect(buffer.readableBytes == 0)
        return pdus
    }

    static func stub(ofFixture name: String) throws -> ByteBuffer {
        try concatenatedStub(try pdus(fromFixture: name))
    }
}

@Suite("Endpoint mapper messages")
struct EPMMessagesTests {
    // MARK: - Constants

    @Test func endpointMapperSyntaxAndOpnums() {
        #expect(SyntaxID.endpointMapper.description == "e1af8308-5d1f-11c9-91a4-08002b14a0fa@3.0")
        #expect(EPMOperation.map.rawValue == 3)
        #expect(EPMOperation.lookup.rawValue == 2)
        #expect(EPMOperation(rawValue: 6) == .managementDelete)
        #expect(EPMOperation(rawValue: 7) == nil)
        #expect(EPMContextHandle.null == EPMContextHandle(attributes: 0, uuid: .zero))
        #expect(NDRSyntax(transferSyntax: .ndr) == .ndr32)
        #expect(NDRSyntax(transferSyntax: .ndr64) == .ndr64)
        #expect(NDRSyntax(transferSyntax: EPMTestData.samr) == nil)
    }

    // MARK: - ept_map request

    @Test(arguments: [NDRSyntax.ndr32, .ndr64], [Endianness.little, .big])
    func mapRequestRoundTrips(syntax: NDRSyntax, endianness: Endianness) throws {
        if syntax == .ndr64, endianness == .big { return }
        let request = EPMMapRequest(
            object: DCEUUID("01020304-0506-0708-090a-0b0c0d0e0f10")!,
            tower: .ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 0)),
            entryHandle: EPMTestData.handle,
            maxTowers: 4
        )
        var buffer = EPMTestData.stub { $0.writeEPMMapRequest(request, syntax: syntax, endianness: endianness) }
        let bytes = buffer
        var parsed = try buffer.readEPMMapRequest(syntax: syntax, endianness: endianness)
        #expect(buffer.readableBytes == 0)
        #expect(parsed.object == request.object)
        #expect(parsed.tower == request.tower)
        #expect(parsed.entryHandle == request.entryHandle)
        #expect(parsed.maxTowers == 4)
        #expect(parsed.objectReferent == 1)
        #expect(parsed.towerReferent == 2)
        #expect(EPMTestData.stub { $0.writeEPMMapRequest(parsed, syntax: syntax, endianness: endianness) } == bytes)
        parsed.padding = []
        #expect(EPMTestData.stub { $0.writeEPMMapRequest(parsed, syntax: syntax, endianness: endianness) } == bytes)
    }

    @Test func mapRequestNDR32Layout() throws {
        let request = EPMMapRequest(
            object: nil,
            tower: .ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 0)),
            maxTowers: 1
        )
        let bytes = EPMTestData.stub { $0.writeEPMMapRequest(request, syntax: .ndr32) }
        // null object referent, tower referent 2, conformance 75, tower_length 75, tower, 1 pad, handle, max.
        #expect(bytes.readableBytes == 4 + 4 + 8 + 75 + 1 + 20 + 4)
        #expect(bytes.getInteger(at: 0, endianness: .little, as: UInt32.self) == 0)
        #expect(bytes.getInteger(at: 4, endianness: .little, as: UInt32.self) == 2)
        #expect(bytes.getInteger(at: 8, endianness: .little, as: UInt32.self) == 75)
        #expect(bytes.getInteger(at: 12, endianness: .little, as: UInt32.self) == 75)
        #expect(bytes.getInteger(at: 112, endianness: .little, as: UInt32.self) == 1)
    }

    @Test func mapRequestNDR64Layout() throws {
        let request = EPMMapRequest(
            object: .zero,
            tower: .ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 0)),
            maxTowers: 4
        )
        let bytes = EPMTestData.stub { $0.writeEPMMapRequest(request, syntax: .ndr64) }
        // 0 object referent u64, 8 UUID, 24 tower referent u64, 32 conformance u64, 40 tower_length u32,
        // 44 tower (75), 119 pad 1, 120 handle, 140 max_towers.
        #expect(bytes.getInteger(at: 0, endianness: .little, as: UInt64.self) == 1)
        #expect(bytes.getInteger(at: 24, endianness: .little, as: UInt64.self) == 2)
        #expect(bytes.getInteger(at: 32, endianness: .little, as: UInt64.self) == 75)
        #expect(bytes.getInteger(at: 40, endianness: .little, as: UInt32.self) == 75)
        #expect(bytes.getInteger(at: 44, endianness: .little, as: UInt16.self) == 5)
        #expect(bytes.getInteger(at: 140, endianness: .little, as: UInt32.self) == 4)
        #expect(bytes.readableBytes == 144)
    }

    @Test func capturedImpacketMapRequestRoundTripsByteForByte() throws {
        let stub = try Self.requestStub("ept_map_request")
        var buffer = stub
        let request = try buffer.readEPMMapRequest(syntax: .ndr32)
        #expect(request.object == .zero)
        #expect(request.objectReferent == 1)
        #expect(request.towerReferent == 2)
        #expect(request.tower?.interface == EPMTestData.samr)
        #expect(request.tower?.transferSyntax == .ndr)
        #expect(request.tower?.isNCACNIPTCP == true)
        #expect(request.entryHandle == .null)
        // The fixture's comment says max_towers 4, but impacket 0.10's hept_map sends 1 on the wire.
        #expect(request.maxTowers == 1)
        // impacket pads with 0xab: kept so the stub re-serializes exactly.
        #expect(request.padding == [0xab])
        #expect(EPMTestData.stub { $0.writeEPMMapRequest(request, syntax: .ndr32) } == stub)
    }

    @Test func capturedRpcclientMapRequestRoundTripsByteForByte() throws {
        let stub = try Self.requestStub("rpcclient_ept_map_request")
        var buffer = stub
        let request = try buffer.readEPMMapRequest(syntax: .ndr32)
        #expect(request.object == nil)
        #expect(request.towerReferent == 1)
        #expect(request.tower?.interface == EPMTestData.samr)
        #expect(request.maxTowers == 1)
        #expect(EPMTestData.stub { $0.writeEPMMapRequest(request, syntax: .ndr32) } == stub)
    }

    // MARK: - ept_map response

    @Test(arguments: [NDRSyntax.ndr32, .ndr64], [Endianness.little, .big])
    func mapResponseRoundTrips(syntax: NDRSyntax, endianness: Endianness) throws {
        if syntax == .ndr64, endianness == .big { return }
        let response = EPMMapResponse(
            entryHandle: EPMTestData.handle,
            maxTowers: 4,
            towers: [
                .ncacnIPTCP(
                    interface: EPMTestData.samr,
                    endpoint: TCPEndpoint(address: EPMTestData.serverAddress, port: 49152)
                ),
                nil,
                EPMTestData.namedPipeTower(EPMTestData.samr, pipe: "\\PIPE\\samr", host: "\\\\DC1"),
            ],
            status: RPCStatus(rawValue: 0)
        )
        var buffer = EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: syntax, endianness: endianness) }
        let bytes = buffer
        let parsed = try buffer.readEPMMapResponse(syntax: syntax, endianness: endianness)
        #expect(parsed.towers == response.towers)
        #expect(parsed.maxTowers == 4)
        #expect(parsed.entryHandle == EPMTestData.handle)
        #expect(parsed.towerReferents == [0x20000, 0, 0x20004])
        #expect(EPMTestData.stub { $0.writeEPMMapResponse(parsed, syntax: syntax, endianness: endianness) } == bytes)
    }

    @Test(arguments: ["ept_map_response", "rpcclient_ept_map_response"])
    func capturedMapResponseRoundTripsByteForByte(name: String) throws {
        let stub = try EPMTestData.stub(ofFixture: name)
        var buffer = stub
        let response = try buffer.readEPMMapResponse(syntax: .ndr32)
        #expect(response.status == RPCStatus(rawValue: 0))
        #expect(response.towers.count == 1)
        let tower = try #require(response.towers.first ?? nil)
        #expect(tower.interface == EPMTestData.samr)
        #expect(tower.tcpPort == 49154)
        #expect(tower.ipv4Address == .any)
        #expect(response.padding.allSatisfy { $0 == 0 })
        #expect(EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr32) } == stub)
    }

    @Test func capturedNotRegisteredMatchesBuilder() throws {
        let stub = try EPMTestData.stub(ofFixture: "ept_map_not_registered_response")
        var buffer = stub
        let response = try buffer.readEPMMapResponse(syntax: .ndr32)
        #expect(response.towers.isEmpty)
        #expect(response.status == .endpointNotRegistered)
        #expect(response.status.rawValue == 0x16c9_a0d6)
        let built = EPMMapResponse.notRegistered(maxTowers: response.maxTowers)
        #expect(built == response)
        #expect(EPMTestData.stub { $0.writeEPMMapResponse(built, syntax: .ndr32) } == stub)
    }

    @Test func notRegisteredPDUIsWhatSambaSends() throws {
        // Samba's whole reply PDU (call_id 1, p_cont_id 0, max_towers 1, NDR32, little-endian).
        let built = EPMMapResponse.notRegisteredPDU(
            callID: 1,
            contextID: 0,
            maxTowers: 1,
            syntax: .ndr32,
            dataRepresentation: .littleEndian
        )
        #expect(built == (try Fixture.buffer("ept_map_not_registered_response")))
    }

    // NDR64 is little-endian only (MS-RPCE 2.2.5).
    @Test(
        arguments: zip(
            [NDRSyntax.ndr32, .ndr32, .ndr64],
            [DataRepresentation.littleEndian, .bigEndian, .littleEndian]
        )
    )
    func notRegisteredPDUParsesBack(syntax: NDRSyntax, drep: DataRepresentation) throws {
        var bytes = try #require(
            EPMMapResponse.notRegisteredPDU(
                callID: 0x0102_0304,
                contextID: 5,
                maxTowers: 4,
                syntax: syntax,
                dataRepresentation: drep
            )
        )
        let raw = try #require(try bytes.readRawPDU(limits: WireLimits()))
        #expect(bytes.readableBytes == 0)
        #expect(raw.header.packetType == .response)
        #expect(raw.header.flags == .singleFragment)
        #expect(raw.header.callID == 0x0102_0304)
        #expect(raw.header.dataRepresentation == drep)
        guard case .response(var response) = try raw.parse().body else {
            Issue.record("not a response")
            return
        }
        #expect(response.contextID == 5)
        #expect(Int(response.allocationHint) == response.stub.readableBytes)
        let stub = try response.stub.readEPMMapResponse(syntax: syntax, endianness: drep.endianness)
        #expect(stub == .notRegistered(maxTowers: 4))
    }

    @Test func notRegisteredNDR64Layout() throws {
        let bytes = EPMTestData.stub {
            $0.writeEPMMapResponse(.notRegistered(maxTowers: 4), syntax: .ndr64)
        }
        // handle 20, num_towers 4, max_count/offset/actual u64 at 24/32/40, status at 48.
        #expect(bytes.readableBytes == 52)
        #expect(bytes.getInteger(at: 24, endianness: .little, as: UInt64.self) == 4)
        #expect(bytes.getInteger(at: 48, endianness: .little, as: UInt32.self) == 0x16c9_a0d6)
    }

    @Test func ndr64MapResponseFixtureParses() throws {
        let pdus = try EPMTestData.pdus(fromFixture: "ndr64_ept_map_response")
        #expect(pdus.count == 1)
        let stub = try EPMTestData.concatenatedStub(pdus)
        #expect(stub.readableBytes == 148)
        var buffer = stub
        let response = try buffer.readEPMMapResponse(syntax: .ndr64)
        #expect(response.maxTowers == 4)
        #expect(response.towerReferents == [0x20000])
        let tower = try #require(response.towers.first ?? nil)
        #expect(tower.encodedLength == 75)
        #expect(tower.interface == EPMTestData.samr)
        #expect(tower.transferSyntax == .ndr64)
        #expect(tower.tcpPort == 49154)
        #expect(tower.ipv4Address == EPMTestData.serverAddress)
        #expect(response.status.rawValue == 0)
        #expect(EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr64) } == stub)
        // The same reply is not valid NDR32.
        var asNDR32 = stub
        #expect(throws: RPCWireError.self) { _ = try asNDR32.readEPMMapResponse(syntax: .ndr32) }
    }

    // MARK: - ept_lookup

    @Test(arguments: [NDRSyntax.ndr32, .ndr64], [Endianness.little, .big])
    func lookupRequestRoundTrips(syntax: NDRSyntax, endianness: Endianness) throws {
        if syntax == .ndr64, endianness == .big { return }
        for request in [
            EPMLookupRequest(inquiryType: 0, object: nil, interface: nil, versionOption: 1, maxEntries: 500),
            EPMLookupRequest(
                inquiryType: 1,
                object: DCEUUID("01020304-0506-0708-090a-0b0c0d0e0f10")!,
                interface: EPMTestData.drsuapi,
                versionOption: 3,
                entryHandle: EPMTestData.handle,
                maxEntries: 1
            ),
        ] {
            var buffer = EPMTestData.stub { $0.writeEPMLookupRequest(request, syntax: syntax, endianness: endianness) }
            let bytes = buffer
            let parsed = try buffer.readEPMLookupRequest(syntax: syntax, endianness: endianness)
            #expect(parsed.inquiryType == request.inquiryType)
            #expect(parsed.object == request.object)
            #expect(parsed.interface == request.interface)
            #expect(parsed.versionOption == request.versionOption)
            #expect(parsed.entryHandle == request.entryHandle)
            #expect(parsed.maxEntries == request.maxEntries)
            #expect(
                EPMTestData.stub { $0.writeEPMLookupRequest(parsed, syntax: syntax, endianness: endianness) } == bytes
            )
        }
    }

    @Test func lookupRequestNDR64Layout() {
        let request = EPMLookupRequest(
            inquiryType: 1,
            object: .zero,
            interface: EPMTestData.drsuapi,
            versionOption: 3,
            maxEntries: 7
        )
        let bytes = EPMTestData.stub { $0.writeEPMLookupRequest(request, syntax: .ndr64) }
        // 0 inquiry, 8 object referent u64, 16 UUID, 32 interface referent u64, 40 if_id (20),
        // 60 vers_option, 64 handle, 84 max_ents.
        #expect(bytes.readableBytes == 88)
        #expect(bytes.getInteger(at: 8, endianness: .little, as: UInt64.self) == 1)
        #expect(bytes.getInteger(at: 32, endianness: .little, as: UInt64.self) == 2)
        #expect(bytes.getInteger(at: 56, endianness: .little, as: UInt16.self) == 4)
        #expect(bytes.getInteger(at: 60, endianness: .little, as: UInt32.self) == 3)
        #expect(bytes.getInteger(at: 84, endianness: .little, as: UInt32.self) == 7)
    }

    @Test func capturedLookupRequestRoundTripsByteForByte() throws {
        let stub = try Self.requestStub("ept_lookup_request")
        var buffer = stub
        let request = try buffer.readEPMLookupRequest(syntax: .ndr32)
        #expect(request.inquiryType == 0)
        #expect(request.object == nil)
        #expect(request.interface == nil)
        #expect(request.versionOption == 1)
        #expect(request.entryHandle == .null)
        #expect(request.maxEntries == 500)
        #expect(EPMTestData.stub { $0.writeEPMLookupRequest(request, syntax: .ndr32) } == stub)
    }

    @Test(arguments: [NDRSyntax.ndr32, .ndr64], [Endianness.little, .big])
    func lookupResponseRoundTrips(syntax: NDRSyntax, endianness: Endianness) throws {
        if syntax == .ndr64, endianness == .big { return }
        let response = EPMTestData.mixedLookupResponse()
        var buffer = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: syntax, endianness: endianness) }
        let bytes = buffer
        let parsed = try buffer.readEPMLookupResponse(syntax: syntax, endianness: endianness)
        #expect(parsed.entries.map(\.tower) == response.entries.map(\.tower))
        #expect(parsed.entries.map(\.annotation) == response.entries.map(\.annotation))
        #expect(parsed.entries.map(\.object) == response.entries.map(\.object))
        #expect(parsed.entries[1].annotationText == "lsarpc")
        #expect(parsed.entryHandle == response.entryHandle)
        #expect(parsed.maxEntries == 500)
        #expect(EPMTestData.stub { $0.writeEPMLookupResponse(parsed, syntax: syntax, endianness: endianness) } == bytes)
    }

    @Test func lookupResponseNDR64Layout() throws {
        let response = EPMLookupResponse(
            entryHandle: .null,
            maxEntries: 10,
            entries: [
                EPMEntry(object: .zero, tower: nil, annotation: EPMTestData.annotation("ab")),
                EPMEntry(
                    object: .zero,
                    tower: .ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 49152)),
                    annotation: EPMTestData.annotation("samr")
                ),
            ],
            status: RPCStatus(rawValue: 0)
        )
        let bytes = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr64) }
        // entry 0 at 48: UUID 16, referent u64 @64 (null), offset u64 @72, count u64 @80 = 3, chars @88,
        // pad to 8 -> entry 1 at 96: referent @112, count @128 = 5, chars @136..140, pad -> 144
        // deferred twr_t: conformance u64 @144, tower_length @152, tower @156..230, pad, status @232.
        #expect(bytes.getInteger(at: 40, endianness: .little, as: UInt64.self) == 2)
        #expect(bytes.getInteger(at: 64, endianness: .little, as: UInt64.self) == 0)
        #expect(bytes.getInteger(at: 80, endianness: .little, as: UInt64.self) == 3)
        #expect(bytes.getInteger(at: 112, endianness: .little, as: UInt64.self) == 0x20000)
        #expect(bytes.getInteger(at: 128, endianness: .little, as: UInt64.self) == 5)
        #expect(bytes.getInteger(at: 144, endianness: .little, as: UInt64.self) == 75)
        #expect(bytes.getInteger(at: 152, endianness: .little, as: UInt32.self) == 75)
        #expect(bytes.readableBytes == 236)
    }

    @Test func capturedLookupResponseRoundTripsByteForByte() throws {
        let stub = try EPMTestData.stub(ofFixture: "ept_lookup_response_stream")
        var buffer = stub
        let response = try buffer.readEPMLookupResponse(syntax: .ndr32)
        #expect(response.entries.count == 53)
        #expect(response.maxEntries == 500)
        #expect(response.status.rawValue == 0)
        #expect(response.entries.first?.annotationText == "dnsserver")
        #expect(response.entries.allSatisfy { $0.tower != nil })
        #expect(response.entries.map(\.towerReferent) == (1...53).map { UInt64($0) })
        #expect(response.padding.allSatisfy { $0 == 0 })
        #expect(EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr32) } == stub)
        let tcp = response.entries.compactMap(\.tower).filter(\.isNCACNIPTCP)
        #expect(!tcp.isEmpty)
        // Samba's dynamic ports, and the EPM's own 135.
        #expect(tcp.allSatisfy { (49152...49154).contains($0.tcpPort ?? 0) || $0.tcpPort == 135 })
    }

    @Test func capturedLookupResponseFragmentFilesMatchStream() throws {
        let names = Fixture.names(withPrefix: "ept_lookup_response_frag")
        #expect(names.count == 4)
        var fragments: [RawPDU] = []
        for name in names {
            fragments.append(contentsOf: try EPMTestData.pdus(fromFixture: name))
        }
        #expect(fragments == (try EPMTestData.pdus(fromFixture: "ept_lookup_response_stream")))
    }

    // MARK: - Malformed stubs

    @Test func ndr64RequiresLittleEndian() {
        var buffer = EPMTestData.stub { $0.writeEPMMapResponse(.notRegistered(maxTowers: 1), syntax: .ndr64) }
        Self.expectCode(.invalidDataRepresentation) {
            _ = try buffer.readEPMMapResponse(syntax: .ndr64, endianness: .big)
        }
    }

    @Test func trailingBytesAreRefused() {
        var buffer = EPMTestData.stub {
            $0.writeEPMMapResponse(.notRegistered(maxTowers: 1), syntax: .ndr32)
            $0.writeInteger(UInt32(0))
        }
        let before = buffer.readerIndex
        Self.expectCode(.invalidNDR) { _ = try buffer.readEPMMapResponse(syntax: .ndr32) }
        #expect(buffer.readerIndex == before)
    }

    @Test func truncatedStubsAreRefusedAtEveryLength() throws {
        for syntax in [NDRSyntax.ndr32, .ndr64] {
            let full = EPMTestData.stub { $0.writeEPMLookupResponse(EPMTestData.mixedLookupResponse(), syntax: syntax) }
            for length in 0..<full.readableBytes {
                var truncated = try #require(full.getSlice(at: 0, length: length))
                #expect(throws: RPCWireError.self) { _ = try truncated.readEPMLookupResponse(syntax: syntax) }
            }
        }
    }

    @Test func tooManyTowersAreRefusedBeforeAllocation() {
        var buffer = EPMTestData.stub { buffer in
            buffer.writeRepeatingByte(0, count: 20)
            buffer.writeInteger(UInt32(10_000), endianness: .little)
            buffer.writeMultipleIntegers(UInt32(10_000), UInt32(0), UInt32(10_000), endianness: .little)
            for index in 0..<10_000 { buffer.writeInteger(UInt32(index + 1), endianness: .little) }
        }
        Self.expectCode(.invalidNDR) { _ = try buffer.readEPMMapResponse(syntax: .ndr32) }
        var lookup = EPMTestData.stub { buffer in
            buffer.writeRepeatingByte(0, count: 20)
            buffer.writeInteger(UInt32.max, endianness: .little)
            buffer.writeMultipleIntegers(UInt64.max, UInt64(0), UInt64(UInt32.max), endianness: .little)
        }
        Self.expectCode(.invalidNDR) { _ = try lookup.readEPMLookupResponse(syntax: .ndr64) }
    }

    @Test func inconsistentArrayHeadersAreRefused() {
        // num_towers 1 but actual_count 2; then offset 1; then actual above max_count.
        for (count, maxCount, offset, actual) in [(1, 4, 0, 2), (1, 4, 1, 1), (2, 1, 0, 2)]
            as [(UInt32, UInt32, UInt32, UInt32)]
        {
            var buffer = EPMTestData.stub { buffer in
                buffer.writeRepeatingByte(0, count: 20)
                buffer.writeInteger(count, endianness: .little)
                buffer.writeMultipleIntegers(maxCount, offset, actual, endianness: .little)
                for _ in 0..<actual { buffer.writeInteger(UInt32(0), endianness: .little) }
                buffer.writeInteger(UInt32(0), endianness: .little)
            }
            Self.expectCode(.invalidNDR) { _ = try buffer.readEPMMapResponse(syntax: .ndr32) }
        }
    }

    @Test func repeatedReferentsAreRefused() {
        let tower = ProtocolTower.ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 1))
        let response = EPMMapResponse(
            maxTowers: 2,
            towers: [tower, tower],
            status: RPCStatus(rawValue: 0),
            towerReferents: [5, 5]
        )
        var buffer = EPMTestData.stub { $0.writeEPMMapResponse(response, syntax: .ndr32) }
        Self.expectCode(.invalidNDR) { _ = try buffer.readEPMMapResponse(syntax: .ndr32) }
    }

    @Test func towerLengthPastStubEndIsRefused() {
        var buffer = EPMTestData.stub { buffer in
            buffer.writeRepeatingByte(0, count: 20)
            buffer.writeMultipleIntegers(
                UInt32(1),
                UInt32(1),
                UInt32(0),
                UInt32(1),
                UInt32(0x20000),
                endianness: .little
            )
            buffer.writeMultipleIntegers(UInt32(200), UInt32(200), endianness: .little)
            buffer.writeRepeatingByte(0, count: 20)
        }
        Self.expectCode(.invalidNDR) { _ = try buffer.readEPMMapResponse(syntax: .ndr32) }
        // Conformance and tower_length disagreeing.
        var mismatch = EPMTestData.stub { buffer in
            buffer.writeRepeatingByte(0, count: 20)
            buffer.writeMultipleIntegers(
                UInt32(1),
                UInt32(1),
                UInt32(0),
                UInt32(1),
                UInt32(0x20000),
                endianness: .little
            )
            buffer.writeMultipleIntegers(UInt32(3), UInt32(2), endianness: .little)
            buffer.writeBytes([0, 0, 0, 0])
            buffer.writeInteger(UInt32(0), endianness: .little)
        }
        Self.expectCode(.invalidNDR) { _ = try mismatch.readEPMMapResponse(syntax: .ndr32) }
        // Over the tower length limit.
        var huge = EPMTestData.stub { buffer in
            buffer.writeRepeatingByte(0, count: 20)
            buffer.writeMultipleIntegers(
                UInt32(1),
                UInt32(1),
                UInt32(0),
                UInt32(1),
                UInt32(0x20000),
                endianness: .little
            )
            buffer.writeMultipleIntegers(UInt32.max, UInt32.max, endianness: .little)
        }
        Self.expectCode(.invalidTower) { _ = try huge.readEPMMapResponse(syntax: .ndr32) }
    }

    @Test func annotationOverLimitIsRefused() {
        let response = EPMLookupResponse(
            entryHandle: .null,
            maxEntries: 1,
            entries: [EPMEntry(object: .zero, tower: nil, annotation: Array(repeating: 0x41, count: 300))],
            status: RPCStatus(rawValue: 0)
        )
        var buffer = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr32) }
        Self.expectCode(.invalidNDR) { _ = try buffer.readEPMLookupResponse(syntax: .ndr32) }
        var relaxed = EPMTestData.stub { $0.writeEPMLookupResponse(response, syntax: .ndr32) }
        #expect(throws: Never.self) {
            _ = try relaxed.readEPMLookupResponse(syntax: .ndr32, limits: WireLimits(maximumAnnotationLength: 300))
        }
    }

    // MARK: - Helpers

    static func expectCode(
        _ code: RPCWireError.Code,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws -> Void
    ) {
        do {
            try body()
            Issue.record("expected \(code), nothing thrown", sourceLocation: sourceLocation)
        } catch let error as RPCWireError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected RPCWireError \(code), got \(error)", sourceLocation: sourceLocation)
        }
    }

    /// The stub of a captured single-fragment request.
    static func requestStub(_ name: String) throws -> ByteBuffer {
        let pdus = try EPMTestData.pdus(fromFixture: name)
        let pdu = try #require(pdus.first)
        guard case .request(let request) = try pdu.parse().body else {
            throw HexError()
        }
        return request.stub
    }
}

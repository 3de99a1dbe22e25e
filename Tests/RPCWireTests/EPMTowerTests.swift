import NIOCore
import RPCWire
import Testing

@Suite("Protocol towers and addresses")
struct EPMTowerTests {
    // MARK: - IPv4Address / TCPEndpoint

    @Test func ipv4AddressParsesDottedQuads() {
        #expect(IPv4Address("10.99.0.2") == IPv4Address(10, 99, 0, 2))
        #expect(IPv4Address("10.99.0.2")?.value == 0x0A63_0002)
        #expect(IPv4Address("0.0.0.0") == .any)
        #expect(IPv4Address("255.255.255.255")?.value == .max)
        #expect(IPv4Address(Substring("192.0.2.1"))?.description == "192.0.2.1")
        #expect(IPv4Address(value: 0xC000_0201).octets == [192, 0, 2, 1])
        #expect(IPv4Address.any.description == "0.0.0.0")
        #expect(TCPEndpoint(address: IPv4Address(192, 0, 2, 1), port: 135).description == "192.0.2.1:135")
    }

    @Test(arguments: [
        "", "1", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "1..2.3", ".1.2.3", "1.2.3.", "01.2.3.4", "1.2.3.04",
        "1.2.3.4 ", " 1.2.3.4", "a.b.c.d", "1.2.3.-4", "1000.1.1.1", "1.2.3.4/24", "::1",
    ])
    func ipv4AddressRejectsMalformedText(text: String) {
        #expect(IPv4Address(text) == nil)
    }

    // MARK: - Standard tower

    @Test func ncacnIPTCPTowerHasTheStandardLayout() throws {
        let endpoint = TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49154)
        let tower = ProtocolTower.ncacnIPTCP(interface: EPMTestData.samr, endpoint: endpoint)
        #expect(tower.encodedLength == 75)
        var buffer = ByteBuffer()
        #expect(buffer.writeProtocolTower(tower) == 75)
        let bytes = Array(buffer.readableBytesView)
        #expect(bytes[0...1] == [5, 0])
        // Floor 1 at 2: lhs_len 19, 0x0d, samr UUID little-endian.
        #expect(bytes[2...8] == [19, 0, 0x0d, 0x78, 0x57, 0x34, 0x12])
        // The TCP and IP floors (C706 Appendix L): port big-endian at 64-65, IPv4 in network order at 71-74.
        #expect(bytes[59...74] == [1, 0, 0x07, 2, 0, 0xc0, 0x02, 1, 0, 0x09, 4, 0, 10, 99, 0, 2])

        let parsed = try buffer.readProtocolTower(length: 75, limits: WireLimits())
        #expect(buffer.readableBytes == 0)
        #expect(parsed == tower)
        #expect(parsed.interface == EPMTestData.samr)
        #expect(parsed.transferSyntax == .ndr)
        #expect(parsed.tcpPort == 49154)
        #expect(parsed.ipv4Address == IPv4Address(10, 99, 0, 2))
        #expect(parsed.isNCACNIPTCP)
        #expect(parsed.udpPort == nil)
        #expect(parsed.namedPipe == nil)
        #expect(parsed.floors.map(\.protocolIdentifier) == [0x0d, 0x0d, 0x0b, 0x07, 0x09])
    }

    @Test func capturedSambaTowerParses() throws {
        let stub = try EPMTestData.stub(ofFixture: "ept_map_response")
        // Samba's single tower: twr_t at stub 40, octet string at 48.
        var buffer = try #require(stub.getSlice(at: 48, length: 75))
        let tower = try buffer.readProtocolTower(length: 75, limits: WireLimits())
        #expect(tower.interface == EPMTestData.samr)
        #expect(tower.transferSyntax == .ndr)
        #expect(tower.tcpPort == 49154)
        #expect(tower.ipv4Address == .any)
        #expect(tower.isNCACNIPTCP)
        #expect(tower == .ncacnIPTCP(interface: EPMTestData.samr, endpoint: TCPEndpoint(address: .any, port: 49154)))
    }

    @Test func versionsAreLittleEndianInUUIDFloors() throws {
        let interface = SyntaxID(uuid: EPMTestData.drsuapi.uuid, majorVersion: 0x0104, minorVersion: 0x0302)
        let tower = ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: .any, port: 1))
        #expect(tower.floors[0].lhs.suffix(2) == [0x04, 0x01])
        #expect(tower.floors[0].rhs == [0x02, 0x03])
        #expect(tower.interface == interface)
    }

    @Test func namedPipeAndLocalTowersExposeText() throws {
        let pipe = EPMTestData.namedPipeTower(EPMTestData.lsarpc, pipe: "\\PIPE\\lsass", host: "\\\\DC1")
        #expect(pipe.namedPipe == "\\PIPE\\lsass")
        #expect(pipe.netbiosName == "\\\\DC1")
        #expect(!pipe.isNCACNIPTCP)
        #expect(pipe.tcpPort == nil)
        #expect(pipe.interface == EPMTestData.lsarpc)
        let local = EPMTestData.localTower(EPMTestData.samr, name: "LRPC-1")
        #expect(local.localEndpoint == "LRPC-1")
        #expect(!local.isNCACNIPTCP)
        for tower in [pipe, local] {
            var buffer = ByteBuffer()
            let length = buffer.writeProtocolTower(tower)
            #expect(length == tower.encodedLength)
            #expect(try buffer.readProtocolTower(length: length, limits: WireLimits()) == tower)
        }
    }

    @Test func unknownAndOddFloorsSurviveVerbatim() throws {
        let tower = ProtocolTower(floors: [
            TowerFloor(lhs: [], rhs: []),
            TowerFloor(lhs: [0x42, 1, 2, 3], rhs: [9, 8, 7, 6, 5]),
            TowerFloor(lhs: [0x0d, 1, 2], rhs: [1]),
            TowerFloor(lhs: [0x07], rhs: [1, 2, 3]),
            TowerFloor(lhs: [0x1f], rhs: [0x02, 0x51]),
        ])
        var buffer = ByteBuffer()
        let length = buffer.writeProtocolTower(tower)
        let parsed = try buffer.readProtocolTower(length: length, limits: WireLimits())
        #expect(parsed == tower)
        #expect(parsed.floors[0].protocolIdentifier == nil)
        #expect(parsed.interface == nil)  // a UUID floor of the wrong size is not an interface
        #expect(parsed.tcpPort == nil)  // a 3-byte port is not a port
        #expect(parsed.httpPort == 593)
        #expect(!parsed.isNCACNIPTCP)
        #expect(ProtocolTower(floors: []).encodedLength == 2)
    }

    // MARK: - Malformed towers

    private func expectInvalidTower(_ bytes: [UInt8], length: Int? = nil, limits: WireLimits = WireLimits()) {
        var buffer = ByteBuffer(bytes: bytes)
        let before = buffer.readerIndex
        do {
            _ = try buffer.readProtocolTower(length: length ?? bytes.count, limits: limits)
            Issue.record("accepted \(bytes)")
        } catch let error as RPCWireError {
            #expect(error.code == .invalidTower, "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
        #expect(buffer.readerIndex == before, "reader index must not move on error")
    }

    @Test func malformedTowersThrowInvalidTower() {
        // Shorter than the floor count.
        expectInvalidTower([])
        expectInvalidTower([1])
        // Floor count past the end: 5 floors announced, one present.
        expectInvalidTower([5, 0, 1, 0, 0x0b, 2, 0, 0, 0])
        // lhs length past the end.
        expectInvalidTower([1, 0, 9, 0, 0x0b])
        // lhs length cut in half.
        expectInvalidTower([1, 0, 9])
        // rhs length past the end.
        expectInvalidTower([1, 0, 1, 0, 0x07, 2, 0, 0xc0])
        // rhs length missing.
        expectInvalidTower([1, 0, 1, 0, 0x07])
        // Lengths that would overflow 16-bit arithmetic or run far past the end.
        expectInvalidTower([1, 0, 0xff, 0xff, 0x07, 0xff, 0xff])
        expectInvalidTower([2, 0, 1, 0, 0x07, 0xff, 0xff, 0, 0])
        // Huge floor count, over the limit.
        expectInvalidTower([0xff, 0xff] + Array(repeating: 0, count: 64))
        expectInvalidTower([17, 0] + Array(repeating: 0, count: 17 * 4))
        // Trailing bytes after the last floor.
        expectInvalidTower([1, 0, 1, 0, 0x0b, 2, 0, 0, 0, 0xee])
        // tower_length beyond what is readable, and over the length limit.
        expectInvalidTower([1, 0, 1, 0, 0x0b, 2, 0, 0, 0], length: 10)
        expectInvalidTower([1, 0, 1, 0, 0x0b, 2, 0, 0, 0], limits: WireLimits(maximumTowerLength: 8))
        expectInvalidTower([0, 0], length: Int.max)
        expectInvalidTower([0, 0], length: -1)
    }

    @Test func floorLimitIsInclusive() throws {
        let floor = TowerFloor(lhs: [0x0b], rhs: [0, 0])
        let tower = ProtocolTower(floors: Array(repeating: floor, count: 16))
        var buffer = ByteBuffer()
        let length = buffer.writeProtocolTower(tower)
        #expect(try buffer.readProtocolTower(length: length, limits: WireLimits()) == tower)
        buffer.moveReaderIndex(to: 0)
        expectInvalidTower(Array(buffer.readableBytesView), limits: WireLimits(maximumFloors: 15))
    }

    @Test func everyTruncationOfAValidTowerIsRefused() {
        var buffer = ByteBuffer()
        buffer.writeProtocolTower(
            .ncacnIPTCP(
                interface: EPMTestData.samr,
                endpoint: TCPEndpoint(address: IPv4Address(10, 0, 0, 1), port: 135)
            )
        )
        let bytes = Array(buffer.readableBytesView)
        for length in 0..<bytes.count {
            expectInvalidTower(Array(bytes[0..<length]))
        }
    }
}

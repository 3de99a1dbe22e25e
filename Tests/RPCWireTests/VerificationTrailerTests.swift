import Foundation
import NIOCore
import RPCWire
import Testing

/// The verification trailer (MS-RPCE 2.2.2.13) after a signed request's NDR data: synthetic stubs,
/// and every signed `ept_map` request in the Windows captures (read at run time with tshark from
/// `../shared/captures`, never copied into the project).
@Suite("Verification trailer")
struct VerificationTrailerTests {
    static func mapStub(trailer: [UInt8]) -> ByteBuffer {
        let interface = SyntaxID(
            uuid: DCEUUID("12345678-1234-abcd-ef00-01234567cffb")!,
            majorVersion: 1,
            minorVersion: 0
        )
        let tower = ProtocolTower.ncacnIPTCP(interface: interface, endpoint: TCPEndpoint(address: .any, port: 135))
        var stub = ByteBuffer()
        stub.writeEPMMapRequest(
            EPMMapRequest(object: nil, tower: tower, entryHandle: .null, maxTowers: 4),
            syntax: .ndr64
        )
        stub.writeBytes(trailer)
        return stub
    }

    /// SEC_VT_COMMAND_PCONTEXT | SEC_VT_COMMAND_END, length 40: interface and transfer syntax.
    static let pcontextCommand: [UInt8] = [0x02, 0x40, 0x28, 0x00] + [UInt8](repeating: 0x11, count: 40)

    @Test func aTrailerAfterTheArgumentsIsNotNDR() throws {
        var stub = Self.mapStub(trailer: VerificationTrailer.signature + Self.pcontextCommand)
        let request = try stub.readEPMMapRequest(syntax: .ndr64)
        #expect(request.maxTowers == 4)
        #expect(stub.readableBytes == 0)
    }

    @Test func otherTrailingBytesAreStillMalformed() {
        var stub = Self.mapStub(trailer: [0x8A, 0xE3, 0x13, 0x71, 0, 0, 0, 0] + Self.pcontextCommand)
        #expect(throws: RPCWireError.self) { try stub.readEPMMapRequest(syntax: .ndr64) }
        var short = Self.mapStub(trailer: Array(VerificationTrailer.signature.prefix(7)))
        #expect(throws: RPCWireError.self) { try short.readEPMMapRequest(syntax: .ndr64) }
    }

    @Test func theSignatureMustFollowZeroPaddingToFourBytes() {
        var buffer = ByteBuffer(bytes: [0, 0] + VerificationTrailer.signature)
        #expect(VerificationTrailer.follows(in: buffer, offset: 2))
        #expect(!VerificationTrailer.follows(in: buffer, offset: 0))
        buffer = ByteBuffer(bytes: [0, 1] + VerificationTrailer.signature)
        #expect(!VerificationTrailer.follows(in: buffer, offset: 2))
    }

    /// Every signed (auth level >= packet) ept_map request (opnum 3 on TCP 135) in the captures.
    @Test func signedMapRequestsInTheCapturesParse() throws {
        guard let tshark = CapturedAuthIdentityTests.tshark else {
            print("skipped: tshark is not installed")
            return
        }
        let directory = CapturedAuthIdentityTests.capturesDirectory
        let names = [
            "pcapattack__zerologon_mimikatz_ntlm_privacy_scan_and_exploit_encrypted.pcapng",
            "pcapattack__DCShadow_add_primarygroupid_512_to_std_account.pcapng",
        ]
        guard names.allSatisfy({ FileManager.default.fileExists(atPath: directory.appendingPathComponent($0).path) })
        else {
            print("skipped: no captures at \(directory.path) (set RPCGATE_CAPTURES)")
            return
        }
        var parsed = 0
        for name in names {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tshark)
            process.arguments = [
                "-r", directory.appendingPathComponent(name).path, "-Y",
                "tcp.dstport == 135 && dcerpc.pkt_type == 0 && dcerpc.opnum == 3 && dcerpc.auth_level >= 4",
                "-T", "fields", "-e", "tcp.payload",
            ]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                var bytes = ByteBuffer(bytes: try hexBytes(String(line)))
                let raw = try #require(try bytes.readRawPDU(limits: WireLimits()))
                guard case .request(var request) = try raw.parse().body else {
                    Issue.record("\(name): not a request")
                    continue
                }
                // Windows negotiates NDR64 for the endpoint mapper (INDEX.md).
                let map = try request.stub.readEPMMapRequest(syntax: .ndr64)
                #expect(map.tower?.interface != nil, "\(name)")
                parsed += 1
            }
        }
        // zerologon #4 and #273, DCShadow #50.
        #expect(parsed >= 3)
    }
}

import Foundation
import NIOCore
import RPCWire
import Testing

/// The DCOM parsers against every activation, OXID resolution and ServerAlive2 exchange in the
/// Windows captures (/work/shared/captures, see its INDEX.md section B), with Wireshark's DCOM
/// dissectors as the oracle: the CLSID of each request, the OXID, IPIDs and string bindings of
/// each reply must be the ones tshark shows, and no stub may fail to parse.
///
/// The captures are read at run time from `../shared/captures` next to the repository (or
/// `RPCGATE_CAPTURES`) and never copied into the project; without them, or without `tshark`, the
/// test says so and passes.
@Suite("Captured DCOM messages")
struct CapturedDCOMTests {
    static let captures = [
        "pcapattack__LM_WMI_ProcessCallCreate.pcapng",
        "zeek__kerberos135_auth.pcapng",
        "otrf__empire_wmi_dcerpc_wmi_IWbemServices_ExecMethod_WORKSTATION6_2020-09-21001437.cap",
        "otrf__empire_dcom_shellwindows_WORKSTATION6_2020-09-18130751.cap",
        "otrf__covenant_dcom_iertutil_dll_hijack_WORKSTATION6_2020-10-09183000.cap",
        "otrf__covenant_dcom_registerxll_2020-09-18145959.cap",
        "otrf__covenant_sharpwmi_create_dcerpc_wmi_2020-08-06035621.cap",
        "pcapattack__CA_masterkey_rpc_protectedstorage.pcapng",
    ]

    struct Row {
        var number: Int
        var packetType: Int
        var opnum: UInt16?
        var callID: UInt32
        var bytes: [UInt8]
        var clsids: [String]
        var oxids: [String]
        var ipids: [String]
        var networkAddresses: [String]
    }

    /// One row per DCE/RPC request or response of the interfaces `filter` names.
    static func rows(in file: URL, filter: String, tshark: String) throws -> [Row] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tshark)
        process.arguments = [
            "-r", file.path, "-Y", "(\(filter)) && (dcerpc.pkt_type==0 || dcerpc.pkt_type==2)",
            "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=#",
            "-e", "frame.number", "-e", "dcerpc.pkt_type", "-e", "dcerpc.opnum", "-e", "dcerpc.cn_call_id",
            "-e", "tcp.reassembled.data", "-e", "tcp.payload",
            "-e", "isystemactivator.properties.instninfo.clsid", "-e", "isystemactivator.properties.scmresp.oxid",
            "-e", "dcom.ipid", "-e", "dcom.dualstringarray.network_addr",
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 10, let number = Int(fields[0]), let type = Int(fields[1]),
                let callID = UInt32(fields[3].split(separator: "#").first ?? "")
            else { return nil }
            let hex = fields[4].isEmpty ? fields[5] : fields[4]
            guard let bytes = try? hexBytes(hex) else { return nil }
            func list(_ text: String) -> [String] { text.split(separator: "#").map(String.init) }
            return Row(
                number: number,
                packetType: type,
                opnum: UInt16(fields[2].split(separator: "#").first ?? ""),
                callID: callID,
                bytes: bytes,
                clsids: list(fields[6]),
                oxids: list(fields[7]),
                ipids: list(fields[8]),
                networkAddresses: list(fields[9])
            )
        }
    }

    /// The stub of the PDU with `callID` and `packetType` among the bytes (one segment or a
    /// reassembled one may hold several PDUs); `nil` when it is not there whole or not one fragment.
    static func stub(of row: Row) -> ByteBuffer? {
        let limits = WireLimits(maximumFragmentLength: 65535)
        var bytes = ByteBuffer(bytes: row.bytes)
        for _ in 0..<64 {
            guard let raw = try? bytes.readRawPDU(limits: limits) else { return nil }
            guard raw.header.callID == row.callID, raw.header.packetType.rawValue == UInt8(row.packetType) else {
                continue
            }
            guard raw.header.flags.contains(.firstFragment), raw.header.flags.contains(.lastFragment),
                let pdu = try? raw.parse(limits: limits), (pdu.authVerifier?.authLevel ?? .none) < .privacy
            else { return nil }
            switch pdu.body {
            case .request(let request): return request.stub
            case .response(let response): return response.stub
            default: return nil
            }
        }
        return nil
    }

    static func hex(_ value: UInt64) -> String {
        let text = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 16 - text.count) + text
    }

    @Test func dcomMessagesMatchWireshark() throws {
        guard let (tshark, directory) = CapturedAuthIdentityTests.tsharkAndCaptures() else { return }
        var counts: [String: Int] = [:]
        var ports: Set<UInt16> = []
        for name in Self.captures {
            let file = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: file.path) else {
                print("skipped \(name): not present")
                continue
            }
            for row in try Self.rows(in: file, filter: "isystemactivator", tshark: tshark) {
                guard let opnum = row.opnum,
                    let operation = ActivationRequest.Operation(
                        interface: DCOMInterface.remoteSCMActivator.uuid,
                        opnum: opnum
                    ),
                    var stub = Self.stub(of: row)
                else { continue }
                let label = "\(name) #\(row.number)"
                if row.packetType == 0 {
                    let request = try stub.readActivationRequest(operation, syntax: .ndr32)
                    #expect(row.clsids == ["\(request.classID)"], "\(label)")
                    #expect(request.orpcThis.version == COMVersion(major: 5, minor: 7), "\(label)")
                    counts["activation requests", default: 0] += 1
                } else {
                    let reply = try stub.readActivationReply(operation, syntax: .ndr32)
                    #expect(reply.result == 0, "\(label)")
                    #expect(row.oxids == reply.exporter.map { [Self.hex($0.oxid)] } ?? [], "\(label)")
                    #expect(
                        row.ipids.sorted()
                            == reply.interfaces.compactMap { $0.reference?.standard?.ipid }.map { "\($0)" }.sorted(),
                        "\(label)"
                    )
                    let addresses =
                        reply.interfaces.flatMap { $0.reference?.resolverAddress?.stringBindings ?? [] }
                        + (reply.exporter?.bindings.stringBindings ?? [])
                    #expect(row.networkAddresses.sorted() == addresses.map(\.networkAddress).sorted(), "\(label)")
                    #expect(!reply.announcedPorts.isEmpty, "\(label): no port announced")
                    ports.formUnion(reply.announcedPorts)
                    counts["activation replies", default: 0] += 1
                }
            }
            for row in try Self.rows(in: file, filter: "oxid", tshark: tshark) {
                guard let opnum = row.opnum, let operation = ObjectExporterOperation(rawValue: opnum),
                    var stub = Self.stub(of: row)
                else { continue }
                let label = "\(name) #\(row.number)"
                switch (operation, row.packetType) {
                case (.resolveOxid2, 0), (.resolveOxid, 0):
                    _ = try stub.readResolveOxidRequest(syntax: .ndr32)
                    counts["ResolveOxid requests", default: 0] += 1
                case (.resolveOxid2, 2), (.resolveOxid, 2):
                    let reply = try stub.readResolveOxidReply(withVersion: operation == .resolveOxid2, syntax: .ndr32)
                    #expect(reply.status == RPCStatus(rawValue: 0), "\(label)")
                    #expect(
                        row.networkAddresses.sorted() == reply.bindings.stringBindings.map(\.networkAddress).sorted(),
                        "\(label)"
                    )
                    #expect(!reply.bindings.tcpPorts.isEmpty, "\(label): no port announced")
                    #expect(!reply.bindings.securityBindings.isEmpty, "\(label): no security binding")
                    ports.formUnion(reply.bindings.tcpPorts)
                    counts["ResolveOxid replies", default: 0] += 1
                case (.serverAlive2, 2):
                    let reply = try stub.readServerAlive2Reply(syntax: .ndr32)
                    #expect(reply.status == RPCStatus(rawValue: 0), "\(label)")
                    #expect(
                        row.networkAddresses.sorted() == reply.bindings.stringBindings.map(\.networkAddress).sorted(),
                        "\(label)"
                    )
                    #expect(!reply.bindings.securityBindings.isEmpty, "\(label): no security binding")
                    counts["ServerAlive2 replies", default: 0] += 1
                default:
                    continue
                }
            }
        }
        print("captured DCOM messages: \(counts.sorted { $0.key < $1.key }), announced ports \(ports.sorted())")
        if !counts.isEmpty {
            // INDEX.md: 7 activation exchanges (one per file above but the masterkey one),
            // 2 ResolveOxid2 and 2 ServerAlive2 exchanges.
            #expect(counts["activation requests"] == 7)
            #expect(counts["activation replies"] == 7)
            #expect(counts["ResolveOxid replies"] == 2)
            #expect(counts["ServerAlive2 replies"] == 2)
            #expect(ports.contains(49670))
            #expect(ports.contains(65082))
        }
    }

    /// Every readable ORPC request in the captures (activations on 135 and object calls, signed at
    /// packet integrity): its ORPCTHIS causality id must be the one Wireshark shows, and its
    /// header's object UUID (the IPID) Wireshark's `dcerpc.obj_id`.
    @Test func orpcHeadersOfObjectCallsMatchWireshark() throws {
        guard let (tshark, directory) = CapturedAuthIdentityTests.tsharkAndCaptures() else { return }
        let limits = WireLimits(maximumFragmentLength: 65535)
        var checked = 0
        var withObject = 0
        for name in Self.captures {
            let file = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: file.path) else { continue }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tshark)
            process.arguments = [
                "-r", file.path, "-Y", "dcom.this.uuid && dcerpc.pkt_type==0", "-T", "fields", "-E", "separator=|",
                "-E", "occurrence=f", "-e", "frame.number", "-e", "dcerpc.cn_call_id", "-e", "dcerpc.obj_id",
                "-e", "dcom.this.uuid", "-e", "tcp.reassembled.data", "-e", "tcp.payload",
            ]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
                guard fields.count == 6, let callID = UInt32(fields[1]),
                    let bytes = try? hexBytes(fields[4].isEmpty ? fields[5] : fields[4])
                else { continue }
                var buffer = ByteBuffer(bytes: bytes)
                for _ in 0..<64 {
                    guard let raw = try? buffer.readRawPDU(limits: limits) else { break }
                    guard raw.header.callID == callID, raw.header.packetType == .request,
                        raw.header.flags.contains(.firstFragment),
                        (raw.securityTrailer?.authLevel ?? .none) < .privacy,
                        let pdu = try? raw.parse(limits: limits), case .request(let request) = pdu.body
                    else { continue }
                    let label = "\(name) #\(fields[0])"
                    var ndr32 = request.stub
                    var ndr64 = request.stub
                    let this =
                        (try? ndr32.readORPCThis(syntax: .ndr32, limits: limits))
                        ?? (try? ndr64.readORPCThis(syntax: .ndr64, limits: limits))
                    #expect(this?.causalityID.description == fields[3], "\(label)")
                    #expect(this?.version.major == 5, "\(label)")
                    if !fields[2].isEmpty {
                        #expect(raw.requestObjectUUID?.description == fields[2], "\(label)")
                        withObject += 1
                    } else {
                        #expect(raw.requestObjectUUID == nil, "\(label)")
                    }
                    checked += 1
                    break
                }
            }
        }
        print("captured ORPC requests: \(checked), \(withObject) with an object UUID (IPID)")
        if checked > 0 {
            #expect(withObject > 0)
        }
    }

    /// `LM_dcom_mmc20.application` starts mid-stream, so tshark cannot name the interface: frames
    /// #1/#2 are opnum 3 on port 135 (RemoteGetClassObject), whose reply INDEX.md says announces
    /// `172.16.66.36[60283]`.
    @Test func midStreamActivationReply() throws {
        guard let tshark = CapturedAuthIdentityTests.tshark else {
            print("skipped: tshark is not installed")
            return
        }
        let file = CapturedAuthIdentityTests.capturesDirectory.appendingPathComponent(
            "pcapattack__LM_dcom_mmc20.application_dcerpc.pcapng"
        )
        guard FileManager.default.fileExists(atPath: file.path) else {
            print("skipped: no capture at \(file.path) (set RPCGATE_CAPTURES)")
            return
        }
        let rows = try Self.rows(in: file, filter: "tcp.port==135 && frame.number<=2", tshark: tshark)
        var checked = 0
        for row in rows {
            guard var stub = Self.stub(of: row) else { continue }
            if row.packetType == 0 {
                let request = try stub.readActivationRequest(.remoteGetClassObject, syntax: .ndr32)
                // MMC20.Application (INDEX.md; the CLSID lateral movement tools use).
                #expect("\(request.classID)" == "49b2791a-b1ae-4c90-9b8e-e860ba07f889")
            } else {
                let reply = try stub.readActivationReply(.remoteGetClassObject, syntax: .ndr32)
                #expect(
                    reply.exporter?.bindings.stringBindings.contains { $0.networkAddress == "172.16.66.36[60283]" }
                        == true
                )
                #expect(reply.announcedPorts == [60283])
            }
            checked += 1
        }
        #expect(checked == 2)
    }
}

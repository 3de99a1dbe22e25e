import Foundation
import NIOCore
import RPCWire
import Testing

/// The identity parser against real Windows traffic (/work/shared/captures, see its INDEX.md),
/// with Wireshark's dissectors as the oracle: for every `bind`, `alter_context` and `auth3`
/// carrying a verifier, the names ``AuthIdentity`` reads must be the ones tshark shows, and no
/// token may fail to parse.
///
/// The captures are read at run time from `../shared/captures` next to the repository (or
/// `RPCGATE_CAPTURES`) and never copied into the project; without them, or without `tshark`, the
/// test says so and passes.
@Suite("Captured auth identities")
struct CapturedAuthIdentityTests {
    static var capturesDirectory: URL {
        if let override = ProcessInfo.processInfo.environment["RPCGATE_CAPTURES"] {
            return URL(fileURLWithPath: override)
        }
        // Tests/RPCWireTests/ -> repository root -> ../shared/captures
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/captures")
    }

    static let tshark = ["/usr/bin/tshark", "/usr/local/bin/tshark"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// tshark and the captures folder for a test that reads the captures; `nil` after printing why
    /// the test is skipped (no tshark, or no captures beside the project).
    static func tsharkAndCaptures() -> (tshark: String, directory: URL)? {
        guard let tshark = Self.tshark else {
            print("skipped: tshark is not installed")
            return nil
        }
        let directory = Self.capturesDirectory
        guard FileManager.default.fileExists(atPath: directory.path) else {
            print("skipped: no captures at \(directory.path) (set RPCGATE_CAPTURES)")
            return nil
        }
        return (tshark, directory)
    }

    /// Captures with NTLM, SPNEGO/NTLM and SPNEGO/Kerberos binds over TCP (INDEX.md).
    static let captures = [
        "zeek__dce_rpc_ntlm.pcapng",
        "zeek__kerberos135_auth.pcapng",
        "pcapattack__DCShadow_add_primarygroupid_512_to_std_account.pcapng",
        "pcapattack__CA_kerbrute_passwordspray_kerberos_AS-REQ.pcapng",
        "pcapattack__zerologon_mimikatz_ntlm_privacy_scan_and_exploit_encrypted.pcapng",
        "otrf__empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap",
        "otrf__empire_psexec_dcerpc_tcp_svcctl_WORKSTATION6_2020-09-20121608.cap",
        "otrf__covenant_dcom_iertutil_dll_hijack_WORKSTATION6_2020-10-09183000.cap",
        "pcapattack__LM_WMI_ProcessCallCreate.pcapng",
        "zeek__mapi.pcap",
    ]

    struct Frame {
        var number: Int
        var payload: [UInt8]
        var ntlmUser: String
        var ntlmDomain: String
        var ntlmHost: String
        var realm: String
        var serviceName: String
    }

    /// One row per bind (11), alter_context (14) or auth3 (16) with a verifier.
    static func frames(in file: URL, tshark: String) throws -> [Frame] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tshark)
        process.arguments = [
            "-r", file.path, "-Y",
            "dcerpc.auth_type && (dcerpc.pkt_type==11 || dcerpc.pkt_type==14 || dcerpc.pkt_type==16)",
            "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,",
            "-e", "frame.number", "-e", "tcp.payload", "-e", "ntlmssp.auth.username", "-e", "ntlmssp.auth.domain",
            "-e", "ntlmssp.auth.hostname", "-e", "kerberos.realm", "-e", "kerberos.SNameString",
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 7, let number = Int(fields[0]), let payload = try? hexBytes(fields[1]) else {
                return nil
            }
            // Wireshark shows an empty NTLM name as NULL.
            func name(_ text: String) -> String { text == "NULL" ? "" : text }
            return Frame(
                number: number,
                payload: payload,
                ntlmUser: name(fields[2]),
                ntlmDomain: name(fields[3]),
                ntlmHost: name(fields[4]),
                realm: fields[5],
                serviceName: fields[6]
            )
        }
    }

    @Test func identitiesMatchWireshark() throws {
        guard let (tshark, directory) = Self.tsharkAndCaptures() else { return }
        var checked = 0
        var ntlmNames = 0
        var kerberosNames = 0
        for name in Self.captures {
            let file = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: file.path) else { continue }
            for frame in try Self.frames(in: file, tshark: tshark) {
                // Only segments that hold exactly one whole PDU (DCE/RPC over SMB, or a PDU split
                // across segments, is skipped).
                var bytes = ByteBuffer(bytes: frame.payload)
                guard let raw = try? bytes.readRawPDU(limits: WireLimits(maximumFragmentLength: 65535)),
                    bytes.readableBytes == 0,
                    let pdu = try? raw.parse(limits: WireLimits(maximumFragmentLength: 65535)),
                    let verifier = pdu.authVerifier
                else { continue }
                checked += 1
                if ProcessInfo.processInfo.environment["RPCGATE_DEBUG_IDENTITIES"] != nil {
                    print(
                        "\(name) #\(frame.number): \((try? verifier.identity()).map { "\($0 as Any)" } ?? "error") tshark \(frame)"
                    )
                }
                let identity: AuthIdentity?
                do {
                    identity = try verifier.identity()
                } catch {
                    Issue.record("\(name) #\(frame.number): \(error)")
                    continue
                }
                switch identity {
                case .ntlm(let ntlm):
                    ntlmNames += 1
                    #expect(ntlm.user == frame.ntlmUser, "\(name) #\(frame.number)")
                    #expect(ntlm.domain == frame.ntlmDomain, "\(name) #\(frame.number)")
                    #expect(ntlm.workstation == frame.ntlmHost, "\(name) #\(frame.number)")
                case .kerberos(let service):
                    kerberosNames += 1
                    // tshark lists every realm and name in the frame (ticket first).
                    #expect(
                        frame.realm.split(separator: ",").first.map(String.init) == service.realm,
                        "\(name) #\(frame.number)"
                    )
                    #expect(
                        frame.serviceName.hasPrefix(service.serviceName.joined(separator: ",")),
                        "\(name) #\(frame.number)"
                    )
                case nil:
                    #expect(
                        frame.ntlmUser.isEmpty && frame.ntlmHost.isEmpty,
                        "\(name) #\(frame.number): tshark sees NTLM names"
                    )
                    #expect(frame.serviceName.isEmpty, "\(name) #\(frame.number): tshark sees a Kerberos service name")
                }
            }
        }
        print(
            "captured auth identities: \(checked) verifiers, \(ntlmNames) NTLM and \(kerberosNames) Kerberos identities"
        )
        if checked > 0 {
            #expect(ntlmNames > 0)
            #expect(kerberosNames > 0)
        }
    }
}

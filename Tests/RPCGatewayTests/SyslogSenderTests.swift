import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RPCGateway
import RPCPolicy
import RPCWire
import Testing

/// Collects the datagrams or TCP bytes a loopback receiver gets.
private final class Received: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let messages = NIOLockedValueBox<[String]>([])

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = self.unwrapInboundIn(data)
        self.messages.withLockedValue { $0.append(String(buffer: envelope.data)) }
    }
}

private final class ReceivedStream: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let bytes = NIOLockedValueBox<String>("")

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        self.bytes.withLockedValue { $0 += String(buffer: buffer) }
    }
}

@Suite("Syslog output (RFC 5424)")
struct SyslogSenderTests {
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (RFC 5424 section 6).
    static var rfc5424: Regex<AnyRegexOutput> {
        try! Regex(
            #"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ([!-~]{1,255}) ([!-~]{1,48}) (\d+) (bind|call) - (\{.*\})$"#
        )
    }

    static func record(_ action: PolicyAction, event: AuditRecord.Event = .bind) throws -> AuditRecord {
        AuditRecord(
            time: AuditTimestamp(millisecondsSinceEpoch: 1_714_566_896_789),
            route: "dc1",
            event: event,
            client: try SocketAddress(ipAddress: "10.1.2.3", port: 49_152),
            server: TCPEndpoint(address: IPv4Address(10, 99, 0, 2), port: 49_667),
            listener: .mapped,
            interface: InterfaceCatalog.named("samr")!.syntax,
            opnum: event == .call ? 5 : nil,
            authType: .ntlm,
            authLevel: .privacy,
            identity: .ntlm(NTLMIdentity(user: "alice", domain: "EXAMPLE", workstation: "WS1")),
            decision: PolicyDecision(action: action, origin: nil),
            policy: "dc"
        )
    }

    @Test("Messages are RFC 5424 with PRI from facility and decision, and the JSON line as MSG")
    func messageFormat() throws {
        let sender = try SyslogSender(settings: SyslogSettings(host: "127.0.0.1", port: 9, facility: 16))
        for (action, pri) in [(PolicyAction.deny, 132), (.audit, 133), (.allow, 134)] {
            let message = String(buffer: sender.message(for: try Self.record(action)))
            let match = try #require(try Self.rfc5424.wholeMatch(in: message), "\(message)")
            #expect(match.output[1].substring == "\(pri)"[...])
            #expect(match.output[2].substring == "2024-05-01T12:34:56.789Z")
            #expect(match.output[4].substring == "rpcgate")
            let json = try #require(match.output[7].substring)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            #expect(object["user.name"] as? String == "alice")
        }
    }

    @Test("Records reach a UDP receiver, one datagram each")
    func udp() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let received = Received()
        let channel = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(received) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(channel.localAddress?.port)
        let audit = AuditLog(
            sink: GatedAuditSink(open: true),
            syslog: try SyslogSender(settings: SyslogSettings(host: "127.0.0.1", port: UInt16(port), transport: .udp)),
            logger: Logger(label: "test")
        )
        audit.record(try Self.record(.deny, event: .call))
        audit.record(try Self.record(.allow))
        await audit.shutdown()
        for _ in 0..<100 where received.messages.withLockedValue({ $0.count }) < 2 {
            try await Task.sleep(for: .milliseconds(20))
        }
        let messages = received.messages.withLockedValue { $0 }
        try #require(messages.count == 2)
        #expect(messages[0].hasPrefix("<132>1 ") && messages[0].contains(" call - {"))
        #expect(messages[1].hasPrefix("<134>1 ") && messages[1].contains(" bind - {"))
        for message in messages { #expect(try Self.rfc5424.wholeMatch(in: message) != nil) }
        try await channel.close()
        try await group.shutdownGracefully()
    }

    @Test("Over TCP each message is octet-counted (RFC 6587)")
    func tcp() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let received = ReceivedStream()
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(received) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let sender = try SyslogSender(settings: SyslogSettings(host: "127.0.0.1", port: UInt16(port), transport: .tcp))
        let records = [try Self.record(.deny), try Self.record(.audit, event: .call)]
        try sender.send(records)
        sender.close()
        let expected = records.map { String(buffer: sender.message(for: $0)) }.map { "\($0.utf8.count) \($0)" }.joined()
        for _ in 0..<100 where received.bytes.withLockedValue({ $0.utf8.count }) < expected.utf8.count {
            try await Task.sleep(for: .milliseconds(20))
        }
        // PROCID and timestamps are the same for both renderings; compare after the header.
        #expect(received.bytes.withLockedValue { $0 } == expected)
        try await server.close()
        try await group.shutdownGracefully()
    }

    @Test("A receiver that is down loses records (counted), never blocks the log")
    func receiverDown() async throws {
        // TCP to a closed port on loopback: connection refused at once.
        let sender = try SyslogSender(settings: SyslogSettings(host: "127.0.0.1", port: 1, transport: .tcp))
        #expect(throws: AuditLogError.self) { try sender.send([try Self.record(.deny)]) }
        #expect(throws: AuditLogError.self) { _ = try SyslogSender(settings: SyslogSettings(host: "syslog.example")) }
    }
}

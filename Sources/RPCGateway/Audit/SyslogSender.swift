package import NIOCore
import RPCPolicy

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Sends audit records as RFC 5424 syslog messages, beside the audit file.
///
/// Each record becomes one message whose MSG is the record's JSON line:
///
/// ```
/// <PRI>1 TIMESTAMP HOSTNAME rpcgate PROCID MSGID - {"@timestamp":...}
/// ```
///
/// PRI is the configured facility times 8 plus a severity from the decision (deny: warning 4,
/// audit: notice 5, allow: informational 6); TIMESTAMP is the record's time (RFC 3339, UTC,
/// milliseconds); MSGID is `bind` or `call`; there is no structured data (`-`): the JSON carries
/// every field. Over UDP (RFC 5426) each message is one datagram; over TCP (RFC 6587 3.4.1) each
/// is framed by octet counting (`LENGTH SP MESSAGE`).
///
/// Used only on the audit writer thread, so its blocking socket never touches an event loop.
/// A TCP connection is opened on first use and reopened after an error; a receiver that is down
/// loses those records (counted by ``AuditLog``), never the gateway's traffic.
package final class SyslogSender: @unchecked Sendable {
    // @unchecked: `descriptor` is touched only on the audit writer thread (one call at a time).
    package let settings: SyslogSettings
    private let address: SocketAddress
    private let header: (hostname: String, processID: String)
    private var descriptor: Int32 = -1

    /// Largest message sent over UDP: RFC 5426 3.2 asks receivers for at least 2048 bytes;
    /// longer records (they are about 700 bytes) are cut there.
    package static let maximumDatagramLength = 2048
    /// How long a TCP connect or send may block the audit writer.
    static let socketTimeoutSeconds = 2

    /// Resolves `settings.host` (a numeric address).
    ///
    /// - Throws: ``AuditLogError`` when the host is not an IPv4 or IPv6 address.
    package init(settings: SyslogSettings) throws {
        self.settings = settings
        do {
            self.address = try SocketAddress(ipAddress: settings.host, port: Int(settings.port))
        } catch {
            throw AuditLogError("syslog host \(settings.host) is not an IPv4 or IPv6 address")
        }
        self.header = (Self.hostname(), String(getpid()))
    }

    deinit {
        if self.descriptor >= 0 { _ = posixClose(self.descriptor) }
    }

    /// The message for `record`, as sent (without TCP framing).
    package func message(for record: AuditRecord) -> ByteBuffer {
        var buffer = ByteBuffer()
        let severity: Int
        switch record.decision.action {
        case .deny: severity = 4
        case .audit: severity = 5
        case .allow: severity = 6
        }
        buffer.writeString("<\(self.settings.facility * 8 + severity)>1 ")
        record.time.writeRFC3339(into: &buffer)
        buffer.writeString(
            " \(self.header.hostname) \(self.settings.appName) \(self.header.processID) \(record.event.rawValue) - "
        )
        record.writeJSONLine(into: &buffer)
        buffer.moveWriterIndex(to: buffer.writerIndex - 1)  // the newline
        return buffer
    }

    /// Sends one message per record. Throws on the first failure (the remaining records of the
    /// batch are lost and counted by the caller).
    package func send(_ records: some Collection<AuditRecord>) throws {
        var output = ByteBuffer()
        for record in records {
            var message = self.message(for: record)
            switch self.settings.transport {
            case .udp:
                if message.readableBytes > Self.maximumDatagramLength {
                    message.moveWriterIndex(to: message.readerIndex + Self.maximumDatagramLength)
                }
                try self.transmit(message)
            case .tcp:
                output.writeString("\(message.readableBytes) ")
                output.writeBuffer(&message)
            }
        }
        if self.settings.transport == .tcp, output.readableBytes > 0 {
            try self.transmit(output)
        }
    }

    /// Closes the socket.
    package func close() {
        if self.descriptor >= 0 { _ = posixClose(self.descriptor) }
        self.descriptor = -1
    }

    private func transmit(_ bytes: ByteBuffer) throws {
        if self.descriptor < 0 { try self.connect() }
        do {
            try bytes.withUnsafeReadableBytes { pointer in
                guard let base = pointer.baseAddress else { return }
                var offset = 0
                while offset < pointer.count {
                    let sent = sendNoSignal(self.descriptor, base + offset, pointer.count - offset)
                    if sent < 0 {
                        let code = errno
                        if code == EINTR { continue }
                        throw AuditLogError.posix(
                            "cannot send to syslog \(self.settings.host):\(self.settings.port)",
                            errno: code
                        )
                    }
                    offset += sent
                }
            }
        } catch {
            self.close()
            throw error
        }
    }

    private func connect() throws {
        let descriptor = socket(
            self.address.protocol.rawValue,
            socketType(datagram: self.settings.transport == .udp),
            0
        )
        guard descriptor >= 0 else {
            throw AuditLogError.posix("cannot open a syslog socket", errno: errno)
        }
        var timeout = timeval(tv_sec: Self.socketTimeoutSeconds, tv_usec: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = self.address.withSockAddr { pointer, length in
            connectSocket(descriptor, pointer, socklen_t(length))
        }
        guard result == 0 else {
            let code = errno
            _ = posixClose(descriptor)
            throw AuditLogError.posix(
                "cannot connect to syslog \(self.settings.host):\(self.settings.port)",
                errno: code
            )
        }
        self.descriptor = descriptor
    }

    /// The host name for HOSTNAME: printable ASCII without spaces, at most 255 bytes (RFC 5424
    /// 6.2.4), `-` when unknown.
    private static func hostname() -> String {
        var bytes = [CChar](repeating: 0, count: 256)
        guard gethostname(&bytes, bytes.count - 1) == 0 else { return "-" }
        let name = String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let printable = String(
            name.unicodeScalars.filter { $0.value > 32 && $0.value < 127 }.prefix(255).map(Character.init)
        )
        return printable.isEmpty ? "-" : printable
    }
}

// `send` and `connect` are also method names here; these call the C functions (`posixClose`:
// POSIXCalls.swift).
private func sendNoSignal(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Darwin)
    Darwin.send(descriptor, bytes, count, 0)
    #else
    send(descriptor, bytes, count, Int32(MSG_NOSIGNAL))
    #endif
}

private func socketType(datagram: Bool) -> Int32 {
    #if canImport(Darwin)
    datagram ? SOCK_DGRAM : SOCK_STREAM
    #else
    Int32(datagram ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    #endif
}

private func connectSocket(_ descriptor: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) -> Int32 {
    #if canImport(Darwin)
    Darwin.connect(descriptor, address, length)
    #elseif canImport(Glibc)
    Glibc.connect(descriptor, address, length)
    #elseif canImport(Musl)
    Musl.connect(descriptor, address, length)
    #endif
}

public import NIOCore

/// A PROXY protocol version 2 header (HAProxy, "The PROXY protocol", section 2.2): the binary
/// preamble an edge gateway writes at the start of every tunnelled connection so the core sees the
/// real client and knows which server endpoint the connection is for.
///
/// ```
/// 12 bytes  signature \r\n\r\n\0\r\nQUIT\n
///  1 byte   version (high nibble, 2) | command (low nibble: 0 LOCAL, 1 PROXY)
///  1 byte   address family (high nibble: 1 INET, 2 INET6) | transport (low nibble: 1 STREAM)
///  2 bytes  length of what follows, network byte order
///  n bytes  addresses (12 for TCP/IPv4, 36 for TCP/IPv6), then TLVs (type, 2-byte length, value)
/// ```
public struct ProxyHeader: Hashable, Sendable {
    public enum Command: UInt8, Hashable, Sendable {
        /// The connection was made by the proxy itself (health checks); addresses are ignored.
        case local = 0
        /// The connection was relayed on behalf of the client named in the addresses.
        case proxy = 1
    }

    /// The original connection's endpoints.
    public enum Addresses: Hashable, Sendable {
        /// `AF_UNSPEC`: no addresses (LOCAL connections, or an unknown family).
        case unspecified
        case tcp4(source: IPv4Address, sourcePort: UInt16, destination: IPv4Address, destinationPort: UInt16)
        /// IPv6 addresses as 16 bytes each, network order.
        case tcp6(source: [UInt8], sourcePort: UInt16, destination: [UInt8], destinationPort: UInt16)
    }

    public var command: Command
    public var addresses: Addresses
    /// Type-length-value records after the addresses, in wire order.
    public var tlvs: [ProxyTLV]

    public init(command: Command = .proxy, addresses: Addresses, tlvs: [ProxyTLV] = []) {
        self.command = command
        self.addresses = addresses
        self.tlvs = tlvs
    }

    /// The 12-byte signature: `\r\n\r\n\0\r\nQUIT\n`.
    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// Signature, version/command, family/transport and length.
    public static let fixedLength = 16
    /// Most bytes after the fixed part this decoder accepts. The spec allows 65535; we bound it so a
    /// peer cannot make the core buffer much before it has proven anything.
    public static let maximumPayloadLength = 1024

    /// The first TLV of a type, if any.
    public func tlv(_ type: UInt8) -> ProxyTLV? {
        self.tlvs.first { $0.type == type }
    }
}

/// One TLV of a PROXY v2 header.
public struct ProxyTLV: Hashable, Sendable {
    public var type: UInt8
    public var value: [UInt8]

    public init(type: UInt8, value: [UInt8]) {
        self.type = type
        self.value = value
    }
}

/// A malformed PROXY v2 header.
public struct ProxyProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case badSignature = "bad_signature"
            case unsupportedVersion = "unsupported_version"
            case unsupportedCommand = "unsupported_command"
            case unsupportedFamily = "unsupported_family"
            case tooLong = "too_long"
            case truncated = "truncated"
            case invalidTLV = "invalid_tlv"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The first 12 bytes are not the v2 signature (a v1 text header or no header at all).
        public static let badSignature = Code(.badSignature)
        /// The version nibble is not 2.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// The command nibble is neither LOCAL nor PROXY.
        public static let unsupportedCommand = Code(.unsupportedCommand)
        /// Not TCP over IPv4 or IPv6 (UDP and UNIX sockets are not relayed here).
        public static let unsupportedFamily = Code(.unsupportedFamily)
        /// The length field is above ``ProxyHeader/maximumPayloadLength``.
        public static let tooLong = Code(.tooLong)
        /// The length field is too short for the addresses of the declared family.
        public static let truncated = Code(.truncated)
        /// A TLV runs past the end of the header.
        public static let invalidTLV = Code(.invalidTLV)

        public var description: String { self.base.rawValue }
    }

    public var code: Code
    public var detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(self.code): \(self.detail)" }
}

extension ByteBuffer {
    /// Reads a PROXY v2 header: `nil` when more bytes are needed (nothing is consumed then);
    /// throws when the bytes can never become a valid header. A wrong signature is reported as
    /// soon as the bytes that differ have arrived, so a plain DCE/RPC client is refused at once.
    public mutating func readProxyHeader() throws -> ProxyHeader? {
        let start = self.readerIndex
        // Check the signature byte by byte: a peer that sends something else is wrong already.
        let available = Swift.min(self.readableBytes, ProxyHeader.signature.count)
        for offset in 0..<available {
            guard let byte = self.getInteger(at: start + offset, as: UInt8.self) else { return nil }
            if byte != ProxyHeader.signature[offset] {
                throw ProxyProtocolError(.badSignature, "byte \(offset) is 0x\(String(byte, radix: 16))")
            }
        }
        guard self.readableBytes >= ProxyHeader.fixedLength,
            let (versionCommand, familyTransport, length) = self.getMultipleIntegers(
                at: start + 12,
                as: (UInt8, UInt8, UInt16).self
            )
        else { return nil }
        guard versionCommand >> 4 == 2 else {
            throw ProxyProtocolError(.unsupportedVersion, "version \(versionCommand >> 4)")
        }
        guard let command = ProxyHeader.Command(rawValue: versionCommand & 0x0F) else {
            throw ProxyProtocolError(.unsupportedCommand, "command \(versionCommand & 0x0F)")
        }
        guard Int(length) <= ProxyHeader.maximumPayloadLength else {
            throw ProxyProtocolError(.tooLong, "length \(length) > \(ProxyHeader.maximumPayloadLength)")
        }
        let addressLength: Int
        switch familyTransport {
        case 0x00: addressLength = 0
        case 0x11: addressLength = 12
        case 0x21: addressLength = 36
        default:
            throw ProxyProtocolError(.unsupportedFamily, "family/transport 0x\(String(familyTransport, radix: 16))")
        }
        guard Int(length) >= addressLength else {
            throw ProxyProtocolError(.truncated, "length \(length) < \(addressLength) bytes of addresses")
        }
        guard self.readableBytes >= ProxyHeader.fixedLength + Int(length) else { return nil }

        // Lengths were checked above, so these reads succeed; `nil` keeps the contract anyway.
        guard var payload = self.getSlice(at: start + ProxyHeader.fixedLength, length: Int(length)) else { return nil }
        let addresses: ProxyHeader.Addresses
        switch familyTransport {
        case 0x11:
            guard
                let (source, destination, sourcePort, destinationPort) = payload.readMultipleIntegers(
                    as: (UInt32, UInt32, UInt16, UInt16).self
                )
            else { return nil }
            addresses = .tcp4(
                source: IPv4Address(value: source),
                sourcePort: sourcePort,
                destination: IPv4Address(value: destination),
                destinationPort: destinationPort
            )
        case 0x21:
            guard let source = payload.readBytes(length: 16), let destination = payload.readBytes(length: 16),
                let (sourcePort, destinationPort) = payload.readMultipleIntegers(as: (UInt16, UInt16).self)
            else { return nil }
            addresses = .tcp6(
                source: source,
                sourcePort: sourcePort,
                destination: destination,
                destinationPort: destinationPort
            )
        default:
            addresses = .unspecified
        }
        var tlvs: [ProxyTLV] = []
        while payload.readableBytes > 0 {
            guard let (type, valueLength) = payload.readMultipleIntegers(as: (UInt8, UInt16).self),
                let value = payload.readBytes(length: Int(valueLength))
            else {
                throw ProxyProtocolError(.invalidTLV, "TLV \(tlvs.count) runs past the header")
            }
            tlvs.append(ProxyTLV(type: type, value: value))
        }
        self.moveReaderIndex(forwardBy: ProxyHeader.fixedLength + Int(length))
        return ProxyHeader(command: command, addresses: addresses, tlvs: tlvs)
    }

    /// Writes a PROXY v2 header, back-patching the length. Returns the bytes written.
    @discardableResult
    public mutating func writeProxyHeader(_ header: ProxyHeader) -> Int {
        let start = self.writerIndex
        self.writeBytes(ProxyHeader.signature)
        let family: UInt8
        switch header.addresses {
        case .unspecified: family = 0x00
        case .tcp4: family = 0x11
        case .tcp6: family = 0x21
        }
        self.writeMultipleIntegers(0x20 | header.command.rawValue, family, UInt16(0))
        let payloadStart = self.writerIndex
        switch header.addresses {
        case .unspecified:
            break
        case .tcp4(let source, let sourcePort, let destination, let destinationPort):
            self.writeMultipleIntegers(source.value, destination.value, sourcePort, destinationPort)
        case .tcp6(let source, let sourcePort, let destination, let destinationPort):
            // Exactly 16 bytes each: shorter values are zero-padded, longer ones truncated.
            self.writeBytes(Self.sixteen(source))
            self.writeBytes(Self.sixteen(destination))
            self.writeMultipleIntegers(sourcePort, destinationPort)
        }
        for tlv in header.tlvs {
            self.writeMultipleIntegers(tlv.type, UInt16(truncatingIfNeeded: tlv.value.count))
            self.writeBytes(tlv.value)
        }
        self.setInteger(UInt16(truncatingIfNeeded: self.writerIndex - payloadStart), at: payloadStart - 2)
        return self.writerIndex - start
    }

    private static func sixteen(_ bytes: [UInt8]) -> [UInt8] {
        Array((bytes + [UInt8](repeating: 0, count: 16)).prefix(16))
    }
}

/// Decodes one PROXY v2 header at the start of a stream (for `NIOSingleStepByteToMessageProcessor`
/// or `ByteToMessageDecoderVerifier`).
public struct ProxyHeaderDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = ProxyHeader

    public init() {}

    public mutating func decode(buffer: inout ByteBuffer) throws -> ProxyHeader? {
        try buffer.readProxyHeader()
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ProxyHeader? {
        try self.decode(buffer: &buffer)
    }
}

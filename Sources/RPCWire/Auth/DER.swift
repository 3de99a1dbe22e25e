import NIOCore

/// One DER element (X.690 8.1): its identifier octet and its contents.
///
/// Only what SPNEGO and Kerberos tokens use is supported: single-octet identifiers (tag numbers
/// up to 30) and definite lengths of up to four octets. The reader descends only the fixed paths
/// the token parsers ask for, never recursively, so nesting depth needs no limit of its own;
/// every length is checked against the bytes that enclose it.
struct DERElement {
    var identifier: UInt8
    var contents: ByteBuffer

    /// `SEQUENCE` (universal, constructed).
    static let sequence: UInt8 = 0x30
    static let octetString: UInt8 = 0x04
    static let objectIdentifier: UInt8 = 0x06
    static let integer: UInt8 = 0x02
    /// `GeneralString`, the type of `KerberosString` (RFC 4120 5.2.1).
    static let generalString: UInt8 = 0x1B

    /// `[APPLICATION number]`, constructed.
    static func application(_ number: UInt8) -> UInt8 { 0x60 | number }
    /// `[number]` (context-specific), constructed.
    static func context(_ number: UInt8) -> UInt8 { 0xA0 | number }
}

extension ByteBuffer {
    /// Reads one DER element. `code` says which token is being read, for the error.
    ///
    /// - Throws: ``RPCWireError`` with `code` when the identifier uses the multi-octet form, the
    ///   length is indefinite (forbidden in DER, X.690 10.1) or longer than four octets, or the
    ///   contents run past the readable bytes.
    mutating func readDERElement(_ code: RPCWireError.Code, _ what: @autoclosure () -> String) throws -> DERElement {
        guard let identifier = self.readInteger(as: UInt8.self) else {
            throw RPCWireError(code, "\(what()): no bytes left for an element")
        }
        guard identifier & 0x1F != 0x1F else {
            throw RPCWireError(code, "\(what()): multi-octet tag 0x\(String(identifier, radix: 16))")
        }
        guard let first = self.readInteger(as: UInt8.self) else {
            throw RPCWireError(code, "\(what()): element without a length")
        }
        var length = Int(first)
        if first & 0x80 != 0 {
            let octets = Int(first & 0x7F)
            guard octets >= 1, octets <= 4 else {
                throw RPCWireError(code, "\(what()): length with \(octets) octets (indefinite or too long)")
            }
            length = 0
            for _ in 0..<octets {
                guard let byte = self.readInteger(as: UInt8.self) else {
                    throw RPCWireError(code, "\(what()): truncated length")
                }
                length = length << 8 | Int(byte)
            }
        }
        guard let contents = self.readSlice(length: length) else {
            throw RPCWireError(code, "\(what()): element of \(length) bytes, \(self.readableBytes) available")
        }
        return DERElement(identifier: identifier, contents: contents)
    }

    /// Reads one DER element and requires its identifier to be `identifier`.
    mutating func readDERElement(
        _ identifier: UInt8,
        _ code: RPCWireError.Code,
        _ what: @autoclosure () -> String
    ) throws -> ByteBuffer {
        let element = try self.readDERElement(code, what())
        guard element.identifier == identifier else {
            throw RPCWireError(
                code,
                "\(what()): identifier 0x\(String(element.identifier, radix: 16)), expected 0x\(String(identifier, radix: 16))"
            )
        }
        return element.contents
    }

    /// The contents of the field tagged `[number]` among the elements of a `SEQUENCE`'s
    /// contents (`self`), or `nil` when the sequence has no such field (it is OPTIONAL).
    ///
    /// Every element before it must be well-formed. The loop ends because each element consumes
    /// at least two bytes.
    func derField(_ number: UInt8, _ code: RPCWireError.Code, _ what: @autoclosure () -> String) throws -> ByteBuffer? {
        var rest = self
        while rest.readableBytes > 0 {
            let element = try rest.readDERElement(code, what())
            if element.identifier == DERElement.context(number) { return element.contents }
        }
        return nil
    }
}

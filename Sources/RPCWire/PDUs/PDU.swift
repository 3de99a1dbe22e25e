public import NIOCore

/// A typed connection-oriented PDU: header, body and authentication verifier.
///
/// `header.fragmentLength` and `header.authLength` are what was read; ``ByteBuffer/writePDU(_:)``
/// recomputes both, so a built PDU needs neither.
public struct PDU: Hashable, Sendable {
    public var header: PDUHeader
    public var body: Body
    public var authVerifier: AuthVerifier?

    public enum Body: Hashable, Sendable {
        case request(RequestPDU)
        case response(ResponsePDU)
        case fault(FaultPDU)
        case bind(BindPDU)
        case bindAck(BindAckPDU)
        case bindNak(BindNakPDU)
        case alterContext(BindPDU)
        case alterContextResponse(BindAckPDU)
        case auth3(Auth3PDU)
        /// `shutdown`, `co_cancel` and `orphaned` carry no body fields; any bytes are kept here.
        case shutdown(ByteBuffer)
        case coCancel(ByteBuffer)
        case orphaned(ByteBuffer)
    }

    public init(header: PDUHeader, body: Body, authVerifier: AuthVerifier? = nil) {
        self.header = header
        self.body = body
        self.authVerifier = authVerifier
    }

    /// The packet type the body implies.
    public var packetType: PacketType {
        switch self.body {
        case .request: return .request
        case .response: return .response
        case .fault: return .fault
        case .bind: return .bind
        case .bindAck: return .bindAck
        case .bindNak: return .bindNak
        case .alterContext: return .alterContext
        case .alterContextResponse: return .alterContextResponse
        case .auth3: return .auth3
        case .shutdown: return .shutdown
        case .coCancel: return .coCancel
        case .orphaned: return .orphaned
        }
    }
}

// MARK: - Parsing

extension RawPDU {
    /// Splits the PDU into its body bytes and authentication verifier (C706 13.2.6.1).
    ///
    /// The `sec_trailer` sits at `frag_length - auth_length - 8`; `auth_pad_length` bytes before it
    /// are padding, not body.
    public func splitAuthVerifier() throws -> (body: ByteBuffer, verifier: AuthVerifier?) {
        let bytes = self.bytes
        let start = bytes.readerIndex
        let total = bytes.readableBytes
        let headerLength = WireLimits.commonHeaderLength
        let authLength = Int(self.header.authLength)
        guard authLength > 0 else {
            return (bytes.getSlice(at: start + headerLength, length: total - headerLength) ?? ByteBuffer(), nil)
        }
        guard let trailer = self.securityTrailer,
            let value = bytes.getSlice(
                at: start + trailer.offset + WireLimits.securityTrailerLength,
                length: authLength
            )
        else {
            throw RPCWireError(.authLengthTooLong, "auth_length \(authLength) in frag_length \(total)")
        }
        let bodyLength = trailer.offset - headerLength - Int(trailer.padLength)
        guard bodyLength >= 0,
            let body = bytes.getSlice(at: start + headerLength, length: bodyLength),
            let padding = bytes.getSlice(at: start + headerLength + bodyLength, length: Int(trailer.padLength))
        else {
            throw RPCWireError(
                .authPaddingTooLong,
                "auth_pad_length \(trailer.padLength) > body \(trailer.offset - headerLength)"
            )
        }
        let verifier = AuthVerifier(
            authType: trailer.authType,
            authLevel: trailer.authLevel,
            padding: padding,
            reserved: trailer.reserved,
            contextID: trailer.contextID,
            value: value
        )
        return (body, verifier)
    }

    /// Decodes the PDU into typed values. Throws ``RPCWireError`` on any inconsistency.
    public func parse(limits: WireLimits = WireLimits()) throws -> PDU {
        var (body, verifier) = try self.splitAuthVerifier()
        let endianness = self.header.endianness
        let parsed: PDU.Body
        switch self.header.packetType {
        case .request:
            guard
                let (hint, context, opnum) = body.readMultipleIntegers(
                    endianness: endianness,
                    as: (UInt32, UInt16, UInt16).self
                )
            else {
                throw RPCWireError.truncated("request header", need: RequestPDU.fixedLength, have: body.readableBytes)
            }
            var object: DCEUUID? = nil
            if self.header.flags.contains(.objectUUID) {
                guard let uuid = body.readDCEUUID(endianness: endianness) else {
                    throw RPCWireError.truncated(
                        "request object UUID",
                        need: DCEUUID.wireSize,
                        have: body.readableBytes
                    )
                }
                object = uuid
            }
            parsed = .request(
                RequestPDU(allocationHint: hint, contextID: context, opnum: opnum, objectUUID: object, stub: body)
            )
        case .response:
            guard
                let (hint, context, cancel, reserved) = body.readMultipleIntegers(
                    endianness: endianness,
                    as: (UInt32, UInt16, UInt8, UInt8).self
                )
            else {
                throw RPCWireError.truncated("response header", need: ResponsePDU.fixedLength, have: body.readableBytes)
            }
            parsed = .response(
                ResponsePDU(
                    allocationHint: hint,
                    contextID: context,
                    cancelCount: cancel,
                    reserved: reserved,
                    stub: body
                )
            )
        case .fault:
            guard
                let (hint, context, cancel, flags, status) = body.readMultipleIntegers(
                    endianness: endianness,
                    as: (UInt32, UInt16, UInt8, UInt8, UInt32).self
                )
            else { throw RPCWireError.truncated("fault header", need: FaultPDU.fixedLength, have: body.readableBytes) }
            parsed = .fault(
                FaultPDU(
                    allocationHint: hint,
                    contextID: context,
                    cancelCount: cancel,
                    flags: flags,
                    status: RPCStatus(rawValue: status),
                    trailingBytes: body
                )
            )
        case .bind:
            parsed = .bind(try body.readBindPDUBody(endianness: endianness, limits: limits))
        case .alterContext:
            parsed = .alterContext(try body.readBindPDUBody(endianness: endianness, limits: limits))
        case .bindAck:
            parsed = .bindAck(try body.readBindAckPDUBody(endianness: endianness, limits: limits))
        case .alterContextResponse:
            parsed = .alterContextResponse(try body.readBindAckPDUBody(endianness: endianness, limits: limits))
        case .bindNak:
            guard let (reason, count) = body.readMultipleIntegers(endianness: endianness, as: (UInt16, UInt8).self)
            else {
                throw RPCWireError.truncated("bind_nak header", need: 3, have: body.readableBytes)
            }
            guard body.readableBytes >= 2 * Int(count) else {
                throw RPCWireError.truncated("bind_nak versions", need: 2 * Int(count), have: body.readableBytes)
            }
            var versions: [RPCProtocolVersion] = []
            versions.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                guard let (major, minor) = body.readMultipleIntegers(as: (UInt8, UInt8).self) else { break }
                versions.append(RPCProtocolVersion(major: major, minor: minor))
            }
            parsed = .bindNak(
                BindNakPDU(
                    rejectReason: BindNakReason(rawValue: reason),
                    supportedVersions: versions,
                    trailingBytes: body
                )
            )
        case .auth3:
            guard let padding = body.readInteger(endianness: endianness, as: UInt32.self) else {
                throw RPCWireError.truncated("auth3 padding", need: 4, have: body.readableBytes)
            }
            parsed = .auth3(Auth3PDU(padding: padding, trailingBytes: body))
        case .shutdown:
            parsed = .shutdown(body)
        case .coCancel:
            parsed = .coCancel(body)
        case .orphaned:
            parsed = .orphaned(body)
        default:
            throw RPCWireError(.invalidPacketType, "PTYPE \(self.header.packetType.rawValue)")
        }
        return PDU(header: self.header, body: parsed, authVerifier: verifier)
    }
}

// MARK: - Serialization

extension ByteBuffer {
    /// Writes `pdu`, computing `frag_length`, `auth_length` and `auth_pad_length`.
    ///
    /// Throws ``RPCWireError/Code/fragmentTooLong`` if the result does not fit the 16-bit
    /// `frag_length`; nothing is left written in that case.
    @discardableResult
    public mutating func writePDU(_ pdu: PDU) throws -> Int {
        let start = self.writerIndex
        var header = pdu.header
        header.packetType = pdu.packetType
        let endianness = header.endianness
        self.writePDUHeader(header)
        switch pdu.body {
        case .request(let request):
            self.writeMultipleIntegers(request.allocationHint, request.contextID, request.opnum, endianness: endianness)
            if let object = request.objectUUID {
                self.writeDCEUUID(object, endianness: endianness)
            }
            var stub = request.stub
            self.writeBuffer(&stub)
        case .response(let response):
            self.writeMultipleIntegers(
                response.allocationHint,
                response.contextID,
                response.cancelCount,
                response.reserved,
                endianness: endianness
            )
            var stub = response.stub
            self.writeBuffer(&stub)
        case .fault(let fault):
            self.writeMultipleIntegers(
                fault.allocationHint,
                fault.contextID,
                fault.cancelCount,
                fault.flags,
                fault.status.rawValue,
                endianness: endianness
            )
            var trailing = fault.trailingBytes
            self.writeBuffer(&trailing)
        case .bind(let bind), .alterContext(let bind):
            self.writeBindPDUBody(bind, endianness: endianness)
        case .bindAck(let ack), .alterContextResponse(let ack):
            self.writeBindAckPDUBody(ack, endianness: endianness)
        case .bindNak(let nak):
            self.writeMultipleIntegers(
                nak.rejectReason.rawValue,
                UInt8(truncatingIfNeeded: nak.supportedVersions.count),
                endianness: endianness
            )
            for version in nak.supportedVersions {
                self.writeMultipleIntegers(version.major, version.minor)
            }
            var trailing = nak.trailingBytes
            self.writeBuffer(&trailing)
        case .auth3(let auth3):
            self.writeInteger(auth3.padding, endianness: endianness)
            var trailing = auth3.trailingBytes
            self.writeBuffer(&trailing)
        case .shutdown(let bytes), .coCancel(let bytes), .orphaned(let bytes):
            var bytes = bytes
            self.writeBuffer(&bytes)
        }
        var authLength = 0
        if let verifier = pdu.authVerifier {
            var padding = verifier.padding
            let padLength = padding.readableBytes
            self.writeBuffer(&padding)
            self.writeMultipleIntegers(
                verifier.authType.rawValue,
                verifier.authLevel.rawValue,
                UInt8(truncatingIfNeeded: padLength),
                verifier.reserved
            )
            self.writeInteger(verifier.contextID, endianness: endianness)
            var value = verifier.value
            authLength = value.readableBytes
            self.writeBuffer(&value)
            guard padLength <= Int(UInt8.max) else {
                self.moveWriterIndex(to: start)
                throw RPCWireError(.authPaddingTooLong, "auth padding \(padLength) > 255")
            }
        }
        let total = self.writerIndex - start
        guard total <= Int(UInt16.max), authLength <= Int(UInt16.max) else {
            self.moveWriterIndex(to: start)
            throw RPCWireError(.fragmentTooLong, "serialized PDU of \(total) bytes")
        }
        self.setPDULengths(
            fragmentLength: UInt16(total),
            authLength: UInt16(authLength),
            at: start,
            endianness: endianness
        )
        return total
    }
}

extension PDU {
    /// The PDU serialized into a new buffer.
    public func serialized(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        try buffer.writePDU(self)
        return buffer
    }
}

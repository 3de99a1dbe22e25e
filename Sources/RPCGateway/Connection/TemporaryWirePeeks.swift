import NIOCore
import RPCWire

// TEMPORARY: moves to RPCWire (branch wire-rooms) and is deleted here at the merge.

struct RequestHeaderFields: Hashable, Sendable {
    var allocationHint: UInt32
    var contextID: UInt16
    var opnum: UInt16
}

struct SecurityTrailerFields: Hashable, Sendable {
    var authType: AuthType
    var authLevel: AuthLevel
}

extension RawPDU {
    /// The fixed request header: alloc_hint u32, p_cont_id u16, opnum u16 (C706 12.6.4.9).
    var requestHeader: RequestHeaderFields? {
        let start = self.bytes.readerIndex + WireLimits.commonHeaderLength
        guard
            let (hint, contextID, opnum) = self.bytes.getMultipleIntegers(
                at: start,
                endianness: self.header.endianness,
                as: (UInt32, UInt16, UInt16).self
            )
        else { return nil }
        return RequestHeaderFields(allocationHint: hint, contextID: contextID, opnum: opnum)
    }

    /// The auth type and level in a PDU's own `sec_trailer` (C706 13.2.6.1), if it carries one.
    var securityTrailer: SecurityTrailerFields? {
        let authLength = Int(self.header.authLength)
        guard authLength > 0 else { return nil }
        let offset = self.bytes.readerIndex + self.bytes.readableBytes - authLength - WireLimits.securityTrailerLength
        guard offset >= self.bytes.readerIndex + WireLimits.commonHeaderLength,
            let (type, level) = self.bytes.getMultipleIntegers(at: offset, as: (UInt8, UInt8).self)
        else { return nil }
        return SecurityTrailerFields(authType: AuthType(rawValue: type), authLevel: AuthLevel(rawValue: level))
    }
}

extension EPMMapResponse {
    /// An `ept_map` response PDU with no towers and status `ept_s_not_registered`.
    static func notRegisteredPDU(
        callID: UInt32,
        contextID: UInt16,
        maxTowers: UInt32,
        syntax: NDRSyntax,
        dataRepresentation: DataRepresentation
    ) -> ByteBuffer? {
        var stub = ByteBuffer()
        stub.writeEPMMapResponse(.notRegistered(maxTowers: maxTowers), syntax: syntax, endianness: dataRepresentation.endianness)
        let response = PDU(
            header: PDUHeader(packetType: .response, dataRepresentation: dataRepresentation, callID: callID),
            body: .response(ResponsePDU(allocationHint: UInt32(stub.readableBytes), contextID: contextID, stub: stub))
        )
        return try? response.serialized()
    }
}
